"""LID embeddings, cosine heatmap and Whisper-style language detection on a tiny random Whisper."""
import numpy as np
import pytest
import torch
from safetensors import safe_open

from zlora.models.lid import (cosine_matrix, detect_language, detect_language_batch, lid_embeddings,
                              pad_or_trim_mel, plot_cosine_heatmap)
from zlora.utils.cli import UserError, run_main

LANG_IDS = {"en": 50, "zh": 51, "de": 52, "es": 53, "ru": 54, "ja": 55}
SOT = 49


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A saved random Whisper (80 mels, 100-frame window) with six language tokens."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=50,
                        max_target_positions=16, decoder_start_token_id=SOT, pad_token_id=0,
                        bos_token_id=0, eos_token_id=0, begin_suppress_tokens=None, suppress_tokens=None)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=SOT, eos_token_id=0, pad_token_id=0,
        lang_to_id={f"<|{k}|>": v for k, v in LANG_IDS.items()})
    d = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(d)
    return d, model



@pytest.fixture
def keep_logging():
    """CLIs call setup_logging, which binds the (captured) stderr; restore the handlers after."""
    import logging

    logger = logging.getLogger("zlora")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])

def test_lid_embeddings_are_the_language_token_rows(tiny_whisper):
    d, model = tiny_whisper
    emb = model.model.decoder.embed_tokens.weight.detach()
    raw = lid_embeddings(d, ["de", "en"])
    assert list(raw) == ["de", "en"]
    assert torch.equal(raw["de"], emb[52]) and torch.equal(raw["en"], emb[50])
    assert torch.equal(lid_embeddings(model, ["de"])["de"], raw["de"])  # a model works as well as a dir


def test_lid_embeddings_and_encoder_weights_from_a_sharded_dir(tiny_whisper, tmp_path):
    """Whisper-large-v3 ships shards + model.safetensors.index.json instead of model.safetensors."""
    import shutil

    from zlora.bin import extract_lid
    from zlora.models.encoder import read_encoder_weights

    d, model = tiny_whisper
    sharded = tmp_path / "sharded"
    shutil.copytree(d, sharded)
    (sharded / "model.safetensors").unlink()
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 1
    assert not (sharded / "model.safetensors").exists()
    for lang, row in lid_embeddings(sharded, ["de", "en"], center=True).items():
        torch.testing.assert_close(row, lid_embeddings(d, [lang], center=True)[lang])
    single = read_encoder_weights(d)
    assert {k: v.shape for k, v in read_encoder_weights(sharded).items()} == {k: v.shape for k, v in single.items()}
    out = tmp_path / "lid.safetensors"
    assert extract_lid.main(["--whisper_dir", str(sharded), "--languages", "en,de", str(out)]) == 0
    files = extract_lid.provenance_files(sharded)
    assert (sharded / "model.safetensors.index.json") in files and (sharded / "generation_config.json") in files


def test_centring_uses_all_language_tokens(tiny_whisper):
    d, model = tiny_whisper
    emb = model.model.decoder.embed_tokens.weight.detach()
    mean = emb[50:56].mean(0)
    one = lid_embeddings(d, ["es"], center=True)
    many = lid_embeddings(d, ["es", "ja", "zh"], center=True)
    torch.testing.assert_close(one["es"], emb[53] - mean)
    torch.testing.assert_close(many["es"], one["es"])  # independent of which languages are asked for


def test_unknown_or_duplicate_language_is_an_error(tiny_whisper):
    d, _ = tiny_whisper
    with pytest.raises(UserError, match=r"unknown Whisper language code\(s\) \['xx'\].*known: de en es ja ru zh"):
        lid_embeddings(d, ["en", "xx"])
    with pytest.raises(UserError, match="duplicate"):
        lid_embeddings(d, ["en", "en"])


def test_cosine_matrix():
    e = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0, 1.0]), "c": torch.tensor([0.0, -2.0])}
    m = cosine_matrix(e, ["c", "a", "b"])
    expect = torch.tensor([[1.0, 0.0, -2 ** -0.5], [0.0, 1.0, 2 ** -0.5], [-2 ** -0.5, 2 ** -0.5, 1.0]])
    torch.testing.assert_close(m, expect)


