"""Gated convolutional modality projector (paper Eq. 2, §V-B).

    H_enc (B, T_enc, d_enc)
      gate = Conv1d(d_enc -> h, kernel k, stride k)(H_enc);  up = Conv1d(same shape)(H_enc)
      z = SiLU(gate) * up                                     (B, ceil(T_enc/k), h)
      z = LayerNorm(z + Linear(z))                            linear + residual + LayerNorm
      H_proj = Linear(h -> d_llm)(z)                          (B, ceil(T_enc/k), d_llm)

k = 4 in the paper: with Whisper's 2x conv this is 8x overall, 100 Hz mel -> 12.5 Hz speech tokens.

**Computed as one linear layer.** A convolution whose stride equals its kernel sees each frame
once, so both convolutions are one ``nn.Linear(k * d_enc, 2 * h)`` over k stacked frames
(``gate_up``; rows ``[:h]`` are the gate, ``[h:]`` the up branch) -- the same function, with
weight ``W_lin[o, j * d + c] = W_conv[o, c, j]``. Measured on the mini12 stage-1 shapes
(B 47, T 152, d 512, h 256, k 8; fp32, 2 CPU threads): forward + backward 62 ms as one linear vs
140 ms as two mkldnn convolutions. Checkpoints with the convolution layout (``gate.weight``
(h, d, k), ``up.weight``, and biases) are converted on load.

**Ragged tail.** When T_enc is not a multiple of k, the sequence is right-padded with zeros to the
next multiple, so the last token sees the final 1..k-1 frames plus zeros. Frames beyond each
row's length are zeroed first, so a padded batch row equals the row alone. Hence, exactly:

    tokens(T_enc) = ceil(T_enc / k);   for mel input, tokens(T_mel) = ceil(ceil(T_mel / 2) / k)

Dropping the tail instead would lose up to (k-1) x 20 ms of speech at the end of every utterance.

**Options.** ``model.projector: {kind: gated_conv, conf: {downsample: 4, hidden_size: null}}``;
``conf`` is checked against :class:`GatedConvOptions` (every projector declares its own ``Options``
dataclass, whose fields are its constructor's keyword arguments; see :func:`build_projector`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from zlora.config import ConfigError, from_dict, to_dict
from zlora.models.registry import PROJECTORS


@dataclass
class GatedConvOptions:
    """``model.projector.conf`` of ``gated_conv`` (§V-B)."""
    downsample: int = 4                   # k encoder frames per speech token (paper: 4, 12.5 Hz)
    hidden_size: int | None = None        # width of the gated branch; default: the LLM hidden size

    def __post_init__(self):
        if self.downsample < 1:
            raise ConfigError(f"model.projector.conf.downsample: must be >= 1, got {self.downsample}")


@PROJECTORS.register("gated_conv")
class GatedConvProjector(nn.Module):
    Options = GatedConvOptions

    def __init__(self, d_in: int, d_out: int, hidden_size: int | None = None, downsample: int = 4):
        super().__init__()
        self.k, self.d_in, self.h = downsample, d_in, hidden_size or d_out
        # nn.Linear's init (kaiming-uniform, fan_in = k * d_in) is the two Conv1d's init.
        self.gate_up = nn.Linear(downsample * d_in, 2 * self.h)
        self.linear = nn.Linear(self.h, self.h)
        self.norm = nn.LayerNorm(self.h)
        self.out = nn.Linear(self.h, d_out)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """ceil(T_enc / k) tokens per row (ragged tail zero-padded)."""
        return (lens + self.k - 1) // self.k

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T_enc, d_in), lens (B,) -> (B, ceil(T_enc/k), d_out), token lengths (B,)."""
        b, t, d = x.shape
        valid = torch.arange(t, device=x.device)[None, :] < lens[:, None]
        x = x * valid[..., None].to(x.dtype)
        pad = (-t) % self.k
        x = nn.functional.pad(x, (0, 0, 0, pad))                  # (B, k * ceil(T/k), d)
        gate, up = self.gate_up(x.reshape(b, -1, self.k * d)).chunk(2, dim=-1)
        z = nn.functional.silu(gate) * up                         # (B, ceil(T/k), h)
        z = self.norm(z + self.linear(z))
        return self.out(z), self.output_lengths(lens)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        conv_to_linear(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def conv_to_linear(sd: dict, prefix: str) -> None:
    """In place: ``gate.*`` / ``up.*`` Conv1d tensors (weight (h, d, k)) of an older checkpoint ->
    ``gate_up.*`` of the equivalent linear layer (weight (2h, k * d))."""
    keys = [f"{prefix}{n}.{p}" for n in ("gate", "up") for p in ("weight", "bias")]
    if not all(k in sd for k in keys):
        return
    gw, gb, uw, ub = (sd.pop(k) for k in keys)
    as_linear = lambda w: w.permute(0, 2, 1).reshape(w.shape[0], -1)   # [o, c, j] -> [o, j*d + c]
    sd[f"{prefix}gate_up.weight"] = torch.cat([as_linear(gw), as_linear(uw)])
    sd[f"{prefix}gate_up.bias"] = torch.cat([gb, ub])


def projector_options(kind: str, conf: dict, where: str = "model.projector"):
    """``conf`` as projector ``kind``'s typed ``Options``. An unknown kind (listing the known ones),
    an unknown key (naming it and the projector) or a wrong type is a ConfigError."""
    try:
        cls = PROJECTORS.get(kind)
    except ConfigError as e:
        raise ConfigError(f"{where}.kind: {e}") from e
    known = [f.name for f in dataclasses.fields(cls.Options) if f.init]
    unknown = sorted(set(conf) - set(known))
    if unknown:
        raise ConfigError(f"{where}.conf: unknown key(s) {', '.join(repr(k) for k in unknown)} for "
                          f"projector {kind}; its options: {', '.join(known) or 'none'}")
    return from_dict(cls.Options, dict(conf), f"{where}.conf")


def resolve_projector_conf(kind: str, conf: dict, where: str = "model.projector") -> dict:
    """``conf`` checked (:func:`projector_options`) and completed with the projector's defaults."""
    return to_dict(projector_options(kind, conf, where))


def build_projector(kind: str, d_in: int, d_out: int, conf: dict | None = None) -> nn.Module:
    """Projector ``kind`` from d_in (encoder) to d_out (LLM) features; ``conf`` (its options,
    ``model.projector.conf``) is checked, completed with defaults and passed as keywords."""
    opts = projector_options(kind, conf or {})
    return PROJECTORS.get(kind)(d_in, d_out, **{f.name: getattr(opts, f.name)
                                                for f in dataclasses.fields(opts)})
