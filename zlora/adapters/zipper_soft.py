"""Zipper-LoRA-Soft (Eq. 14-15): B_merged(l) = B_shared diag(1 - p(l)) + B_spec(l) diag(p(l)).

p(l) in [0, 1]^r comes from the LID router (Eq. 16-18) and is the proportion given to the
language-specific column. A is shared by all languages (Sec. IV-A); B_shared and every B_spec(l)
are rank-r and start at zero, so the layer starts as exactly the base model.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from zlora.adapters.base import AdapterLayer, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig, load_lid_embeddings
from zlora.adapters.registry import ADAPTER_KINDS
from zlora.adapters.router import LIDRouter


def build_router(cfg: AdapterConfig, name: str, base_layer: nn.Linear) -> LIDRouter:
    """A router seeded from (cfg.seed, name), on the base layer's device and dtype."""
    w = base_layer.weight
    return LIDRouter(load_lid_embeddings(cfg), cfg.rank, layer_generator(cfg, name + ".router"),
                     device=w.device, dtype=w.dtype)


@ADAPTER_KINDS.register("zipper-soft")
class ZipperSoftLayer(AdapterLayer):
    """lora_A: (r, d_in); B_shared: (r, d_out); B_spec: (L, r, d_out); router -> p: (L, r).

    The banks are stored rank-major: row i is the paper's column b_i (B^T), so the rank-wise
    mixing of Eq. 15 scales rows, and gathering one language per batch row gives the (r, d_out)
    matrices a batched matmul wants without a transposed copy (measured 2x cheaper).

    ``shared_router``: a router owned by another layer (``router_per_layer: false``). It is kept
    out of this module's children so it is saved, counted and optimised exactly once.
    """

    kind = "zipper-soft"
    shared_up = False

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str,
                 shared_router: Optional[LIDRouter] = None, **_: object):
        super().__init__(base_layer, cfg, name)
        self.lora_A = self._new_param(self.rank, self.in_features)
        self.B_shared = self._new_param(self.rank, self.out_features)
        self.B_spec = self._new_param(self.n_languages, self.rank, self.out_features)
        lora_a_init_(self.lora_A, layer_generator(cfg, name))
        if shared_router is None:
            self.router = build_router(cfg, name, base_layer)
        else:
            self.__dict__["_shared_router"] = shared_router

    @property
    def router_module(self) -> LIDRouter:
        return self._modules["router"] if "router" in self._modules else self.__dict__["_shared_router"]

    def mixing(self) -> torch.Tensor:
        """(L, r) rank-wise weight of the language-specific column (Eq. 18)."""
        return self.router_module().to(device=self.B_shared.device, dtype=self.B_shared.dtype)

    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_A

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        p = self.mixing()[lang].unsqueeze(1)                               # (r, 1)
        merged = self.B_shared * (1 - p) + self.B_spec[lang] * p          # Eq. 14 / 15 (B^T)
        return merged * self.scaling

    def split_hidden(self, h3: torch.Tensor, rows: torch.Tensor) -> tuple:
        """Eq. 14 applied to h = A x instead of to B (diag(p) commutes onto the rank axis):
        B_merged(l) h = B_shared ((1 - p(l)) * h) + B_spec(l) (p(l) * h)."""
        p = self.mixing().index_select(0, rows).unsqueeze(1).to(h3.dtype)     # (B, 1, r)
        h_scaled = h3 * self.scaling
        return h_scaled * (1 - p), self.B_shared, h_scaled * p, self.B_spec
