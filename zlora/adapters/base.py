"""AdapterLayer: what every adapter kind shares.

A kind wraps a frozen ``nn.Linear`` (``base_layer``) and computes

    y = W0 x + b + (alpha / r) * B_merged(l) A(l) x          (Eq. 6-10)

for the language l of each batch row. A kind says what its down-projection A(l) (r, d_in) and its
scaled up-projection (alpha/r) * B_merged(l)^T (r, d_out) are; this class does the batching:

- language-homogeneous batch (or a kind whose A and B do not depend on the language): the base
  runs on the flattened (N, d_in) input and the adapter term is added with one in-place
  ``addmm_`` into its (N, d_out) output. The scaling lives in the small (r, d_out) matrix, never
  in a pass over the output (why this is not slower than PEFT, which scales and adds separately).
- mixed batch: A x is computed once for the whole batch (shared-A kinds). The language-shared
  part of B is one ``addmm_``; each row's language-specific bank is gathered and applied with
  one ``baddbmm`` (rows with >= r tokens) or, for short rows such as (B, d) inputs, where
  gathering an (r, d_out) matrix per row would cost more than the output, grouped by language
  (a loop over the <= L languages present, never over rows).

Inputs are (B, ..., d_in) with the batch first; the language of row b comes from
``language_context``. Trainable banks are single stacked tensors ((L, r, d_out) rather than L
modules), so every parameter gets a gradient (zeros for absent languages) and DDP never sees
unused parameters; note that Adam's momentum therefore still moves absent languages' banks.
"""
from __future__ import annotations

import math
import zlib
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zlora.adapters.config import AdapterConfig
from zlora.adapters.context import LanguageBatch


class NoLanguageContextError(RuntimeError):
    """A wrapped layer ran outside ``language_context`` (no silent fallback to the base model)."""


def layer_generator(cfg: AdapterConfig, name: str) -> torch.Generator:
    """CPU generator seeded from (cfg.seed, layer name): same config -> same init, any RNG state."""
    seed = (cfg.seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2 ** 63)
    return torch.Generator().manual_seed(seed)


def lora_a_init_(param: torch.Tensor, gen: torch.Generator) -> None:
    """LoRA's A init (PEFT: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(d_in), 1/sqrt(d_in))).

    Works on any leading shape (..., r, d_in) so stacked per-language A's get the same law.
    """
    if param.device.type == "meta":
        return
    bound = 1.0 / math.sqrt(param.shape[-1])
    values = (torch.rand(param.shape, generator=gen) * 2.0 - 1.0) * bound
    with torch.no_grad():
        param.copy_(values)


def copy_checked(dst: torch.Tensor, src: torch.Tensor, what: str, path: str) -> None:
    """dst <- src (no grad); a shape mismatch is a ValueError naming ``what`` and the file."""
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"{path}: {what} has shape {tuple(src.shape)}, the model expects "
                         f"{tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(src)


