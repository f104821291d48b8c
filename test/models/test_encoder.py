"""Whisper encoder: variable length, padding invariance, chunked mode, cached bottom layers."""
import pytest
import torch

from models_testlib import TINY_WHISPER
from zlora.config import ConfigError, from_dict
from zlora.models.config import EncoderConfig
from zlora.models.encoder import WhisperSpeechEncoder, encode_bottom


def make_encoder(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = from_dict(EncoderConfig, {"config": dict(TINY_WHISPER), **kw}, "encoder")
    return WhisperSpeechEncoder(cfg).eval()


def mel(lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lens)
    x = torch.randn(len(lens), int(lens.max()), 80, generator=g)
    return x, lens


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_full_context_shapes_and_padding_invariance(impl):
    enc = make_encoder(attn_implementation=impl)
    x, lens = mel([101, 64, 37])
    with torch.no_grad():
        h, hl = enc(x, lens)
        assert h.shape == (3, 51, 32) and hl.tolist() == [51, 32, 19]   # ceil(T/2)
        for i, n in enumerate(lens.tolist()):
            alone, _ = enc(x[i:i + 1, :n], lens[i:i + 1])
            torch.testing.assert_close(h[i, :hl[i]], alone[0], atol=1e-5, rtol=1e-5)


def test_matches_transformers_whisper_encoder_forward():
    """Our re-implemented forward equals WhisperEncoder.forward on its mandatory full length."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    hf = WhisperEncoder(WhisperConfig(**{**TINY_WHISPER, "max_source_positions": 40})).eval()
    cfg = from_dict(EncoderConfig, {"config": {**TINY_WHISPER, "max_source_positions": 40}}, "e")
    ours = WhisperSpeechEncoder(cfg).eval()
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 80, 80)
    with torch.no_grad():
        ref = hf(x.transpose(1, 2)).last_hidden_state
        got, _ = ours(x, torch.tensor([80, 80]))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_chunked_shapes_equal_full_shapes():
    enc = make_encoder(chunked=True, decode_chunk_seconds=0.2)
    full = make_encoder(chunked=False)
    x, lens = mel([101, 64, 20, 1])
    with torch.no_grad():
        hc, lc = enc(x, lens)
        hf, lf = full(x, lens)
    assert hc.shape == hf.shape and lc.tolist() == lf.tolist() == [51, 32, 10, 1]


def test_chunk_longer_than_utterance_equals_full_context():
    enc = make_encoder(chunked=True, decode_chunk_seconds=8.0)
    x, lens = mel([101, 64])
    with torch.no_grad():
        hc, hl = enc(x, lens)
        enc.cfg.chunked = False
        hf, _ = enc(x, lens)
    for i in range(2):
        torch.testing.assert_close(hc[i, :hl[i]], hf[i, :hl[i]], atol=1e-5, rtol=1e-5)


def test_chunks_never_see_across_boundaries():
    """Perturbing chunk 2 leaves chunk 1's outputs unchanged, and does change chunk 2's."""
    enc = make_encoder(chunked=True, decode_chunk_seconds=0.4)      # 40 mel frames -> 20 enc frames
    x, lens = mel([100])
    y = x.clone()
    y[:, 40:80] += torch.randn(1, 40, 80)
    with torch.no_grad():
        hx, _ = enc(x, lens)
        hy, _ = enc(y, lens)
    torch.testing.assert_close(hx[:, :20], hy[:, :20], atol=0, rtol=0)
    assert (hx[:, 20:40] - hy[:, 20:40]).abs().max() > 1e-3
    torch.testing.assert_close(hx[:, 40:], hy[:, 40:], atol=0, rtol=0)
    # and full-context encoding does mix them (so the check above can fail)
    enc.cfg.chunked = False
    with torch.no_grad():
        fx, _ = enc(x, lens)
        fy, _ = enc(y, lens)
    assert (fx[:, :20] - fy[:, :20]).abs().max() > 1e-3


def test_vectorised_chunking_equals_encoding_each_chunk_alone():
    """Mixed chunk sizes per row (training): equals encoding every chunk as its own utterance."""
    enc = make_encoder(chunked=True, train_chunk_seconds=[0.2, 0.4])
    enc.train()                                   # dropout is 0 in the tiny config
    x, lens = mel([101, 64, 30])
    secs = torch.tensor([0.2, 0.4, 0.2])
    with torch.no_grad():
        h, hl = enc(x, lens, chunk_seconds=secs)
        for i, n in enumerate(lens.tolist()):
            f = int(round(float(secs[i]) * 100))
            parts = []
            for s in range(0, n, f):
                piece = x[i:i + 1, s:min(s + f, n)]
                parts.append(enc.encode(piece, torch.tensor([piece.shape[1]]))[0][0])
            ref = torch.cat(parts)
            assert ref.shape[0] == hl[i]
            torch.testing.assert_close(h[i, :hl[i]], ref, atol=1e-5, rtol=1e-5)


def test_training_samples_chunk_sizes_from_config_and_eval_uses_decode_size():
    enc = make_encoder(chunked=True, train_chunk_seconds=[0.2, 0.4], decode_chunk_seconds=0.6)
    lens = torch.tensor([100] * 64)
    enc.train()
    sampled = enc.chunk_frames_for(lens, None)
    assert set(sampled.tolist()) == {20, 40}
    assert enc.chunk_frames_for(lens, torch.full((64,), 0.4)).tolist() == [40] * 64
    enc.eval()
    assert enc.chunk_frames_for(lens, None).tolist() == [60] * 64
    # Durations a batch carries are used in either mode (a KD teacher in eval mode follows the
    # student's batch).
    assert enc.chunk_frames_for(lens, torch.full((64,), 0.4)).tolist() == [40] * 64


def test_cached_layers_path_equals_full_path():
    full = make_encoder()
    cached = make_encoder(cached_layers=2)
    cached.load_state_dict(full.state_dict())
    x, lens = mel([101, 64])
    with torch.no_grad():
        ref, ref_lens = full(x, lens)
        bottom, blens = encode_bottom(full, x, lens, 2)
        got, got_lens = cached(bottom, blens)
    assert got_lens.tolist() == ref_lens.tolist() == blens.tolist()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert cached.output_lengths(torch.tensor([51])).tolist() == [51]


def test_config_errors():
    with pytest.raises(ConfigError, match="chunked=true cannot be combined with cached_layers"):
        from_dict(EncoderConfig, {"config": {}, "chunked": True, "cached_layers": 2}, "encoder")
    with pytest.raises(ConfigError, match="multiple of 0.02"):
        from_dict(EncoderConfig, {"config": {}, "train_chunk_seconds": [0.015]}, "encoder")
    with pytest.raises(ConfigError, match="exactly one of whisper_dir"):
        from_dict(EncoderConfig, {}, "encoder")
    with pytest.raises(ConfigError, match="n_mels"):
        make_encoder(n_mels=128)
    with pytest.raises(ConfigError, match="exceeds"):
        make_encoder(cached_layers=4)


def test_hub_name_is_refused():
    with pytest.raises(ConfigError, match="not a local directory.*no model hub"):
        make_encoder_from_dir("openai/whisper-large-v3")


def make_encoder_from_dir(path):
    return WhisperSpeechEncoder(from_dict(EncoderConfig, {"whisper_dir": path}, "encoder"))


def test_loads_encoder_from_a_local_whisper_dir(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(1)
    full = WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).eval()
    full.save_pretrained(tmp_path)
    enc = make_encoder_from_dir(str(tmp_path))
    ref = full.model.encoder.state_dict()
    for k, v in enc.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_too_long_input_needs_chunking():
    enc = make_encoder(config={**TINY_WHISPER, "max_source_positions": 10})
    x, lens = mel([30])
    with pytest.raises(ValueError, match="chunked"):
        enc(x, lens)
