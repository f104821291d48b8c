"""On-device batched log-mel for raw-audio batches (zlora/data/frontend.py) vs zlora.data.features."""
import kaldiio
import numpy as np
import pytest
import torch
from tiny_datadir import make_datadir

from zlora.bin import dump_feats
from zlora.data.features import FeatureError, log_mel
from zlora.data.frontend import batched_log_mel, reflect_rows, to_features


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    out[0][: lengths[0] // 3] *= 1e-5          # a near-silent stretch: the (max - 8) clamp acts
    return out


@pytest.mark.parametrize("n_mels", [80, 128])
def test_every_row_equals_log_mel_of_the_utterance_alone(n_mels):
    lengths = [16000, 401, 16159, 24321, 3210, 201]      # shortest possible, odd hops, longest in the middle
    ws = waves(lengths)
    feats, lens = batched_log_mel(torch.from_numpy(np.concatenate(ws)), torch.tensor(lengths), n_mels)
    assert feats.shape == (len(lengths), max(lengths) // 160, n_mels) and feats.dtype == torch.float32
    assert lens.tolist() == [n // 160 for n in lengths]
    for i, w in enumerate(ws):
        ref = log_mel(torch.from_numpy(w), n_mels).T                      # (T, n_mels)
        assert (feats[i, :lens[i]] - ref).abs().max() < 1e-5, i
        assert not feats[i, lens[i]:].any()                              # zero beyond the row


def test_reflect_padding_is_per_row():
    w = torch.arange(1.0, 501.0)                      # one row of 500 samples, one of 300
    rows = reflect_rows(torch.cat([w, w[:300]]), torch.tensor([500, 300]))
    ref = torch.nn.functional.pad(w[None, None, :300], (200, 200), mode="reflect")[0, 0]
    assert rows.shape == (2, 900)
    assert torch.equal(rows[1, :700], ref) and not rows[1, 700:].any()


def test_equals_dumped_features_of_the_same_audio(tmp_path):
    """What raw-audio training computes is what dump_feats stored (the model sees the same input)."""
    from zlora.data.audio import load_utterance
    from zlora.data.kaldi import DataDir

    data = make_datadir(tmp_path / "d", langs=("en", "fr"), spks_per_lang=1, utts_per_spk=3, seconds=0.77)
    assert dump_feats.main(["--data", str(data), "--out", str(tmp_path / "dump"), "--n_mels", "128"]) == 0
    dumped = kaldiio.load_scp(str(tmp_path / "dump" / "feats.scp"))
    dd = DataDir(data)
    ws = [load_utterance(dd, u) for u in dd.utts]
    batch = {"wave": torch.from_numpy(np.concatenate(ws)), "wave_lens": torch.tensor([len(w) for w in ws]),
             "lang_ids": torch.zeros(len(ws), dtype=torch.long)}
    out = to_features(batch, 128)
    assert set(out) == {"feats", "feat_lens", "lang_ids"}
    for i, u in enumerate(dd.utts):
        ref = torch.from_numpy(np.array(dumped[u]))
        assert out["feat_lens"][i] == ref.shape[0]
        assert (out["feats"][i, :ref.shape[0]] - ref).abs().max() < 1e-5


def test_float32_under_autocast_then_cast_to_the_model_dtype():
    ws = waves([8000, 5000])
    batch = {"wave": torch.from_numpy(np.concatenate(ws)), "wave_lens": torch.tensor([8000, 5000])}
    ref = to_features(batch, 80)["feats"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = to_features(batch, 80)["feats"]
    assert got.dtype == torch.float32 and torch.equal(got, ref)     # the mel matmul is not bf16
    assert to_features(batch, 80, torch.bfloat16)["feats"].dtype == torch.bfloat16
    plain = {"feats": ref, "feat_lens": torch.tensor([50, 31])}
    assert to_features(plain, 80) is plain                          # dumped batches pass through


def test_bad_batches_are_errors():
    with pytest.raises(FeatureError, match="200 samples is too short"):
        batched_log_mel(torch.zeros(1200), torch.tensor([1000, 200]), 80)
    with pytest.raises(FeatureError, match="holds 1000 samples but its lengths add up to 1200"):
        batched_log_mel(torch.zeros(1000), torch.tensor([600, 600]), 80)
