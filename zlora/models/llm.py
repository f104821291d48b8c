"""The decoder-only LLM (paper Eq. 5): any Hugging Face ``AutoModelForCausalLM``.

From a local directory (e.g. Qwen3-1.7B, or SmolLM2 from ``python -m zlora.bin.convert_llm``) the
tokenizer comes from the same directory; from a config dict (tests, the from-scratch demo) the
tokenizer is a sentencepiece model and the vocabulary size follows it. A hub name is refused:
nothing here can reach a model hub.
"""
from __future__ import annotations

import torch
from torch import nn

from zlora.config import ConfigError
from zlora.adapters.checkpointing import enable_activation_checkpointing
from zlora.models.config import LLMConfig
from zlora.models.encoder import require_local_dir
from zlora.models.tokenizer import HFTokenizer, SentencePieceTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_llm(cfg: LLMConfig) -> tuple[nn.Module, HFTokenizer | SentencePieceTokenizer]:
    """(causal LM, tokenizer) from ``cfg``; the LM's vocabulary covers the tokenizer's."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = DTYPES[cfg.dtype]
    if cfg.model_dir is not None:
        path = require_local_dir(cfg.model_dir, "model.llm.model_dir",
                                 "python -m zlora.bin.convert_llm OUT_DIR")
        tok = HFTokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, attn_implementation=cfg.attn_implementation, use_safetensors=True)
    else:
        tok = SentencePieceTokenizer(cfg.tokenizer)
        kw = dict(cfg.config)
        model_type = kw.pop("model_type")
        kw.setdefault("vocab_size", tok.vocab_size)
        kw.setdefault("eos_token_id", tok.eos_id)
        kw.setdefault("pad_token_id", tok.pad_id)
        try:
            hf_cfg = AutoConfig.for_model(model_type, **kw)
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError(f"model.llm.config: cannot build a {model_type!r} config: {e}") from e
        model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation=cfg.attn_implementation,
                                                 dtype=dtype)
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(decoder_layers(model))
    n_emb = model.get_input_embeddings().num_embeddings
    if n_emb < tok.vocab_size:
        raise ConfigError(f"model.llm: the LLM has {n_emb} token embeddings but the tokenizer "
                          f"has {tok.vocab_size} tokens")
    return model, tok


def llm_hidden_size(model: nn.Module) -> int:
    return model.get_input_embeddings().embedding_dim


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The repeated decoder blocks of a Hugging Face causal LM (``model.model.layers`` for
    Llama/Qwen-style models)."""
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"model.llm.activation_checkpointing: cannot find the decoder layers of "
                          f"{type(model).__name__} (expected base_model.layers)")
    return layers
