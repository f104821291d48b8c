"""Gated convolutional modality projector (paper Eq. 2, §V-B).

    H_enc (B, T_enc, d_enc)
      gate = Conv1d(d_enc -> h, kernel 4, stride 4)(H_enc);  up = Conv1d(same shape)(H_enc)
      z = SiLU(gate) * up                                     (B, ceil(T_enc/4), h)
      z = LayerNorm(z + Linear(z))                            linear + residual + LayerNorm
      H_proj = Linear(h -> d_llm)(z)                          (B, ceil(T_enc/4), d_llm)

With Whisper's 2x conv this is 8x overall: 100 Hz mel -> 12.5 Hz speech tokens.

**Ragged tail.** When T_enc is not a multiple of 4, the sequence is right-padded with zeros to the
next multiple, so the last token sees the final 1-3 frames plus zeros. Frames beyond each row's
length are zeroed first, so a padded batch row equals the row alone. Hence, exactly:

    tokens(T_enc) = ceil(T_enc / 4);   for mel input, tokens(T_mel) = ceil(ceil(T_mel / 2) / 4)
                                                                     = ceil(T_mel / 8)

Dropping the tail instead would lose up to 30 ms of speech at the end of every utterance.
"""
from __future__ import annotations

import torch
from torch import nn

from zlora.models.registry import PROJECTORS


@PROJECTORS.register("gated_conv")
class GatedConvProjector(nn.Module):
    def __init__(self, d_in: int, d_out: int, hidden_size: int | None = None, downsample: int = 4):
        super().__init__()
        h = hidden_size or d_out
        self.k = downsample
        self.gate = nn.Conv1d(d_in, h, kernel_size=downsample, stride=downsample)
        self.up = nn.Conv1d(d_in, h, kernel_size=downsample, stride=downsample)
        self.linear = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, d_out)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """ceil(T_enc / k) tokens per row (ragged tail zero-padded)."""
        return (lens + self.k - 1) // self.k

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T_enc, d_in), lens (B,) -> (B, ceil(T_enc/k), d_out), token lengths (B,)."""
        t = x.shape[1]
        valid = torch.arange(t, device=x.device)[None, :] < lens[:, None]
        x = x * valid[..., None].to(x.dtype)
        pad = (-t) % self.k
        x = nn.functional.pad(x.transpose(1, 2), (0, pad))
        z = nn.functional.silu(self.gate(x)) * self.up(x)
        z = z.transpose(1, 2)
        z = self.norm(z + self.linear(z))
        return self.out(z), self.output_lengths(lens)


def build_projector(kind: str, d_in: int, d_out: int, hidden_size: int | None, downsample: int) -> nn.Module:
    return PROJECTORS.get(kind)(d_in, d_out, hidden_size=hidden_size, downsample=downsample)
