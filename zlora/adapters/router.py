"""LID-aware router (Eq. 16-18): p(l) = sigmoid(W_r LayerNorm(e(l)) + b_r), p(l) in [0, 1]^r.

The input e(l) is the Whisper LID embedding of language l (a fixed buffer, saved with the
adapter so a file is self-contained). The router maps all L languages at once, (L, d_lid) ->
(L, r): a few kFLOPs, so it is simply recomputed in each forward (no cache to invalidate).

Fig. 4 draws a router inside every Zipper module, so by default each wrapped layer owns one
(``router_per_layer: true``); ``false`` shares a single router across all layers, which is
possible because every layer has the same rank.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LIDRouter(nn.Module):
    """lid_embeddings: (L, d_lid) buffer; norm: LayerNorm(d_lid); proj: Linear(d_lid -> r)."""

    def __init__(self, lid_embeddings: torch.Tensor, rank: int, gen: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        n_lang, d_lid = lid_embeddings.shape
        self.register_buffer("lid_embeddings", lid_embeddings.to(device=device, dtype=dtype))
        self.norm = nn.LayerNorm(d_lid, device=device, dtype=dtype)      # Eq. 16
        self.proj = nn.Linear(d_lid, rank, device=device, dtype=dtype)   # Eq. 17
        if gen is not None and self.proj.weight.device.type != "meta":
            # nn.Linear's default law, U(-1/sqrt(d), 1/sqrt(d)), drawn from a seeded generator.
            bound = 1.0 / math.sqrt(d_lid)
            with torch.no_grad():
                for p in (self.proj.weight, self.proj.bias):
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)

    def forward(self) -> torch.Tensor:
        """-> p: (L, r) rank-wise mixing weights for every language (Eq. 18)."""
        return torch.sigmoid(self.proj(self.norm(self.lid_embeddings)))
