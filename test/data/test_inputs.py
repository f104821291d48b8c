"""Input indexes (zlora/data/inputs.py), fast table reading and column storage."""
import os
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from tiny_datadir import make_datadir, write_lines

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_testlib import make_corpus  # noqa: E402

from zlora.data.audio import load_utterance  # noqa: E402
from zlora.data.columns import Ragged, StringArray  # noqa: E402
from zlora.data.inputs import InputError, audio_index, feats_index  # noqa: E402
from zlora.data.kaldi import DataDir, DataDirError, read_kv, read_table  # noqa: E402


@pytest.mark.parametrize("text", [
    "a 1\nb  2\nc\t3 x\n",                 # runs of spaces and tabs: the general path
    "a one two\nb three\n",                # the fast path
    "a 1 \r\nb 2\r\n",                     # CRLF and a trailing space
    "",
])
def test_read_table_equals_read_kv(tmp_path, text):
    path = tmp_path / "t"
    path.write_text(text, encoding="utf-8")
    keys, values = read_table(path, (2, None))
    assert dict(zip(keys, values)) == read_kv(path, (2, None)) and keys == list(read_kv(path, (2, None)))


@pytest.mark.parametrize("text", ["a 1\nb 2\n", "a 1\nb 2", "a 1\r\nb\t2\n", "a  1\nb 2\n", "é 1\nü 2\n"])
def test_read_table_of_pairs_equals_read_kv(tmp_path, text):
    path = tmp_path / "t"
    path.write_text(text, encoding="utf-8")
    keys, values = read_table(path, (2, 2))
    assert list(zip(keys, values)) == list(read_kv(path, 2).items())


@pytest.mark.parametrize("text,message", [
    ("b 1\na 2\n", r"t:2: file is not sorted \(LC_ALL=C\): id 'a' comes after 'b'"),
    ("a 1\na 2\n", r"t:2: duplicate id 'a'"),
    ("a 1\nb\n", r"t:2: malformed line \(id 'b'\): expected 2 fields, got 1"),
    ("a 1 2\n", r"t:1: malformed line \(id 'a'\): expected 2 fields, got 3"),
])
def test_read_table_errors_name_the_line_as_read_kv_does(tmp_path, text, message):
    path = tmp_path / "t"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataDirError, match=message):
        read_table(path, (2, 2))
    (tmp_path / "u").write_bytes(b"a caf\xe9\n")
    with pytest.raises(DataDirError, match=r"u:1: not valid UTF-8"):
        read_table(tmp_path / "u", (2, None))


def test_columns_round_trip():
    words = ["", "a", "café", "x y", "line\nbreak", "末"]
    col = StringArray.from_list(words)
    assert col.tolist() == words and col.take(np.array([5, 0, 2])).tolist() == ["末", "", "café"]
    assert StringArray.from_list(words[:4]).tolist() == words[:4]       # the newline-free fast path
    rows = Ragged.from_lists([[1, 2], [], [3, 4, 5]])
    assert [r.tolist() for r in rows.take(np.array([2, 1, 0]))] == [[3, 4, 5], [], [1, 2]]
    assert rows.lengths().tolist() == [2, 0, 3]


def test_feats_index_reads_what_kaldiio_reads_also_after_a_fork(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=4)
    utts = DataDir(data).utts
    index = feats_index(feats, utts)
    ref = kaldiio.load_scp(str(feats))
    assert index.length.tolist() == [ref[u].shape[0] for u in utts]
    for i, u in enumerate(utts):
        assert np.array_equal(index.read(i), ref[u])
    assert len(index.handles._fds) == 1                     # one ark, opened once
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                            # a forked worker opens its own descriptor
        ok = all(np.array_equal(index.read(i), ref[u]) for i, u in enumerate(utts))
        os.write(w, b"1" if ok and index.handles._pid == os.getpid() else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"


def test_stale_utt2num_frames_is_an_error_naming_the_utterance(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=2)
    u2n = feats.parent / "utt2num_frames"
    lines = u2n.read_text().splitlines()
    utt, n = lines[1].split()
    lines[1] = f"{utt} {int(n) + 1}"
    u2n.write_text("\n".join(lines) + "\n")
    index = feats_index(feats, DataDir(data).utts)
    with pytest.raises(InputError, match=f"utt2num_frames: utterance '{utt}' has {int(n) + 1} frames there, "
                                         f"but its matrix in .* has {n}: the file is stale"):
        index.read(1)


def test_audio_from_wav_scp_segments_and_lengths(tmp_path):
    data = make_datadir(tmp_path / "s", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.5,
                        segments=True, utt2dur=True)
    dd = DataDir(data)
    durs = np.array([dd.utt2dur[u] for u in dd.utts])
    index = audio_index(data, None, dd.utts, durs)
    assert index.length.tolist() == [8000] * 3
    for i, u in enumerate(dd.utts):
        assert np.array_equal(index.read(i), load_utterance(dd, u))
    # no lengths at all: an error that says how to make them, not a decode of every file
    plain = make_datadir(tmp_path / "p", langs=("en",), spks_per_lang=1, utts_per_spk=2, seconds=0.3)
    with pytest.raises(DataDirError, match="neither exists; run python -m zlora.bin.get_utt2dur"):
        audio_index(plain, None, DataDir(plain).utts, None)
    # utt2num_samples wins over utt2dur; a stale one fails when read, naming the utterance
    utts = DataDir(plain).utts
    write_lines(plain / "utt2num_samples", [f"{utts[0]} 4800", f"{utts[1]} 9000"])
    index = audio_index(plain, None, utts, None)
    assert len(index.read(0)) == 4800
    with pytest.raises(InputError, match=f"utterance '{utts[1]}': the audio has 4800 samples but its declared "
                                         r"length is 9000 .*stale"):
        index.read(1)


def test_missing_audio_entry_names_the_table_and_the_utterance(tmp_path):
    data = make_datadir(tmp_path / "p", langs=("en",), spks_per_lang=1, utts_per_spk=2, seconds=0.3,
                        utt2dur=True)
    lines = (data / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text(lines[0] + "\n")
    utts = DataDir(data).utts
    with pytest.raises(DataDirError, match=rf"wav.scp: no audio for utterance '{utts[1]}' \(1 of 2 in .*text\)"):
        audio_index(data, None, utts, np.array([0.3, 0.3]))
