"""Independent-LoRA (Eq. 8): dW(l) = (alpha / r) B(l) A(l), nothing shared between languages."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from zlora.adapters.base import AdapterLayer, copy_checked, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig
from zlora.adapters.registry import register_kind


def initial_b(layer: "IndependentLayer", shared: torch.Tensor, spec: torch.Tensor, name: str, path: str) -> None:
    """Initial-B: lora_B(l) <- the source's B_spec(l)."""
    copy_checked(layer.lora_B, spec, f"{name}.B_spec", path)


@register_kind(display="Independent-LoRA", initial_b=initial_b)
class IndependentLayer(AdapterLayer):
    """lora_A: (L, r, d_in), each language LoRA-initialised; lora_B: (L, r, d_out), zeros.

    lora_B is stored rank-major (row i = the paper's column b_i, i.e. B(l)^T), unlike lora's
    PEFT-style (d_out, r): gathering one language per batch row then yields the (r, d_out)
    matrices a batched matmul wants without a transposed copy (measured 2x cheaper).
    """

    kind = "independent"
    shared_down = False
    shared_up = False

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str, **_: object):
        super().__init__(base_layer, cfg, name)
        self.lora_A = self._new_param(self.n_languages, self.rank, self.in_features)
        self.lora_B = self._new_param(self.n_languages, self.rank, self.out_features)
        lora_a_init_(self.lora_A, layer_generator(cfg, name))

    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_A[lang]

    def down_bank(self) -> torch.Tensor:
        return self.lora_A

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.lora_B[lang] * self.scaling      # Eq. 8 (transposed)

    def split_hidden(self, h3: torch.Tensor, rows: torch.Tensor) -> tuple:
        return None, None, h3 * self.scaling, self.lora_B
