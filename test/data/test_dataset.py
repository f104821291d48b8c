"""Training dataset: Kaldi dir + feature dump -> utterances, packs, batches (zlora/data/dataset.py)."""
import math
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_testlib import make_corpus  # noqa: E402

from zlora.data.dataset import (PackDataset, collate_packs, load_utterances, pack_corpus,  # noqa: E402
                                sequential_packs)
from zlora.utils.cli import UserError  # noqa: E402


class StubTok:
    def encode(self, text):
        return [len(w) for w in text.split()]


class StubModel:
    """speech tokens = ceil(frames / 8), prompt = 3 tokens, a token per word."""
    tokenizer = StubTok()

    def speech_token_count(self, n):
        return math.ceil(n / 8)

    def prompt_ids(self, lang):
        return [1, 2, 3]


def load(data, feats, langs=("en", "fr"), max_tokens=1000, max_duration=None):
    return load_utterances(data, feats, StubModel(), list(langs), max_tokens, max_duration, 100.0)


def test_lengths_follow_the_packing_formula(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=3)
    corpus = load(data, feats)
    mats = kaldiio.load_scp(str(feats))
    text = dict(line.split(" ", 1) for line in (data / "text").read_text().splitlines())
    assert len(corpus.utterances) == 6
    for u in corpus.utterances:
        frames = mats[u.utt].shape[0]
        assert u.n_frames == frames and u.seconds == pytest.approx(frames / 100)
        assert u.n_tokens == math.ceil(frames / 8) + 3 + len(text[u.utt].split()) + 1   # + eos
        assert u.lang == (0 if u.utt.startswith("en") else 1)


def test_unusable_utterances_are_skipped_and_counted(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=4, frames=(50, 150))
    # an empty transcript: rewrite one text line to nothing but spaces
    lines = (data / "text").read_text().splitlines()
    lines[0] = lines[0].split(" ")[0] + " "
    (data / "text").write_text("\n".join(lines) + "\n")
    corpus = load(data, feats, max_duration=1.0)
    n_long = sum(1 for u, n in _frames(feats).items() if n > 100)
    assert corpus.skipped["longer than data.max_duration=1 s"] == n_long > 0
    assert sum(corpus.skipped.values()) + len(corpus.utterances) == 8
    assert "skipped" in corpus.describe_skips()
    tight = load(data, feats, max_tokens=20)
    assert tight.skipped["longer than data.max_tokens=20 on its own"] > 0
    assert tight.utterances and all(u.n_tokens <= 20 for u in tight.utterances)


def _frames(feats):
    return {k: v.shape[0] for k, v in kaldiio.load_scp(str(feats)).items()}


def test_language_outside_the_run_is_an_error_naming_the_utterance(tmp_path):
    data, feats = make_corpus(tmp_path, langs=("en", "fr"), n_per_lang=2)
    with pytest.raises(UserError, match=r"utt2lang: utterance 'frspk0-000' has language 'fr'"):
        load(data, feats, langs=("en",))


def test_missing_features_name_the_utterance(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=2)
    lines = feats.read_text().splitlines()
    feats.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(UserError, match=r"feats.scp: no features for utterance 'enspk0-000'"):
        load(data, feats)


def test_nan_features_fail_when_loaded(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=2)
    bad = np.ones((30, 80), dtype=np.float32)
    bad[3, 4] = np.nan
    dump = tmp_path / "dump2"
    dump.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{dump / 'feats.ark'},{dump / 'feats.scp'}") as w:
        for utt, mat in sorted(kaldiio.load_scp(str(feats)).items()):
            w(utt, bad if utt == "enspk1-001" else mat)
    corpus = load(data, dump / "feats.scp")
    ds = PackDataset(corpus.utterances, [[i] for i in range(len(corpus.utterances))], dump / "feats.scp")
    idx = [u.utt for u in corpus.utterances].index("enspk1-001")
    with pytest.raises(UserError, match="utterance 'enspk1-001': features contain NaN or Inf"):
        ds[idx]
    ds[0 if idx else 1]   # the others load fine


def test_packs_are_language_homogeneous_and_collate_matches_the_contract(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=6)
    corpus = load(data, feats)
    packs, by_lang = pack_corpus(corpus.utterances, 60)
    for lang, ids in by_lang.items():
        for p in ids:
            assert {corpus.utterances[i].lang for i in packs[p]} == {lang}
            assert sum(corpus.utterances[i].n_tokens for i in packs[p]) <= 60
    assert sorted(i for p in packs for i in p) == list(range(12))
    ds = PackDataset(corpus.utterances, packs, feats, chunk_seconds=[1.0, 2.0, 4.0], seed=5)
    batch, meta = collate_packs([ds[(0, 0, 0)], ds[(1, 0, 0)]])
    n = len(packs[0]) + len(packs[1])
    assert batch["feats"].shape[0] == n and batch["feats"].shape[2] == 80
    lens = batch["feat_lens"].tolist()
    assert batch["feats"].shape[1] == max(lens)
    assert batch["pack_ids"].tolist() == [0] * len(packs[0]) + [1] * len(packs[1])
    assert len(batch["text_ids"]) == n and batch["lang_ids"].dtype == torch.long
    for k, utt in enumerate(meta.utts):   # rows hold the right matrices, zero padded
        mat = torch.tensor(kaldiio.load_scp(str(feats))[utt])
        assert torch.equal(batch["feats"][k, :lens[k]], mat)
        assert not batch["feats"][k, lens[k]:].any()
    assert set(batch["chunk_seconds"].tolist()) <= {1.0, 2.0, 4.0}
    again, _ = collate_packs([ds[(0, 0, 0)], ds[(1, 0, 0)]])
    assert torch.equal(again["chunk_seconds"], batch["chunk_seconds"])    # seeded by (epoch, batch, pack)
    tok = [sum(corpus.utterances[i].n_tokens for i in packs[p]) for p in (0, 1)]
    assert meta.real_tokens == sum(tok) and meta.padded_tokens == 2 * max(tok)


