"""Zipper-LoRA-Soft (Eq. 14-15): B_merged(l) = B_shared diag(1 - p(l)) + B_spec(l) diag(p(l)).

p(l) in [0, 1]^r comes from the LID router (Eq. 16-18) and is the proportion given to the
language-specific column. A is shared by all languages (Sec. IV-A); B_shared and every B_spec(l)
are rank-r and start at zero, so the layer starts as exactly the base model.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zlora.adapters.base import AdapterLayer, copy_checked, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig, load_lid_embeddings
from zlora.adapters.registry import register_kind
from zlora.adapters.router import ROUTER_LEGACY, LIDRouter, RouterOptions


def build_router(cfg: AdapterConfig, name: str, base_layer: nn.Linear) -> LIDRouter:
    """A router seeded from (cfg.seed, name), on the base layer's device and dtype."""
    w = base_layer.weight
    return LIDRouter(load_lid_embeddings(cfg), cfg.rank, layer_generator(cfg, name + ".router"),
                     device=w.device, dtype=w.dtype)


def initial_b(layer: "ZipperSoftLayer", shared: torch.Tensor, spec: torch.Tensor, name: str, path: str) -> None:
    """Initial-B (Sec. IV-F): B_shared and every B_spec(l), as the paper does."""
    copy_checked(layer.B_shared, shared, f"{name}.B_shared", path)
    copy_checked(layer.B_spec, spec, f"{name}.B_spec", path)


@register_kind(display="Zipper-LoRA-Soft", options=RouterOptions, routed=True, initial_b=initial_b,
               structural=("router_per_layer",), legacy=ROUTER_LEGACY)
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
    # (B, L) per-row language posterior set by zlora.adapters.posterior.language_posterior_context
    # (language-agnostic decoding); None = the usual routing by language_context.
    _posterior: Optional[torch.Tensor] = None

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
        """(L, r) rank-wise weight of the language-specific column (Eq. 18), in B's dtype."""
        return self.gate(self.router_module()).to(device=self.B_shared.device, dtype=self.B_shared.dtype)

    def gate(self, p: torch.Tensor) -> torch.Tensor:
        """The router's float32 p -> mixing weights (Soft: p itself, Eq. 14)."""
        return p

    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_A

    # ---- per-row posterior input (language-agnostic inference; beyond the paper) ----------------
    def row_mixing(self, post: torch.Tensor) -> torch.Tensor:
        """post (B, L) language posterior -> p (B, r): the router (Eq. 16-18) applied to the
        posterior-weighted mixture of LID embeddings, sum_l post_l e(l). One-hot = mixing()[l]."""
        router = self.router_module
        emb = post.float() @ router.lid_embeddings
        return self.gate(router.route(emb)).to(self.B_shared.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._posterior is None:
            return super().forward(x)
        return self._forward_posterior(x, self._posterior)

    def _forward_posterior(self, x: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """Eq. 14 with p from the mixture embedding and B_spec = sum_l post_l B_spec(l)."""
        if x.shape[0] != post.shape[0]:
            raise ValueError(f"adapter layer {self.adapter_name!r}: the language posterior has "
                             f"{post.shape[0]} rows but the input {x.shape[0]}; route a sub-batch "
                             "with zlora.adapters.context.subset_routing")
        x3 = x.reshape(x.shape[0], -1, self.in_features)
        y = self.base_layer(x3)
        h = F.linear(self.dropout(x3).to(self.lora_A.dtype), self.lora_A) * self.scaling
        post = post.to(device=h.device, dtype=h.dtype)
        p = self.row_mixing(post).unsqueeze(1).to(h.dtype)                 # (B, 1, r)
        spec = torch.einsum("bl,lrd->brd", post, self.B_spec)
        delta = (h * (1 - p)) @ self.B_shared + torch.bmm(h * p, spec)
        return (y + delta.to(y.dtype)).view(*x.shape[:-1], self.out_features)

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
