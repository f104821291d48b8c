"""Adapters on real model modules: a tiny Hugging Face WhisperEncoder, routed per row."""
import copy

import pytest
import torch

from adapter_testlib import randomize_adapters
from zlora.adapters import (AdapterConfig, apply_adapters, language_context, merge_for_language)

transformers = pytest.importorskip("transformers")

LANGS = ["en", "zh", "ja"]


def _encoder():
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2,
                                     encoder_ffn_dim=64, num_mel_bins=8, max_source_positions=10)
    return transformers.models.whisper.modeling_whisper.WhisperEncoder(cfg).eval()


def test_zipper_soft_on_whisper_encoder_routes_per_row():
    base = _encoder()
    model = copy.deepcopy(base)
    lid = {c: torch.randn(16) for c in LANGS}
    cfg = AdapterConfig.make(kind="zipper-soft", rank=4, alpha=8, languages=LANGS, lid_embeddings=lid,
                        target_modules=r"layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2)")
    names = apply_adapters(model, cfg)
    assert len(names) == 12 and "layers.1.fc2" in names
    mel = torch.randn(3, 8, 20)                                  # (B, n_mels, 2 * positions)
    with language_context(model, ["ja", "en", "zh"]):
        out = model(mel).last_hidden_state
    torch.testing.assert_close(out, base(mel).last_hidden_state)  # B = 0: the base model
    randomize_adapters(model, scale=0.1)
    with language_context(model, ["ja", "en", "zh"]):
        out = model(mel).last_hidden_state
    for row, lang in enumerate(["ja", "en", "zh"]):
        merged = merge_for_language(model, lang)
        torch.testing.assert_close(out[row:row + 1], merged(mel[row:row + 1]).last_hidden_state,
                                   atol=1e-5, rtol=1e-4)
    assert (out - base(mel).last_hidden_state).abs().max() > 1e-3
