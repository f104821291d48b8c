"""Vanilla LoRA (Eq. 7): dW = (alpha / r) B A, one A and B shared by all languages."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from zlora.adapters.base import AdapterLayer, copy_checked, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig
from zlora.adapters.registry import register_kind


def initial_b(layer: "LoRALayer", shared: torch.Tensor, spec: torch.Tensor, name: str, path: str) -> None:
    """Initial-B: lora_B <- the source's B_shared (PEFT layout (d_out, r))."""
    copy_checked(layer.lora_B, shared.t(), f"{name}.B_shared", path)


@register_kind(display="Vanilla-LoRA", language_free=True, initial_b=initial_b)
class LoRALayer(AdapterLayer):
    """lora_A: (r, d_in), LoRA init; lora_B: (d_out, r), zeros (starts as the base model)."""

    kind = "lora"

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str, **_: object):
        super().__init__(base_layer, cfg, name)
        self.lora_A = self._new_param(self.rank, self.in_features)
        self.lora_B = self._new_param(self.out_features, self.rank)
        lora_a_init_(self.lora_A, layer_generator(cfg, name))

    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_A

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_B.t() * self.scaling          # Eq. 7
