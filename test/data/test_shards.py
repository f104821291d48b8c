"""FLAC shards (zlora/data/shards.py) and the dump_audio stage (zlora/bin/dump_audio.py)."""
import json
import os

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from tiny_datadir import make_datadir, tone

from zlora.bin import dump_audio
from zlora.data.audio import load_utterance
from zlora.data.inputs import audio_index
from zlora.data.kaldi import DataDir, read_kv
from zlora.data.shards import ShardEntry, ShardError, validate_shard, write_shard
from zlora.utils.cli import UserError


def dump(data, out, *args):
    return dump_audio.main(["--data", str(data), "--out", str(out), *map(str, args)])


@pytest.fixture
def corpus(tmp_path):
    """en/fr/de, 4 utterances each of 0.4 s: 16-bit WAV, and one of 22.05 kHz (resampled)."""
    data = make_datadir(tmp_path / "d", langs=("de", "en", "fr"), spks_per_lang=2, utts_per_spk=2,
                        seconds=0.4, utt2dur=True)
    sf.write(data / "wav" / "frspk1-001.wav", tone(0.4, 22050, 300, 9), 22050)
    return data


def test_shards_are_per_language_validated_and_lossless(corpus, tmp_path):
    out = tmp_path / "dump"
    assert dump(corpus, out, "--shard_hours", 0.8 / 3600, "--nj", 2) == 0    # 2 utterances per shard
    dd = DataDir(corpus)
    scp = read_kv(out / "audio.scp")
    assert sorted(scp) == dd.utts
    shards = {}
    for utt, value in scp.items():
        shards.setdefault(value.rsplit(":", 1)[0], set()).add(dd.utt2lang[utt])
    assert len(shards) == 6 and all(len(langs) == 1 for langs in shards.values())   # one language each
    for index in (out / "shards").glob("*.json"):                  # each written, then validated
        entries = [ShardEntry(**e) for e in json.loads(index.read_text())["entries"]]
        validate_shard(index.with_suffix(".ark"), entries)
    samples = read_kv(out / "utt2num_samples")
    for utt in dd.utts:
        ref = load_utterance(dd, utt)
        rate, x = kaldiio.load_mat(scp[utt])                       # ESPnet / kaldiio read them too
        assert rate == 16000 and int(samples[utt]) == len(ref) == len(x)
        err = np.abs(x.astype(np.float32) - ref).max()
        if utt == "frspk1-001":
            assert err <= 0.5 / 32768 + 1e-9                        # resampled: quantised to 16 bits
        else:
            assert err == 0.0                                       # 16-bit sources: exact
    index = audio_index(corpus, out / "audio.scp", dd.utts)       # what training reads
    assert (index.file_id >= 0).all()
    assert all(np.array_equal(index.read(i), load_utterance(dd, u)) for i, u in enumerate(dd.utts)
               if u != "frspk1-001")
    assert (out / ".done").is_file() and "source" in (out / ".done").read_text()


def test_parallel_equals_serial_and_rerun_is_a_no_op(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert dump(corpus, a, "--shard_hours", 0.8 / 3600) == 0
    assert dump(corpus, b, "--shard_hours", 0.8 / 3600, "--nj", 2) == 0
    names = sorted(p.name for p in (a / "shards").glob("*.ark"))
    assert names == sorted(p.name for p in (b / "shards").glob("*.ark"))
    assert all((a / "shards" / n).read_bytes() == (b / "shards" / n).read_bytes() for n in names)
    stamps = {p: p.stat().st_mtime_ns for p in (a / "shards").iterdir()}
    assert dump(corpus, a, "--shard_hours", 0.8 / 3600) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (a / "shards").iterdir()}


def test_interrupted_dump_redoes_only_unfinished_shards_and_changed_audio_redoes_all(corpus, tmp_path):
    out = tmp_path / "dump"
    assert dump(corpus, out, "--shard_hours", 0.8 / 3600) == 0
    jsons = sorted((out / "shards").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.ark")}
    (out / ".done").unlink()                    # as if killed before the end ...
    jsons[0].unlink()                           # ... with one shard not finished
    (out / "shards" / "x.ark.tmp").write_bytes(b"partial")
    assert dump(corpus, out, "--shard_hours", 0.8 / 3600) == 0
    redone = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert redone == [jsons[0].with_suffix(".ark")]
    assert not (out / "shards" / "x.ark.tmp").exists()
    sf.write(corpus / "wav" / "despk0-000.wav", tone(0.4, 16000, 500, 3), 16000)   # re-synthesised audio
    os.utime(corpus / "wav" / "despk0-000.wav", ns=(1, 1))
    assert dump(corpus, out, "--shard_hours", 0.8 / 3600) == 0
    rate, x = kaldiio.load_mat(read_kv(out / "audio.scp")["despk0-000"])
    assert np.array_equal(x.astype(np.float32), load_utterance(DataDir(corpus), "despk0-000"))
    # other settings, another plan: old shards are removed
    assert dump(corpus, out, "--shard_hours", 1.0) == 0
    assert len(list((out / "shards").glob("*.ark"))) == 3


def test_a_damaged_shard_fails_validation_naming_the_utterance(tmp_path):
    path = tmp_path / "s.ark"
    audio = {"u1": tone(0.3, seed=1), "u2": tone(0.2, seed=2)}
    entries = write_shard(path, list(audio), audio.__getitem__)
    validate_shard(path, entries)
    raw = bytearray(path.read_bytes())
    raw[entries[1].offset + entries[1].nbytes // 2] ^= 0xFF      # flip bits inside u2's FLAC frames
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"s.ark: utterance 'u2'"):
        validate_shard(path, entries)
    path.write_bytes(bytes(raw[:-10]))
    with pytest.raises(ShardError, match=r"utterance 'u2'"):
        validate_shard(path, entries)


def test_bad_audio_stops_the_dump_naming_the_utterance_and_leaves_nothing_complete(corpus, tmp_path):
    (corpus / "wav" / "enspk0-001.wav").write_bytes(b"RIFF....garbage")
    out = tmp_path / "dump"
    with pytest.raises(UserError, match="utterance 'enspk0-001'"):
        dump(corpus, out, "--shard_hours", 1.0)
    assert not (out / ".done").exists() and not (out / "audio.scp").exists()
    assert not list((out / "shards").glob("en.*.ark"))    # the shard holding it was never renamed
