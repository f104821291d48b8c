"""Zipper-LoRA-Hard (Eq. 12-13): binary rank selection s = 1[p >= tau] with a straight-through
gradient to the router.

Which bank does s_i = 1 select? The paper contradicts itself: the text after Eq. 13 says column i
comes from B_spec if s_i = 0 and from B_shared otherwise, while Sec. IV-D calls p "the rank-wise
proportion assigned to the language-specific columns" and Soft (Eq. 14) gives B_spec the weight p.
We take the reading consistent with Soft: s_i = 1 selects B_spec(l), s_i = 0 selects B_shared, i.e.
B_merged(l) = B_shared diag(1 - s) + B_spec(l) diag(s) -- Soft with p replaced by its threshold.
"""
from __future__ import annotations

import torch

from zlora.adapters.registry import ADAPTER_KINDS
from zlora.adapters.zipper_soft import ZipperSoftLayer


class ThresholdSTE(torch.autograd.Function):
    """Forward: exactly 1[p >= tau] (Eq. 12). Backward: identity (straight-through, Bengio 2013)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, tau: float) -> torch.Tensor:
        return (p >= tau).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


@ADAPTER_KINDS.register("zipper-hard")
class ZipperHardLayer(ZipperSoftLayer):
    """Same banks and router as zipper-soft; the mixing weights are binary (Eq. 13)."""

    kind = "zipper-hard"

    def gate(self, p: torch.Tensor) -> torch.Tensor:
        """Binary selection s = 1[p >= tau] of the float32 p (Eq. 12; also for a per-row
        posterior input); gradients reach the router through the STE."""
        return ThresholdSTE.apply(p, self.cfg.tau)
