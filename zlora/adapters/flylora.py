"""FlyLoRA (Eq. 9): frozen sparse random A, implicit top-k rank routing, load-balancing bias d.

Follows the authors' code (github.com/gfyddha/FlyLoRA):
- A (r, d_in) is a frozen buffer; each row has p random non-zeros drawn from N(0, 1/r^2),
  p = rho * d_in with rho = k / r by default (``flylora_sparsity`` / ``flylora_nonzeros``).
  It is stored dense: a dense (N, d_in) x (d_in, r) matmul is faster than a sparse one here.
- Ranks are chosen by top-k of the *signed* score A x + d, and the output uses the unbiased
  A x masked to those k ranks: dW x = (alpha / r) B (A x * mask).
  The authors' two implementations disagree (|A x + d| vs A x + d). We rank by the signed score
  because only then is the bias update monotone: raising d_i always raises rank i's chance to be
  picked; with |.| raising d_i *lowers* it whenever A_i x < -d_i, so d += u sign(mean(c) - c)
  could push an under-used rank further out.
- d is a non-gradient buffer updated once per optimizer step (``on_optimizer_step``, called via
  ``adapter_step_hooks``) from the per-rank selection counts c accumulated in *training* forward
  passes since the last step: d += u * sign(mean(c) - c). Eval passes never move d (one of the
  authors' versions updates d per forward call, at eval too). Under torch.distributed the counts
  are summed over ranks first so d stays identical everywhere.
- The update depends on the input, so a FlyLoRA layer cannot be merged into W0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from zlora.adapters.base import AdapterLayer, layer_generator
from zlora.adapters.checkpointing import is_recomputing
from zlora.adapters.config import AdapterConfig
from zlora.adapters.precision import keep_float32_buffers
from zlora.adapters.registry import register_kind
from zlora.config import ConfigError


def sparse_random_projection(rank: int, d_in: int, nonzeros: int, gen: torch.Generator) -> torch.Tensor:
    """(rank, d_in) with ``nonzeros`` entries per row ~ N(0, 1/rank^2), the rest zero."""
    cols = torch.rand(rank, d_in, generator=gen).argsort(dim=1)[:, :nonzeros]
    values = torch.randn(rank, nonzeros, generator=gen) / rank
    return torch.zeros(rank, d_in).scatter_(1, cols, values)


@dataclass
class FlyLoRAOptions:
    """``adapter.conf`` of flylora (Eq. 9); defaults follow the FlyLoRA authors' code."""
    k: int = 8                          # ranks active per token (top-k)
    sparsity: Optional[float] = None    # rho = nonzeros per A row / d_in; None = k / r
    nonzeros: Optional[int] = None      # overrides sparsity when set
    bias_lr: float = 1e-3               # u in d += u * sign(mean(c) - c)

    def check(self, cfg) -> None:
        if not 1 <= self.k <= cfg.rank:
            raise ConfigError(f"adapter.conf.k must be in [1, rank={cfg.rank}], got {self.k}")
        if self.sparsity is not None and not 0.0 < self.sparsity <= 1.0:
            raise ConfigError(f"adapter.conf.sparsity must be in (0, 1], got {self.sparsity}")
        if self.nonzeros is not None and self.nonzeros < 1:
            raise ConfigError(f"adapter.conf.nonzeros must be >= 1, got {self.nonzeros}")

    def nonzeros_for(self, d_in: int, rank: int) -> int:
        """Non-zeros per row of the sparse A: p = rho * d_in (authors' default rho = k / r)."""
        if self.nonzeros is not None:
            return min(self.nonzeros, d_in)
        rho = self.sparsity if self.sparsity is not None else self.k / rank
        return max(1, min(d_in, int(math.floor(d_in * rho))))


@register_kind(display="FlyLoRA", options=FlyLoRAOptions, language_free=True, mergeable=False,
               legacy={"flylora_k": "k", "flylora_sparsity": "sparsity", "flylora_nonzeros": "nonzeros",
                       "flylora_bias_lr": "bias_lr"})
@keep_float32_buffers("expert_bias")
class FlyLoRALayer(AdapterLayer):
    """lora_A: (r, d_in) frozen buffer; lora_B: (d_out, r) zeros; expert_bias d: (r,) float32
    (kept float32 through model casts: zlora.adapters.precision)."""

    kind = "flylora"
    mergeable = False

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str, **_: object):
        super().__init__(base_layer, cfg, name)
        self.top_k = cfg.options.k
        self.bias_lr = cfg.options.bias_lr
        self.nonzeros = cfg.options.nonzeros_for(self.in_features, cfg.rank)
        fac = self._factory()
        if fac["device"].type == "meta":
            a = torch.zeros(self.rank, self.in_features, **fac)
        else:
            a = sparse_random_projection(self.rank, self.in_features, self.nonzeros,
                                         layer_generator(cfg, name)).to(**fac)
        self.register_buffer("lora_A", a)
        self.lora_B = self._new_param(self.out_features, self.rank)
        self.register_buffer("expert_bias", torch.zeros(self.rank, device=fac["device"]))
        self.register_buffer("selection_counts", torch.zeros(self.rank, dtype=torch.long,
                                                             device=fac["device"]), persistent=False)

    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_A

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_B.t() * self.scaling

    def transform_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """h = A x: (..., r) -> A x masked to the top-k ranks of A x + d (Eq. 9)."""
        score = h.detach().float() + self.expert_bias
        top = torch.topk(score, self.top_k, dim=-1).indices
        mask = torch.zeros_like(h).scatter_(-1, top, 1.0)
        if self.training and not is_recomputing():
            self.selection_counts += self._count(top)
        return h * mask

    def _count(self, top: torch.Tensor) -> torch.Tensor:
        """Per-rank selections (r,) over the real tokens: rows the caller marked as padding
        (``valid_tokens``, set by the encoder for its padded groups) are not counted."""
        top = top.reshape(-1, self.top_k)
        valid = self._valid_tokens
        if valid is not None and valid.numel() == top.shape[0]:
            top = top[valid.to(top.device)]
        return torch.bincount(top.reshape(-1), minlength=self.rank)

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        """d += u * sign(mean(c) - c), then reset c (call after each optimizer.step())."""
        counts = self.selection_counts
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        c = counts.float()
        if c.sum() > 0:
            self.expert_bias += self.bias_lr * torch.sign(c.mean() - c)
        counts.zero_()