def gather_rows(bank: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """bank: (L, k, d), rows: (B,) -> (B, k, d) = bank[rows].

    index_select on the flattened (L, k*d) view: measured ~7x faster on CPU than on the 3-D
    tensor (whole contiguous rows are copied at once), and its backward is one index_add.
    """
    return bank.reshape(bank.shape[0], -1).index_select(0, rows).view(rows.numel(), *bank.shape[1:])


def named_adapter_layers(model: nn.Module) -> list[tuple[str, "AdapterLayer"]]:
    """(qualified name relative to ``model``, layer) for every adapter layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLayer)]


def get_adapter_config(model: nn.Module) -> Optional[AdapterConfig]:
    """The AdapterConfig the model's adapters were built from, or None without adapters."""
    layers = named_adapter_layers(model)
    return layers[0][1].cfg if layers else None


class AdapterLayer(nn.Module):
    """Base of every kind. Subclasses set ``kind`` and implement the hooks below.

    Hooks (shapes; s = alpha / r; L languages):
      down_weight(lang) -> (r, d_in)      A(l); ``lang`` is None for language-independent A
      down_bank() -> (L, r, d_in)         every A(l); only when ``shared_down`` is False
      transform_hidden(h) -> h            (..., r) -> (..., r); FlyLoRA's top-k mask
      up_weight(lang) -> (r, d_out)       s * B_merged(l)^T (homogeneous batches, merging)
      split_hidden(h3, rows) -> (h_shared, bt_shared, h_spec, spec_bank)
                                          mixed batches, only when ``shared_up`` is False:
                                          delta = h_shared @ bt_shared + h_spec[b] @ spec_bank[l_b]
                                          with h_shared (B, T, k_s) or None, bt_shared (k_s, d_out),
                                          h_spec (B, T, k_p) (per-row mixing and s folded in, so
                                          only the tiny (B, T, r) activations are rescaled, never a
                                          per-row copy of B), spec_bank (L, k_p, d_out) rank-major.
    """

    kind: ClassVar[str] = ""
    is_adapter_layer: ClassVar[bool] = True   # duck-typed by zlora.adapters.context / checkpointing
    shared_down: ClassVar[bool] = True   # A does not depend on the language
    shared_up: ClassVar[bool] = True     # B does not depend on the language
    mergeable: ClassVar[bool] = True     # dW(l) is input-independent

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"{name}: adapters wrap nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.cfg = cfg
        self.adapter_name = name
        self.languages = list(cfg.languages)
        self.n_languages = len(self.languages)
        self.rank = cfg.rank
        self.scaling = cfg.scaling
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self._language_batch: Optional[LanguageBatch] = None
        # (N,) bool over the flattened input rows: False = padding (set by a caller that pads,
        # e.g. the encoder's length groups); only FlyLoRA's load balancing reads it.
        self._valid_tokens: Optional[torch.Tensor] = None
        for p in base_layer.parameters():
            p.requires_grad_(False)

    # ---- helpers for subclasses -------------------------------------------------------------
    def _factory(self) -> dict:
        w = self.base_layer.weight
        return {"device": w.device, "dtype": w.dtype}

    def _new_param(self, *shape: int) -> nn.Parameter:
        return nn.Parameter(torch.zeros(*shape, **self._factory()))

    # ---- hooks (defaults for shared-A, shared-B kinds) -----------------------------------------
    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        raise NotImplementedError

    def down_bank(self) -> torch.Tensor:
        raise NotImplementedError

    def transform_hidden(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        raise NotImplementedError

    def split_hidden(self, h3: torch.Tensor, rows: torch.Tensor) -> tuple:
        raise NotImplementedError

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ..., d_in) -> (B, ..., d_out)."""
        batch = self._batch_for(x)
        out_shape = (*x.shape[:-1], self.out_features)
        x2 = x.reshape(-1, self.in_features)
        # The base runs on the flattened (N, d_in) input so its (N, d_out) output is a fresh,
        # non-view tensor: the adapter term is then added in place (addmm_), with no extra pass
        # over the output and no CopySlices clone of the output gradient in backward.
        y = self.base_layer(x2)
        xd = self.dropout(x2)
        if batch is None or batch.single is not None or (self.shared_down and self.shared_up):
            y = self._add_homogeneous(y, xd, None if batch is None else batch.single)
        else:
            y = self._add_mixed(y, xd, batch, x.shape[0])
        return y.view(out_shape)

    def _batch_for(self, x: torch.Tensor) -> Optional[LanguageBatch]:
        batch = self._language_batch
        if batch is None:
            if self.n_languages == 0:      # language-free lora/flylora: nothing to route
                return None
            raise NoLanguageContextError(
                f"adapter layer {self.adapter_name!r} ({self.kind}) ran outside language_context; "
                f"wrap the forward in `with language_context(model, langs):`")
        if batch.size != 1 and (x.dim() < 2 or x.shape[0] != batch.size):
            got = tuple(x.shape)
            raise ValueError(f"adapter layer {self.adapter_name!r}: language_context has "
                             f"{batch.size} rows but the input has shape {got} (batch dim first); "
                             f"enter a nested language_context with one language per input row")
        return batch

    def _add_homogeneous(self, y: torch.Tensor, x2: torch.Tensor, lang: Optional[int]) -> torch.Tensor:
        """y: (N, d_out) base output, updated in place; x2: (N, d_in)."""
        a = self.down_weight(lang)
        h = self.transform_hidden(F.linear(x2.to(a.dtype), a))
        return y.addmm_(h.to(y.dtype), self.up_weight(lang).to(y.dtype))

    def _add_mixed(self, y: torch.Tensor, x2: torch.Tensor, batch: LanguageBatch,
                   n_rows: int) -> torch.Tensor:
        """y: (N, d_out) base output; x2: (N, d_in) with N = n_rows * T."""
        d_out, t = self.out_features, x2.shape[0] // n_rows    # explicit T: N may be 0
        x3 = x2.reshape(n_rows, t, self.in_features)
        rows = batch.on(y.device)
        # Gather one (r, d) matrix per row only when it is no bigger than that row's tokens x r;
        # shorter rows (e.g. (B, d) inputs) are grouped by language instead.
        use_bmm = x3.shape[1] >= self.rank
        h3 = self.transform_hidden(self._down_mixed(x3, batch, use_bmm))
        if self.shared_up:
            return y.addmm_(h3.reshape(-1, self.rank).to(y.dtype), self.up_weight(None).to(y.dtype))
        h_shared, bt_shared, h_spec, bank = self.split_hidden(h3, rows)
        if h_shared is not None and h_shared.shape[-1]:
            y = y.addmm_(h_shared.reshape(-1, h_shared.shape[-1]).to(y.dtype), bt_shared.to(y.dtype))
        if not h_spec.shape[-1]:
            return y
        h_spec, bank = h_spec.to(y.dtype), bank.to(y.dtype)
        # Per-row updates go through a (B, T, d_out) view of y. In place on a view would make
        # autograd clone the output gradient in backward, so with autograd on we add out of
        # place (one copy either way); without it (inference) in place is free.
        in_place = not (torch.is_grad_enabled() and (y.requires_grad or h_spec.requires_grad
                                                      or bank.requires_grad))
        y3 = y.view(n_rows, t, d_out)
        if use_bmm:
            bank_rows = gather_rows(bank, rows)
            y3 = y3.baddbmm_(h_spec, bank_rows) if in_place else torch.baddbmm(y3, h_spec, bank_rows)
            return y3.view(-1, d_out)
        delta = y3 if in_place else h_spec.new_zeros(y3.shape)
        for lang in batch.present:
            idx = batch.rows_of(lang, y.device)
            delta.index_add_(0, idx, torch.matmul(h_spec.index_select(0, idx), bank[lang]))
        return (delta if in_place else y3 + delta).view(-1, d_out)

    def _down_mixed(self, x3: torch.Tensor, batch: LanguageBatch, use_bmm: bool) -> torch.Tensor:
        """x3: (B, T, d_in) -> h: (B, T, r); A x computed once when A is shared."""
        if self.shared_down:
            a = self.down_weight(None)
            return F.linear(x3.to(a.dtype), a)
        bank = self.down_bank()
        x3 = x3.to(bank.dtype)
        if use_bmm:
            # (B, r, d_in) @ (B, d_in, T): both operands keep their natural strides, which
            # measured ~2x faster than x3 @ A_rows^T with a transposed gathered bank.
            a_rows = gather_rows(bank, batch.on(x3.device))
            return torch.bmm(a_rows, x3.transpose(1, 2)).transpose(1, 2)
        h3 = x3.new_zeros(x3.shape[0], x3.shape[1], self.rank)
        for lang in batch.present:
            idx = batch.rows_of(lang, x3.device)
            h3 = h3.index_copy(0, idx, F.linear(x3.index_select(0, idx), bank[lang]))
        return h3

    # ---- merging -----------------------------------------------------------------------------
    def delta_weight(self, lang: Optional[int]) -> torch.Tensor:
        """dW(l) = s * B_merged(l) A(l): (d_out, d_in) (Eq. 7-11, 14)."""
        if not self.mergeable:
            raise ValueError(f"{self.kind} adapters cannot be merged: their update depends on the input")
        return self.up_weight(lang).t() @ self.down_weight(lang)

    def merged_linear(self, lang: Optional[int]) -> nn.Linear:
        """A plain nn.Linear equal to this layer for language ``lang`` (no adapter at inference)."""
        base = self.base_layer
        out = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            dw = self.delta_weight(lang).to(base.weight.dtype)
            out.weight.copy_(base.weight + dw)
            if base.bias is not None:
                out.bias.copy_(base.bias)
        out.weight.requires_grad_(base.weight.requires_grad)
        if out.bias is not None:
            out.bias.requires_grad_(base.bias.requires_grad)
        return out

    # ---- state ----------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Adapter and router tensors (params + persistent buffers), without base_layer.*."""
        return {k: v for k, v in self.state_dict(keep_vars=True).items()
                if not k.startswith("base_layer.")}

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, rank={self.rank}, scaling={self.scaling:g}, "
                f"languages={self.n_languages}")
