"""The paper's model shapes as from-scratch configs (random weights, no download): Whisper-large-v3
encoder and Qwen3-1.7B, for memory models, benchmarks and GPU checks (zlora.bin.bench_memory,
tools/gpu_check.sh). Numbers are those of the released configs (config.json of
openai/whisper-large-v3 and Qwen/Qwen3-1.7B)."""
from __future__ import annotations

WHISPER_LARGE_V3 = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                        num_mel_bins=128, max_source_positions=1500, decoder_layers=1,
                        decoder_attention_heads=20, decoder_ffn_dim=5120, vocab_size=51866,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
QWEN3_1_7B = dict(model_type="qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                  max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  tie_word_embeddings=True)


def model_section(sp_model: str, enc_layers: int | None = None, llm_layers: int | None = None,
                  **encoder) -> dict:
    """A ``model:`` config dict at the paper's shapes, optionally with fewer layers."""
    whisper = dict(WHISPER_LARGE_V3)
    qwen = dict(QWEN3_1_7B)
    if enc_layers is not None:
        whisper["encoder_layers"] = enc_layers
    if llm_layers is not None:
        qwen["num_hidden_layers"] = llm_layers
    return {"encoder": {"config": whisper, "n_mels": 128, **encoder},
            "projector": {"kind": "gated_conv", "downsample": 4},
            "llm": {"config": qwen, "tokenizer": sp_model},
            "llm_lora": {"enabled": True, "rank": 32, "alpha": 64.0}}
