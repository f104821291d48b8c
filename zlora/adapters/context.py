"""Per-sample language routing without touching the wrapped model's forward signature.

``language_context(model, langs)`` sets a :class:`LanguageBatch` on every adapter layer inside
``model`` for the duration of a ``with`` block (nested blocks and exceptions restore the previous
state). Wrapped layers read it in their forward; outside any context they raise, because a silent
fallback to the base model is a known bug class (PEFT #2090).

Wrapped layers expect the batch dimension first; an input whose first dimension does not match
the context's rows is an error, so a reshaped batch (e.g. utterances split into chunks, B -> B*n)
needs a nested context with one language per new row. Activation checkpointing that recomputes a
wrapped layer during ``backward()`` must run that backward inside the same context (outside it the
recomputation raises rather than silently using another batch's languages).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, Union

import torch
from torch import nn

Langs = Union[Sequence[str], torch.Tensor]


class LanguageBatch:
    """Validated language indices of one batch.

    index: (B,) long, one language per batch row; B == 1 broadcasts to any batch size.
    single: the language index when the batch is language-homogeneous (fast path), else None.
    """

    def __init__(self, index: torch.Tensor, n_languages: int):
        self.index = index
        self.size = int(index.numel())
        cpu = index.detach().cpu()
        first = int(cpu[0])
        self.single = first if bool((cpu == first).all()) else None
        self._present = cpu.unique().tolist()
        self._cpu = cpu
        self._n_languages = n_languages
        self._cache: dict = {}

    @property
    def present(self) -> list[int]:
        """Sorted language indices present in the batch."""
        return self._present

    def on(self, device: torch.device) -> torch.Tensor:
        """(B,) index on ``device`` (cached, so a model's many layers copy it once)."""
        key = ("index", device)
        if key not in self._cache:
            self._cache[key] = self.index.to(device)
        return self._cache[key]

    def rows_of(self, lang: int, device: torch.device) -> torch.Tensor:
        """Batch rows of language ``lang`` as a (n_l,) long tensor on ``device`` (cached)."""
        key = ("rows", lang, device)
        if key not in self._cache:
            self._cache[key] = (self._cpu == lang).nonzero().squeeze(1).to(device)
        return self._cache[key]


def to_language_batch(langs: Langs, languages: Sequence[str]) -> LanguageBatch:
    """Codes or indices -> LanguageBatch; unknown codes / out-of-range indices raise ValueError."""
    n = len(languages)
    if isinstance(langs, torch.Tensor):
        if langs.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"language indices must be an integer tensor, got {langs.dtype}")
        index = langs.reshape(-1).long()
        if index.numel() == 0:
            raise ValueError("language_context got an empty batch of languages")
        bad = index[(index < 0) | (index >= n)]
        if bad.numel():
            raise ValueError(f"language index {int(bad[0])} out of range for {n} languages "
                             f"({', '.join(languages)})")
        return LanguageBatch(index, n)
    if isinstance(langs, str):
        langs = [langs]
    lookup = {code: i for i, code in enumerate(languages)}
    unknown = sorted({c for c in langs if c not in lookup}, key=str)
    if unknown:
        raise ValueError(f"language code(s) {', '.join(map(repr, unknown))} not in the adapter's "
                         f"languages ({', '.join(languages) or 'none'})")
    if len(langs) == 0:
        raise ValueError("language_context got an empty batch of languages")
    return LanguageBatch(torch.tensor([lookup[c] for c in langs], dtype=torch.long), n)


def _adapter_layers(model: nn.Module) -> list:
    # Duck-typed (AdapterLayer.is_adapter_layer): base imports this module, not the reverse.
    return [m for m in model.modules() if getattr(m, "is_adapter_layer", False)]


@contextlib.contextmanager
def language_context(model: nn.Module, langs: Langs) -> Iterator[None]:
    """Route every adapter layer in ``model`` by ``langs`` (codes or a (B,) LongTensor of indices).

    A model without adapter layers (e.g. stage 1, or a merged copy) accepts any context as a no-op,
    so callers can always enter it. Language-free layers (``languages: []``) are left alone; all
    other adapter layers in ``model`` must share one language list.
    """
    layers = [m for m in _adapter_layers(model) if m.n_languages]
    if not layers:
        yield
        return
    languages = layers[0].languages
    for layer in layers[1:]:
        if layer.languages != languages:
            raise ValueError(f"adapter layers disagree on languages: {layer.adapter_name} has "
                             f"{layer.languages}, {layers[0].adapter_name} has {languages}")
    with set_on_layers(layers, "_language_batch", to_language_batch(langs, languages)):
        yield


@contextlib.contextmanager
def set_on_layers(layers: list, attr: str, value) -> Iterator[None]:
    """Set ``attr`` on every layer for the duration; restore each previous value on exit (so
    contexts nest and an exception never leaves a batch's routing behind)."""
    previous = [getattr(layer, attr) for layer in layers]
    try:
        for layer in layers:
            setattr(layer, attr, value)
        yield
    finally:
        for layer, prev in zip(layers, previous):
            setattr(layer, attr, prev)


@contextlib.contextmanager
def subset_routing(model: nn.Module, rows: torch.Tensor) -> Iterator[None]:
    """Within an active routing (``language_context`` and/or a Zipper language posterior), route
    a forward over a sub-batch: input row i is row ``rows[i]`` of the outer batch (e.g. the pieces
    of one length group, zlora.models.pieces). rows: (n,) long. A layer without routing is left
    alone, and a one-row (broadcast) context stays as it is."""
    layers = _adapter_layers(model)
    subsets: dict = {}          # id(outer batch) -> its sub-batch, built once for all layers
    previous = [(layer._language_batch, layer.__dict__.get("_posterior")) for layer in layers]
    try:
        for layer, (batch, post) in zip(layers, previous):
            if batch is not None and batch.size != 1:
                if id(batch) not in subsets:
                    subsets[id(batch)] = LanguageBatch(
                        batch.index.index_select(0, rows.to(batch.index.device)), batch._n_languages)
                layer._language_batch = subsets[id(batch)]
            if post is not None:
                layer._posterior = post.index_select(0, rows.to(post.device))
        yield
    finally:
        for layer, (batch, post) in zip(layers, previous):
            layer._language_batch = batch
            if post is not None:
                layer._posterior = post


def valid_tokens_context(model: nn.Module, valid: torch.Tensor):
    """Mark padding for every adapter layer in ``model``: valid (N,) bool over the flattened rows
    of the inputs they will see (False = padding). Only counting statistics read it (FlyLoRA's
    load balancing); outputs never depend on it."""
    return set_on_layers(_adapter_layers(model), "_valid_tokens", valid)
