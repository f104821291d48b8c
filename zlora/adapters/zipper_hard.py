"""Zipper-LoRA-Hard (Eq. 12-13): binary rank selection s = 1[p >= tau] with a straight-through
gradient to the router.

Which bank does s_i = 1 select? The paper contradicts itself: the text after Eq. 13 says column i
comes from B_spec if s_i = 0 and from B_shared otherwise, while Sec. IV-D calls p "the rank-wise
proportion assigned to the language-specific columns" and Soft (Eq. 14) gives B_spec the weight p.
We take the reading consistent with Soft: s_i = 1 selects B_spec(l), s_i = 0 selects B_shared, i.e.
B_merged(l) = B_shared diag(1 - s) + B_spec(l) diag(s) -- Soft with p replaced by its threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from zlora.adapters.registry import register_kind
from zlora.adapters.router import ROUTER_LEGACY, RouterOptions
from zlora.adapters.zipper_soft import ZipperSoftLayer, initial_b
from zlora.config import ConfigError


@dataclass
class ZipperHardOptions(RouterOptions):
    """``adapter.conf`` of zipper-hard: the router's options and the threshold tau of Eq. 12."""
    tau: float = 0.5

    def check(self, cfg) -> None:
        super().check(cfg)
        if not 0.0 < self.tau < 1.0:
            raise ConfigError(f"adapter.conf.tau must be in (0, 1), got {self.tau}")


class ThresholdSTE(torch.autograd.Function):
    """Forward: exactly 1[p >= tau] (Eq. 12). Backward: identity (straight-through, Bengio 2013)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, tau: float) -> torch.Tensor:
        return (p >= tau).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


@register_kind(display="Zipper-LoRA-Hard", options=ZipperHardOptions, routed=True, initial_b=initial_b,
               structural=("router_per_layer",), legacy={**ROUTER_LEGACY, "tau": "tau"})
class ZipperHardLayer(ZipperSoftLayer):
    """Same banks and router as zipper-soft; the mixing weights are binary (Eq. 13)."""

    kind = "zipper-hard"

    def gate(self, p: torch.Tensor) -> torch.Tensor:
        """Binary selection s = 1[p >= tau] of the float32 p (Eq. 12; also for a per-row
        posterior input); gradients reach the router through the STE."""
        return ThresholdSTE.apply(p, self.cfg.options.tau)
