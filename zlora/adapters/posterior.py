"""Per-row language posteriors for Zipper-LoRA routers (language-agnostic inference; beyond the
Zipper-LoRA paper): ``language_posterior_context(model, post)`` with post (B, L) over the adapter's
languages makes every zipper-soft/-hard layer route row b by the mixture embedding
sum_l post[b, l] e(l) and use sum_l post[b, l] B_spec(l). A one-hot posterior reproduces
known-language routing; layers of other kinds are untouched (they keep language_context)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from zlora.adapters.context import set_on_layers


def _zipper_layers(model: nn.Module) -> list:
    from zlora.adapters.zipper_soft import ZipperSoftLayer

    return [m for m in model.modules() if isinstance(m, ZipperSoftLayer)]


def has_zipper_router(model: nn.Module) -> bool:
    return bool(_zipper_layers(model))


@contextlib.contextmanager
def language_posterior_context(model: nn.Module, post: torch.Tensor) -> Iterator[None]:
    """post: (B, L) non-negative rows summing to 1, L = the adapter's languages."""
    layers = _zipper_layers(model)
    if layers and (post.dim() != 2 or post.shape[1] != layers[0].n_languages):
        raise ValueError(f"language posterior of shape {tuple(post.shape)}; expected (B, "
                         f"{layers[0].n_languages}) over {layers[0].languages}")
    if layers and not torch.allclose(post.sum(-1), torch.ones_like(post[:, 0]), atol=1e-4):
        raise ValueError("language posterior rows must sum to 1")
    with set_on_layers(layers, "_posterior", post):
        yield
