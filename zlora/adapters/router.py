"""LID-aware router (Eq. 16-18): p(l) = sigmoid(W_r LayerNorm(e(l)) + b_r), p(l) in [0, 1]^r.

The input e(l) is the Whisper LID embedding of language l (a fixed buffer, saved with the
adapter so a file is self-contained).

Precision: the router always computes in float32 -- its inputs stay float32 when the model is
cast (``keep_float32_buffers``), its weights are cast to float32 at use, and autocast is off
inside -- so p(l) is the same under DeepSpeed bf16, autocast and plain fp32 up to the rounding of
its own weights. Zipper layers cast p to their compute dtype only where it multiplies B (and
Zipper-Hard thresholds the float32 p, so rounding never flips a rank, Eq. 12). The router maps all L languages at once, (L, d_lid) ->
(L, r): a few kFLOPs, so it is simply recomputed in each forward (no cache to invalidate).

Fig. 4 draws a router inside every Zipper module, so by default each wrapped layer owns one
(``router_per_layer: true``); ``false`` shares a single router across all layers, which is
possible because every layer has the same rank.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from zlora.adapters.precision import keep_float32_buffers
from zlora.config import ConfigError

ROUTER_LEGACY = {"lid_embeddings": "lid_embeddings", "center_lid": "center_lid",
                 "router_per_layer": "router_per_layer"}


@dataclass
class RouterOptions:
    """``adapter.conf`` of the routed kinds (zipper-soft, zipper-hard). Paper ambiguities:
      - ``router_per_layer`` (default True): Fig. 4 draws a router inside every Zipper module,
        so each wrapped layer owns its router; False shares one router across all layers.
      - ``center_lid`` (default False, as in the paper): subtract the mean of the configured
        languages' LID embeddings before the router's LayerNorm (raw Whisper language-token
        embeddings share a large common component: mean off-diagonal cosine 0.72 -> 0.09).
    """
    lid_embeddings: Optional[Union[str, dict]] = None   # safetensors {lang: (d_lid,)} path, or a dict
    center_lid: bool = False
    router_per_layer: bool = True

    def check(self, cfg) -> None:
        if self.lid_embeddings is None:
            raise ConfigError(f"adapter kind {cfg.kind!r} needs conf.lid_embeddings (router input, Eq. 16; "
                              "python -m zlora.bin.extract_lid writes it)")


@keep_float32_buffers("lid_embeddings")
class LIDRouter(nn.Module):
    """lid_embeddings: (L, d_lid) float32 buffer; norm: LayerNorm(d_lid); proj: Linear(d_lid -> r)."""

    def __init__(self, lid_embeddings: torch.Tensor, rank: int, gen: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        n_lang, d_lid = lid_embeddings.shape
        self.register_buffer("lid_embeddings", lid_embeddings.to(device=device, dtype=torch.float32))
        self.norm = nn.LayerNorm(d_lid, device=device, dtype=dtype)      # Eq. 16
        self.proj = nn.Linear(d_lid, rank, device=device, dtype=dtype)   # Eq. 17
        if gen is not None and self.proj.weight.device.type != "meta":
            # nn.Linear's default law, U(-1/sqrt(d), 1/sqrt(d)), drawn from a seeded generator.
            bound = 1.0 / math.sqrt(d_lid)
            with torch.no_grad():
                for p in (self.proj.weight, self.proj.bias):
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)

    def forward(self) -> torch.Tensor:
        """-> p: (L, r) float32 rank-wise mixing weights for every language (Eq. 18)."""
        return self.route(self.lid_embeddings)

    def route(self, emb: torch.Tensor) -> torch.Tensor:
        """Eq. 16-18 on any embeddings emb (N, d_lid) -> (N, r), in float32."""
        n, p = self.norm, self.proj
        with torch.autocast(emb.device.type, enabled=False):
            h = F.layer_norm(emb.float(), n.normalized_shape, n.weight.float(), n.bias.float(), n.eps)
            return torch.sigmoid(F.linear(h, p.weight.float(), p.bias.float()))