def test_sequential_packs_keep_order_and_language(tmp_path):
    data, feats = make_corpus(tmp_path, n_per_lang=5)
    utts = load(data, feats).utterances
    packs = sequential_packs(utts, 40)
    assert [i for p in packs for i in p] == list(range(len(utts)))
    assert all(len({utts[i].lang for i in p}) == 1 for p in packs)


def raw_corpus(tmp_path, shard_hours=None, **kw):
    """A raw-audio corpus: data dir with utt2dur (and FLAC shards when ``shard_hours``)."""
    from tiny_datadir import make_datadir

    from zlora.bin import dump_audio

    data = make_datadir(tmp_path / "d", langs=("en", "fr"), spks_per_lang=2, utts_per_spk=5, seconds=0.43,
                        utt2dur=True, **kw)
    scp = None
    if shard_hours:
        assert dump_audio.main(["--data", str(data), "--out", str(tmp_path / "a"), "--shard_hours",
                                str(shard_hours)]) == 0
        scp = tmp_path / "a" / "audio.scp"
    return data, scp, load_utterances(data, scp, StubModel(), ["en", "fr"], 1000, None, 100.0, feats_type="raw")


def test_raw_corpus_lengths_come_from_the_tables_and_batches_carry_waves(tmp_path):
    data, _, corpus = raw_corpus(tmp_path)
    assert (corpus.n_frames == 43).all() and np.allclose(corpus.seconds, 0.43)   # 6880 samples // 160
    assert corpus.index.kind == "audio" and (corpus.index.file_id == -1).all()   # wav.scp: by spec
    ds = PackDataset(corpus, [[0, 1], [5]])
    batch, meta = collate_packs([ds[(0, 0, 0)], ds[(1, 0, 0)]])
    assert "feats" not in batch and batch["wave"].shape == (3 * 6880,) and batch["wave"].dtype == torch.float32
    assert batch["wave_lens"].tolist() == [6880] * 3 and batch["pack_ids"].tolist() == [0, 0, 1]
    assert meta.utts == [corpus.ids[0], corpus.ids[1], corpus.ids[5]]


def test_too_short_raw_audio_is_skipped_and_counted(tmp_path):
    from tiny_datadir import make_datadir

    data = make_datadir(tmp_path / "d", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.43,
                        utt2dur=True)
    lines = (data / "utt2dur").read_text().splitlines()
    lines[0] = lines[0].split()[0] + " 0.0125"                  # 200 samples: no log-mel frame
    (data / "utt2dur").write_text("\n".join(lines) + "\n")
    corpus = load_utterances(data, None, StubModel(), ["en"], 1000, None, 100.0, feats_type="raw")
    assert len(corpus) == 2
    assert corpus.skipped == {"audio of at most 200 samples: too short for a log-mel frame": 1}


def test_shard_blocks_pack_within_one_shard_and_language_in_storage_order(tmp_path):
    from zlora.data.dataset import pack_blocks

    _, _, corpus = raw_corpus(tmp_path, shard_hours=2.0 / 3600)         # ~4 utterances per shard
    index = corpus.index
    assert (index.file_id >= 0).all() and len(index.handles.paths) >= 4
    packs, by_lang, blocks = pack_blocks(corpus, 30, 3)                # blocks of 3 utterances
    assert sorted(r for p in packs for r in p) == list(range(len(corpus)))
    for lang, block_list in blocks.items():
        assert sorted(p for b in block_list for p in b) == sorted(by_lang[lang])
        for block in block_list:
            rows = [r for p in block for r in packs[p]]
            assert len(rows) <= 3 and len(set(index.file_id[rows].tolist())) == 1    # one shard
            assert {int(corpus.lang[r]) for r in rows} == {lang}
            firsts = [min(index.offset[packs[p]]) for p in block]
            assert firsts == sorted(firsts)                                # packs in read order
    assert all(corpus.n_tokens[p].sum() <= 30 for p in packs)
    ds = PackDataset(corpus, packs)
    item = ds[(0, 0, 0)]
    assert [it["utt"] for it in item] == [corpus.ids[r] for r in packs[0]] and "wave" in item[0]


def test_the_dataset_keeps_no_python_object_per_utterance(tmp_path):
    """Columns, not lists of objects: a forked worker reading them never copies their pages."""
    data, feats = make_corpus(tmp_path, n_per_lang=6)
    corpus = load(data, feats)
    ds = PackDataset(corpus, pack_corpus(corpus, 60)[0], feats)

    def containers(obj, seen, depth=0):
        if id(obj) in seen or depth > 4:
            return []
        seen.add(id(obj))
        if isinstance(obj, (list, dict, tuple, set)) and len(obj) >= len(corpus):
            return [type(obj).__name__]
        attrs = getattr(obj, "__dict__", {})
        return [c for v in attrs.values() for c in containers(v, seen, depth + 1)]

    assert containers(ds, set()) == []
