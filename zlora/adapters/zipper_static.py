"""Zipper-LoRA-Static (Eq. 11): B_merged(l) = [B_shared, B_spec(l)], shared A.

Rank r splits into r_s shared columns and r_p = r - r_s language-specific ones
(``zipper_static_shared_rank``, default r/2 as in the paper's 16 + 16 example). Column i of
B_merged pairs with row i of the shared A, so rows 0..r_s-1 of A feed the shared columns.
With r_p = 0 this is exactly ``lora``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from zlora.adapters.base import AdapterLayer, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig
from zlora.adapters.registry import ADAPTER_KINDS


@ADAPTER_KINDS.register("zipper-static")
class ZipperStaticLayer(AdapterLayer):
    """lora_A: (r, d_in); B_shared: (r_s, d_out); B_spec: (L, r_p, d_out); B's start at zero.

    B banks are stored rank-major (row i = the paper's column b_i), see ZipperSoftLayer.
    """

    kind = "zipper-static"
    shared_up = False

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str, **_: object):
        super().__init__(base_layer, cfg, name)
        self.shared_rank = cfg.static_shared_rank
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
