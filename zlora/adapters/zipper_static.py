"""Zipper-LoRA-Static (Eq. 11): B_merged(l) = [B_shared, B_spec(l)], shared A.

Rank r splits into r_s shared columns and r_p = r - r_s language-specific ones
(``zipper_static_shared_rank``, default r/2 as in the paper's 16 + 16 example). Column i of
B_merged pairs with row i of the shared A, so rows 0..r_s-1 of A feed the shared columns.
With r_p = 0 this is exactly ``lora``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from zlora.adapters.base import AdapterLayer, copy_checked, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig
from zlora.adapters.registry import register_kind
from zlora.config import ConfigError


@dataclass
class ZipperStaticOptions:
    """``adapter.conf`` of zipper-static: r_s shared columns of Eq. 11 (null = rank // 2, the
    paper's 16 + 16 example; resolved when the config is built)."""
    shared_rank: Optional[int] = None

    def check(self, cfg) -> None:
        if self.shared_rank is None:
            self.shared_rank = cfg.rank // 2
        if not 0 <= self.shared_rank <= cfg.rank:
            raise ConfigError(f"adapter.conf.shared_rank must be in [0, rank={cfg.rank}], got {self.shared_rank}")


def initial_b(layer: "ZipperStaticLayer", shared: torch.Tensor, spec: torch.Tensor, name: str, path: str) -> None:
    """Initial-B: B_shared <- the source's first r_s rank columns of B_shared, B_spec(l) <- the
    last r_p columns of B_spec(l); columns keep their rank index (column i multiplies row i of A)."""
    r_s = layer.shared_rank
    copy_checked(layer.B_shared, shared[:r_s], f"{name}.B_shared[:{r_s}]", path)
    copy_checked(layer.B_spec, spec[:, r_s:], f"{name}.B_spec[:, {r_s}:]", path)


@register_kind(display="Zipper-LoRA-Static", options=ZipperStaticOptions, initial_b=initial_b,
               structural=("shared_rank",), legacy={"zipper_static_shared_rank": "shared_rank"})
class ZipperStaticLayer(AdapterLayer):
    """lora_A: (r, d_in); B_shared: (r_s, d_out); B_spec: (L, r_p, d_out); B's start at zero.

    B banks are stored rank-major (row i = the paper's column b_i), see ZipperSoftLayer.
    """

    kind = "zipper-static"
    shared_up = False

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str, **_: object):
        super().__init__(base_layer, cfg, name)
        self.shared_rank = cfg.options.shared_rank
        self.specific_rank = self.rank - self.shared_rank
        # With no language-specific columns every language shares B: take the one-matmul path.
        self.shared_up = self.specific_rank == 0
        self.lora_A = self._new_param(self.rank, self.in_features)
        self.B_shared = self._new_param(self.shared_rank, self.out_features)
        self.B_spec = self._new_param(self.n_languages, self.specific_rank, self.out_features)
        lora_a_init_(self.lora_A, layer_generator(cfg, name))

    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_A

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        if self.specific_rank == 0 or lang is None:
            if self.specific_rank:
                raise ValueError(f"{self.adapter_name}: zipper-static needs a language")
            return self.B_shared * self.scaling
        merged = torch.cat([self.B_shared, self.B_spec[lang]], dim=0)      # Eq. 11 (transposed)
        return merged * self.scaling

    def split_hidden(self, h3: torch.Tensor, rows: torch.Tensor) -> tuple:
        """Eq. 11 as two products: h[:, :r_s] feeds B_shared, h[:, r_s:] feeds B_spec(l)."""
        r_s = self.shared_rank
        return h3[..., :r_s] * self.scaling, self.B_shared, h3[..., r_s:] * self.scaling, self.B_spec
