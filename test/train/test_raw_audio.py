"""Raw-audio training and decoding (data.feats_type raw): the same model input as dumped features."""
import sys
from pathlib import Path

import pytest
import torch

from train_testlib import final_weights, read_metrics, train_config, train_inprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import soundfile as sf  # noqa: E402
from tiny_datadir import make_datadir, tone  # noqa: E402

from zlora.bin import dump_audio, dump_feats  # noqa: E402
from zlora.config import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def audio_corpus(tmp_path_factory):
    """A 2-language data dir with audio, its 80-bin dump, its FLAC shards and a tokenizer."""
    from train_testlib import make_tokenizer

    root = tmp_path_factory.mktemp("raw")
    data = make_datadir(root / "data", langs=("en", "fr"), spks_per_lang=2, utts_per_spk=4, seconds=0.7,
                        utt2dur=True)
    durs = {}                   # lengths 0.4-1.1 s, not multiples of the 10-ms hop: rows of a batch differ
    for k, line in enumerate((data / "wav.scp").read_text().splitlines()):
        utt, path = line.split()
        durs[utt] = 0.4 + 0.0731 * (k % 10)
        sf.write(path, tone(durs[utt], seed=k), 16000)
    (data / "utt2dur").write_text("".join(f"{u} {round(d * 16000) / 16000}\n" for u, d in sorted(durs.items())))
    assert dump_feats.main(["--data", str(data), "--out", str(root / "dump")]) == 0
    assert dump_audio.main(["--data", str(data), "--out", str(root / "shards"), "--shard_hours",
                            str(2.1 / 3600)]) == 0
    return data, root / "dump" / "feats.scp", root / "shards" / "audio.scp", make_tokenizer(root, data)


def run(tmp_path, monkeypatch, audio_corpus, name, feats_type, feats, **over):
    data, _, _, sp = audio_corpus
    cfg = train_config(tmp_path / name, data, feats, sp, **{
        "data.feats_type": feats_type, "data.train_feats": None if feats is None else str(feats),
        "optim.max_steps": 4, "data.token_cache": False, **over})
    assert train_inprocess(monkeypatch, cfg, tmp_path / f"{name}.yaml") == 0
    return tmp_path / name


def test_raw_audio_trains_exactly_as_dumped_features(tmp_path, monkeypatch, audio_corpus):
    """Same packs, same batches, log-mel on the device = the dumped log-mel: the same losses and
    weights, from wav.scp, and from shards (global packing) read by two workers."""
    _, feats, shards, _ = audio_corpus
    runs = [run(tmp_path, monkeypatch, audio_corpus, "dumped", "dumped", feats),
            run(tmp_path, monkeypatch, audio_corpus, "wav", "raw", None),
            run(tmp_path, monkeypatch, audio_corpus, "shards", "raw", shards,
                **{"data.shard_block_utts": 0, "data.num_workers": 2})]
    ref = read_metrics(runs[0])
    ref_w = final_weights(runs[0])
    for exp in runs[1:]:
        got = read_metrics(exp)
        assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in ref], abs=1e-5)
        assert [m["audio_s_per_s"] > 0 for m in got] == [True] * 4
        w = final_weights(exp)
        assert all(torch.allclose(w[k], ref_w[k], atol=1e-5) for k in ref_w), exp.name
    assert "train data" in (runs[1] / "train.log").read_text() and "(raw)" in (runs[1] / "train.log").read_text()


def test_shards_read_in_blocks_over_epochs_with_one_persistent_loader(tmp_path, monkeypatch, audio_corpus):
    data, _, shards, _ = audio_corpus
    made = []
    real = torch.utils.data.DataLoader

    class Counting(real):
        def __init__(self, *a, **kw):
            made.append(kw)
            super().__init__(*a, **kw)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Counting)
    exp = run(tmp_path, monkeypatch, audio_corpus, "blocks", "raw", shards, **{
        "optim.max_steps": None, "optim.epochs": 3, "data.num_workers": 1, "data.valid": str(data)})
    log = (exp / "train.log").read_text()
    n_shards = len((shards.parent / "shards.tsv").read_text().splitlines()) - 1
    assert n_shards > 2 and f"sequential reading: {n_shards} shards" in log
    assert {m["epoch"] for m in read_metrics(exp)} == {0, 1, 2}
    train_loaders = [kw for kw in made if kw.get("persistent_workers")]
    assert len(train_loaders) == 1 and train_loaders[0]["num_workers"] == 1    # one loader, 3 epochs


def test_raw_needs_lengths_and_excludes_cached_encoder_states(tmp_path, monkeypatch, audio_corpus):
    from zlora.config import from_dict
    from zlora.train.config import TrainConfig

    data, feats, _, sp = audio_corpus
    cfg = train_config(tmp_path / "x", data, None, sp, **{"data.feats_type": "raw", "data.train_feats": None,
                                                         "model.encoder.cached_layers": 1})
    with pytest.raises(ConfigError, match="feats_type: raw computes log-mel, but model.encoder.cached_layers"):
        from_dict(TrainConfig, cfg, "c")
    bare = make_datadir(tmp_path / "bare", langs=("en", "fr"), spks_per_lang=1, utts_per_spk=2, seconds=0.5)
    cfg = train_config(tmp_path / "y", bare, None, sp, **{"data.feats_type": "raw", "data.train_feats": None})
    from zlora.utils.cli import UserError

    with pytest.raises(UserError, match="utt2num_samples or utt2dur, and neither exists"):
        train_inprocess(monkeypatch, cfg, tmp_path / "y.yaml")


def test_decoding_raw_audio_gives_the_dumped_hypotheses(tmp_path, monkeypatch, audio_corpus):
    from zlora.bin.decode import main as decode

    data, feats, shards, _ = audio_corpus
    exp = run(tmp_path, monkeypatch, audio_corpus, "m", "dumped", feats, **{"optim.max_steps": 2})
    common = ["--exp", str(exp), "--data", str(data), "--decoding.max_new_tokens", "4"]
    decode(common + ["--feats", str(feats), "--out", str(tmp_path / "d")])
    decode(common + ["--feats_type", "raw", "--out", str(tmp_path / "r")])
    decode(common + ["--feats_type", "raw", "--feats", str(shards), "--out", str(tmp_path / "s"), "--nj", "2"])
    ref = (tmp_path / "d" / "text").read_text()
    assert len(ref.splitlines()) == 16
    assert (tmp_path / "r" / "text").read_text() == ref == (tmp_path / "s" / "text").read_text()


def test_engine_moves_a_raw_batch_and_computes_log_mel_in_float32_then_the_model_dtype():
    import numpy as np

    from zlora.data.features import log_mel
    from zlora.train.engine import move_batch

    waves = [tone(0.5, seed=1), tone(0.37, seed=2)]
    batch = {"wave": torch.from_numpy(np.concatenate(waves)), "wave_lens": torch.tensor([8000, 5920]),
             "lang_ids": torch.tensor([0, 1]), "text_ids": [[1], [2]]}
    out = move_batch(batch, torch.device("cpu"), torch.bfloat16, n_mels=80)       # DeepSpeed bf16
    assert "wave" not in out and out["feats"].dtype == torch.bfloat16 and out["feat_lens"].tolist() == [50, 37]
    ref = log_mel(torch.from_numpy(waves[1]), 80).T
    assert (out["feats"][1, :37].float() - ref).abs().max() <= 0.008          # one bf16 step at most
    with pytest.raises(ValueError, match="mel bins"):
        move_batch(batch, torch.device("cpu"))
