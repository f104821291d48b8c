"""Tiny random Speech-LLMs for the model tests (CPU, offline)."""
import copy

import torch

from zlora.config import from_dict
from zlora.models import SpeechLLMConfig, build_speech_llm
from zlora.models.tokenizer import train_sentencepiece

LANGS = ["en", "fr", "de"]

TINY_WHISPER = dict(d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=64,
                    num_mel_bins=80, max_source_positions=1500, decoder_layers=1,
                    decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=60,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
TINY_QWEN3 = dict(model_type="qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096)


def make_sp_model(d):
    lines = [f"u{i:03d} {w}" for i, w in enumerate(
        ["hello world one two three", "bonjour le monde un deux trois", "hallo welt eins zwei drei",
         "the cat sat on the mat", "le chat est sur le tapis", "die katze sitzt auf der matte"] * 20)]
    (d / "text").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_sentencepiece([d / "text"], d / "bpe", 120, languages=LANGS)
    return str(d / "bpe.model")


def tiny_cfg_dict(sp_model, **sections):
    cfg = {"encoder": {"config": dict(TINY_WHISPER)},
           "llm": {"config": dict(TINY_QWEN3), "tokenizer": sp_model},
           "llm_lora": {"rank": 4, "alpha": 8.0}}
    for name, over in sections.items():
        cfg.setdefault(name, {}).update(copy.deepcopy(over))
    return cfg


def tiny_model(sp_model, seed=0, **sections):
    torch.manual_seed(seed)
    cfg = from_dict(SpeechLLMConfig, tiny_cfg_dict(sp_model, **sections), "model")
    return build_speech_llm(cfg, LANGS)


def random_batch(lens, n_mels=80, seed=0, langs=None, texts=None):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lens)
    feats = torch.randn(len(lens), int(lens.max()), n_mels, generator=g)
    langs = torch.tensor(langs if langs is not None else [i % len(LANGS) for i in range(len(lens))])
    texts = texts if texts is not None else [
        torch.randint(3, 60, (3 + i % 4,), generator=g).tolist() for i in range(len(lens))]
    return {"feats": feats, "feat_lens": lens, "lang_ids": langs, "text_ids": texts}
