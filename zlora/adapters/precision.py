"""Tensors that stay float32 whatever the model is cast to (the precision policy, README).

``model.to(torch.bfloat16)`` -- what older DeepSpeed releases do to the whole module, buffers
included -- would round a router's LID embeddings and FlyLoRA's load-balancing bias d to bf16.
d moves by u = 1e-3 per step: in bf16 an update vanishes once |d| >= 0.5 (the spacing there is
2^-8 ~ 0.0039 > 2u). A class decorated with ``keep_float32_buffers(...)`` casts the named buffers
back to float32 after every ``_apply`` (``.to``, ``.bfloat16()``, ``.half()``, ``.cuda()``) from the
float32 values they had before, so nothing is lost. Devices still follow the model.
"""
from __future__ import annotations

import torch
from torch import nn


def keep_float32_buffers(*names: str):
    """Class decorator: buffers ``names`` stay float32 through module casts."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        original = cls._apply

        def _apply(self, fn, recurse=True):
            saved = {n: self._buffers[n] for n in names if self._buffers.get(n) is not None}
            out = original(self, fn, recurse)
            for n, value in saved.items():
                now = self._buffers[n]
                if now.dtype != torch.float32:
                    self._buffers[n] = value.to(device=now.device, dtype=torch.float32)
            return out

        cls._apply = _apply
        cls.float32_buffers = tuple(names)
        return cls

    return wrap
