"""Tiny models and configs shared by the adapter tests (imported as a plain module)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from zlora.adapters import KINDS, AdapterConfig, apply_adapters, kinds, named_adapter_layers

LANGS = ["en", "fr", "ja"]
MERGEABLE = list(kinds(compared=True, mergeable=True))


def tiny_mlp(seed: int = 0, d_in: int = 8, hidden: int = 16, d_out: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def lid_embeddings(d: int = 6, seed: int = 1, langs=LANGS) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {c: torch.randn(d, generator=g) for c in langs}


def make_cfg(kind: str = "lora", **overrides) -> AdapterConfig:
    kw = dict(kind=kind, rank=4, alpha=8.0, languages=list(LANGS), lid_embeddings=lid_embeddings(),
              flylora_k=2)
    kw.update(overrides)
    return AdapterConfig.make(**kw)


def adapted(kind: str, seed: int = 0, **overrides) -> tuple[nn.Module, nn.Module]:
    """(frozen reference copy of the base model, the same model wrapped with ``kind``)."""
    base = tiny_mlp(seed)
    model = copy.deepcopy(base)
    apply_adapters(model, make_cfg(kind, **overrides))
    return base, model


def randomize_adapters(model: nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Give every trainable adapter/router tensor random values (B starts at zero otherwise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in named_adapter_layers(model):
            for name, p in layer.named_parameters():
                if not name.startswith("base_layer."):
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