def test_heatmap_png_is_written_atomically(tmp_path):
    out = tmp_path / "fig7.png"
    plot_cosine_heatmap(["en", "ja", "ko"], torch.tensor([[1, .1, .2], [.1, 1, .4], [.2, .4, 1.]]), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["fig7.png"]


def test_extract_lid_cli(tiny_whisper, tmp_path, capsys, keep_logging):
    from zlora.bin.extract_lid import main

    d, model = tiny_whisper
    out, png = tmp_path / "lid.safetensors", tmp_path / "lid.png"
    with pytest.raises(SystemExit) as e:
        run_main(main, ["--whisper_dir", str(d), "--languages", "ja,en", "--center", "--heatmap", str(png), str(out)])
    assert e.value.code == 0 and png.is_file()
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == ["en", "ja"]
        assert f.metadata()["languages"] == '["ja", "en"]' and f.metadata()["center"] == "true"
        torch.testing.assert_close(f.get_tensor("ja"), lid_embeddings(d, ["ja"], center=True)["ja"])
    with pytest.raises(SystemExit) as e:
        run_main(main, ["--whisper_dir", str(d), "--languages", "en,klingon", str(tmp_path / "x.safetensors")])
    assert e.value.code == 2 and "klingon" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_pad_or_trim_mel_matches_whisper_padding_the_audio():
    """Padding the mel with the silence value equals padding the waveform (bar boundary frames)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(3 * t)) + 0.05 * rng.standard_normal(t.size))
    wave = wave.astype(np.float32)
    unpadded = torch.from_numpy(fe(wave, sampling_rate=16000, padding="longest", return_tensors="np")
                                .input_features[0])
    padded = torch.from_numpy(fe(wave, sampling_rate=16000, return_tensors="np").input_features[0])
    ours = pad_or_trim_mel(unpadded, 3000)
    assert ours.shape == padded.shape == (80, 3000)
    diff = (ours - padded).abs().amax(dim=0)
    assert diff[:195].max() < 1e-4 and diff[205:].max() < 1e-4  # 200 real frames; STFT edge aside
    torch.testing.assert_close(pad_or_trim_mel(padded, 100), padded[:, :100])
    quiet = torch.full((80, 10), -1.4)  # quieter than the -10 log floor + 8: fill is -1.5
    assert pad_or_trim_mel(quiet, 20)[:, 10:].eq(-1.5).all()


def test_detection_is_a_distribution_and_batching_is_consistent(tiny_whisper):
    d, model = tiny_whisper
    torch.manual_seed(1)
    mels = [torch.randn(80, 70), torch.randn(80, 130), torch.randn(80, 20)]
    single = [detect_language(model, m) for m in mels]
    for p in single:
        assert sorted(p) == sorted(LANG_IDS) and abs(sum(p.values()) - 1) < 1e-5
        assert list(p.values()) == sorted(p.values(), reverse=True)
    batch = torch.zeros(3, 80, 130)
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    batched = detect_language_batch(d, batch, lens=torch.tensor([70, 130, 20]))
    for s, b in zip(single, batched):
        for lang in LANG_IDS:
            assert abs(s[lang] - b[lang]) < 1e-5


def test_detection_follows_the_language_token_logits(tiny_whisper):
    """Make the decoder output after <|sot|> point at <|ja|>'s row: detection must say ja."""
    _, model = tiny_whisper
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        norm = m.model.decoder.layer_norm
        norm.weight.zero_()
        norm.bias.copy_(torch.linspace(-1, 1, 16))  # decoder output is now this vector for any input
        emb = m.model.decoder.embed_tokens.weight
        emb[LANG_IDS["ja"]] = 3 * norm.bias
        emb[LANG_IDS["en"]] = -3 * norm.bias
    p = detect_language(m, torch.randn(80, 40))
    assert next(iter(p)) == "ja" and p["ja"] > 0.9 and p["en"] < 1e-3


def test_detection_rejects_time_major_input(tiny_whisper):
    _, model = tiny_whisper
    with pytest.raises(UserError, match=r"shape \(120, 80\), expected \(n_mels=80, T\).*transpose"):
        detect_language(model, torch.randn(120, 80))
