"""Whisper log-mel (vs transformers), NaN/Inf rejection, and the dump_feats stage."""
import json

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_datadir import make_datadir, tone

from zlora.bin import bench_features, dump_feats
from zlora.data.audio import AudioError, load_utterance
from zlora.data.features import FeatureError, check_finite, log_mel, mel_filterbank, utterance_features
from zlora.data.kaldi import DataDir, read_kv


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filterbank_matches_transformers(n_mels):
    from transformers.audio_utils import mel_filter_bank
    ref = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    ours = mel_filterbank(n_mels)
    assert ours.shape == ref.shape == (201, n_mels)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("n_samples", [16000, 16000 + 159, 24321, 401])
def test_log_mel_matches_whisper_feature_extractor(n_mels, n_samples):
    from transformers import WhisperFeatureExtractor
    rng = np.random.default_rng(n_samples)
    wave = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    wave[: n_samples // 3] *= 1e-5  # a near-silent stretch (-100 dB) so the (max - 8) clamp acts
    ref = WhisperFeatureExtractor(feature_size=n_mels)(
        wave, sampling_rate=16000, padding="longest", truncation=False, return_tensors="np").input_features[0]
    ours = log_mel(torch.from_numpy(wave), n_mels)
    assert ours.dtype == torch.float32
    assert ours.shape == ref.shape == (n_mels, n_samples // 160)  # T = N // 160, last frame dropped
    assert np.abs(ours.numpy() - ref).max() < 1e-4
    if n_samples > 1600:  # the quiet stretch spans whole frames: the floor (max - 8 + 4) / 4 is reached
        assert ours.min().item() == pytest.approx(ours.max().item() - 2.0, abs=1e-6)


def test_batch_rows_equal_single_calls():
    waves = torch.from_numpy(np.stack([tone(0.3, seed=1), 0.01 * tone(0.3, freq=500, seed=2)]))
    batch = log_mel(waves)
    assert batch.shape == (2, 80, 30)
    for i in range(2):  # the clamp is per row, not over the batch
        torch.testing.assert_close(batch[i], log_mel(waves[i]), rtol=0, atol=1e-6)


def test_nonfinite_features_and_short_audio_rejected():
    feats = torch.zeros(10, 80)
    feats[3, 4] = float("nan")
    with pytest.raises(FeatureError, match=r"utterance 'u5': features contain 1 NaN/Inf"):
        check_finite(feats, "u5")
    with pytest.raises(FeatureError, match="utterance 'u6'"):
        utterance_features(np.array([np.inf] * 1600, np.float32), "u6")
    with pytest.raises(FeatureError, match="utterance 'u7'.*too short"):
        utterance_features(np.zeros(100, np.float32), "u7")
    assert utterance_features(tone(0.1), "ok").shape == (10, 80)  # time-major


def read_ark(dump):
    return {k: np.array(v) for k, v in kaldiio.load_scp(str(dump / "feats.scp")).items()}


def test_dump_feats_nj2_equals_nj1_and_reference(tmp_path):
    d = make_datadir(tmp_path / "data x", langs=("en", "fr"), spks_per_lang=1, utts_per_spk=2,
                     sr=22050, seconds=0.37)
    dump_feats.main(["--data", str(d), "--out", str(tmp_path / "d1")])
    dump_feats.main(["--data", str(d), "--out", str(tmp_path / "d 2"), "--nj", "2"])
    one, two = read_ark(tmp_path / "d1"), read_ark(tmp_path / "d 2")
    dd = DataDir(d)
    assert list(one) == list(two) == dd.utts
    for utt in dd.utts:
        ref = log_mel(torch.from_numpy(load_utterance(dd, utt))).T.numpy()
        assert one[utt].dtype == np.float32 and one[utt].shape == (37, 80)  # 0.37 s, 100 frames/s
        np.testing.assert_array_equal(one[utt], ref)
        np.testing.assert_array_equal(two[utt], ref)
    assert read_kv(tmp_path / "d 2" / "utt2num_frames") == {u: str(len(one[u])) for u in dd.utts}
    assert (tmp_path / "d 2" / ".done").is_file() and not (tmp_path / "d 2" / "split").exists()


def test_dump_feats_done_is_noop_and_unfinished_is_redone(tmp_path):
    d = make_datadir(tmp_path / "data", langs=("en",), spks_per_lang=1, utts_per_spk=2, seconds=0.2)
    out = tmp_path / "dump"
    dump_feats.main(["--data", str(d), "--out", str(out)])
    ark_before = (out / "feats.ark").read_bytes()
    (out / "feats.ark").write_bytes(b"tampered")  # a no-op rerun must not notice or touch it
    dump_feats.main(["--data", str(d), "--out", str(out)])
    assert (out / "feats.ark").read_bytes() == b"tampered"
    (out / ".done").unlink()  # now it looks interrupted: redo from scratch
    (out / "split").mkdir()
    dump_feats.main(["--data", str(d), "--out", str(out)])
    assert (out / "feats.ark").read_bytes() == ark_before and not (out / "split").exists()
    with pytest.raises(Exception, match="n_mels=80, not 128"):
        dump_feats.main(["--data", str(d), "--out", str(out), "--n_mels", "128"])


def test_dump_feats_redoes_a_dump_whose_audio_changed(tmp_path):
    """Re-synthesised audio behind the same wav.scp (a recipe rerun after a config edit) must not
    be served from the old dump."""
    d = make_datadir(tmp_path / "data", langs=("en",), spks_per_lang=1, utts_per_spk=2, seconds=0.2)
    out = tmp_path / "dump"
    dump_feats.main(["--data", str(d), "--out", str(out)])
    before = read_ark(out)
    utt, wav = (d / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    audio, sr = sf.read(wav)
    sf.write(wav, np.concatenate([audio, audio]), sr)           # same id, new (longer) audio
    dump_feats.main(["--data", str(d), "--out", str(out)])
    after = read_ark(out)
    assert after[utt].shape[0] == 2 * before[utt].shape[0]
    stamp = (out / "feats.ark").stat().st_mtime_ns
    dump_feats.main(["--data", str(d), "--out", str(out)])       # unchanged again: a no-op
    assert (out / "feats.ark").stat().st_mtime_ns == stamp


def test_dump_feats_bad_audio_fails_without_done(tmp_path):
    d = make_datadir(tmp_path / "data", langs=("en",), spks_per_lang=1, utts_per_spk=2, seconds=0.2)
    (d / "wav" / "enspk0-001.wav").write_bytes(b"RIFFjunk")
    with pytest.raises(AudioError, match="utterance 'enspk0-001'"):
        dump_feats.main(["--data", str(d), "--out", str(tmp_path / "dump")])
    assert not (tmp_path / "dump" / ".done").exists() and not (tmp_path / "dump" / "feats.scp").exists()


def test_bench_features_prints_json_lines(capsys):
    bench_features.main(["--seconds", "0.5", "--n_mels", "80", "--reps", "1"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["frames"] == 50 and rows[0]["max_abs_diff"] < 1e-4
    assert rows[0]["ours_ms"] > 0 and rows[0]["hf_ms"] > 0


def test_float_wav_with_nan_is_rejected_before_features(tmp_path):
    d = make_datadir(tmp_path / "data", langs=("en",), spks_per_lang=1, utts_per_spk=1, seconds=0.2)
    x = tone(0.2)
    x[100] = np.nan
    sf.write(d / "wav" / "enspk0-000.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="utterance 'enspk0-000'.*NaN or Inf"):
        load_utterance(DataDir(d), "enspk0-000")
