"""Activation checkpointing that keeps each row's language through recomputation.

Adapters route every batch row by its language, which ``language_context`` sets for the
duration of a forward. Checkpointing recomputes a layer during ``backward()``, after that context
has closed, so plain checkpointing either fails (non-reentrant: ``NoLanguageContextError``) or,
with the reentrant variant, silently drops the adapters' gradients (measured: 126 of 162
trainable tensors of a zipper-soft model got none).

:func:`enable_activation_checkpointing` wraps the forward of each given block (a Whisper encoder
layer, an LLM decoder layer) in ``torch.utils.checkpoint.checkpoint(use_reentrant=False)`` with a
``context_fn`` whose recompute context restores, on every adapter layer inside the block, the
routing it saw in the forward (language batch and Zipper language posterior), and marks the
recomputation (:func:`is_recomputing`) so that side effects of a forward -- FlyLoRA's selection
counts, MoLE's LID history, KD's captured states -- happen once, not twice. Dropout replays the
same RNG (torch's default ``preserve_rng_state``). Outside training, or with gradients off, the
block runs as usual. Gradients equal those without checkpointing (tested for every kind).

The forward is replaced on the instance, so parameter names, state dicts and hooks are unchanged
(a forward hook on a checkpointed block fires once, after the original forward).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_local = threading.local()
_ORIG = "_zlora_forward_before_checkpointing"


def is_recomputing() -> bool:
    """True while a checkpointed block is being recomputed during backward."""
    return getattr(_local, "depth", 0) > 0


def enable_activation_checkpointing(blocks: Iterable[nn.Module]) -> int:
    """Checkpoint every block in ``blocks`` (idempotent). Returns how many are checkpointed."""
    n = 0
    for block in blocks:
        if _ORIG not in block.__dict__:
            block.__dict__[_ORIG] = block.forward
            block.forward = functools.partial(_checkpointed_forward, block)
        n += 1
    return n


def is_checkpointed(block: nn.Module) -> bool:
    return _ORIG in block.__dict__


def _checkpointed_forward(block: nn.Module, *args, **kwargs):
    forward = block.__dict__[_ORIG]
    if not (block.training and torch.is_grad_enabled()) or is_recomputing():
        return forward(*args, **kwargs)
    routing = _routing_snapshot(block)
    return checkpoint(forward, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _recompute_context(routing)),
                      **kwargs)


def _routing_snapshot(block: nn.Module) -> list[tuple]:
    """(adapter layer, language batch, posterior) of every adapter layer in ``block`` now."""
    return [(m, m._language_batch, m.__dict__.get("_posterior"))
            for m in block.modules() if getattr(m, "is_adapter_layer", False)]


@contextlib.contextmanager
def _recompute_context(routing: list[tuple]) -> Iterator[None]:
    """Put the forward's routing back for the recomputation, and flag it."""
    previous = [(m, m._language_batch, m.__dict__.get("_posterior")) for m, _, _ in routing]
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        for m, batch, post in routing:
            m._language_batch = batch
            if post is not None:
                m._posterior = post
        yield
    finally:
        _local.depth -= 1
        for m, batch, post in previous:
            m._language_batch = batch
            if post is not None:
                m._posterior = post
            else:
                m.__dict__.pop("_posterior", None)
