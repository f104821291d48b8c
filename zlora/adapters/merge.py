"""merge_for_language: fold dW(l) into W0 for deployment (no adapter overhead at inference)."""
from __future__ import annotations

import copy
from typing import Optional, Union

from torch import nn

from zlora.adapters.apply import named_adapter_layers


def _language_index(languages: list[str], lang: Union[str, int, None], kind: str) -> Optional[int]:
    if lang is None:
        if languages:
            raise ValueError(f"merge_for_language needs a language for {kind} adapters "
                             f"({', '.join(languages)})")
        return None
    if isinstance(lang, int):
        if not 0 <= lang < len(languages):
            raise ValueError(f"language index {lang} out of range for {len(languages)} languages")
        return lang
    if lang not in languages:
        raise ValueError(f"language code {lang!r} not in the adapter's languages "
                         f"({', '.join(languages) or 'none'})")
    return languages.index(lang)


def merge_shared_in_place(model: nn.Module) -> int:
    """Fold every adapter layer whose update does not depend on the language (``lora``: shared A
    and B) into a plain nn.Linear, in place; returns how many were merged. Decoding does this for
    the LLM-LoRA, which otherwise costs two extra matmuls per linear layer at every generated token.
    Language-specific and input-dependent kinds are left as they are."""
    merged = 0
    for name, layer in named_adapter_layers(model):
        if layer.mergeable and layer.shared_down and layer.shared_up:
            index = 0 if layer.languages else None
            model.set_submodule(name, layer.merged_linear(index))
            merged += 1
    return merged


def merge_for_language(model: nn.Module, lang: Union[str, int, None]) -> nn.Module:
    """A deep copy of ``model`` whose adapter layers are plain nn.Linear with W0 + dW(lang).

    ``lang``: a code from the adapter's languages (or its index; None for language-free lora).
    FlyLoRA cannot be merged (its top-k mask depends on the input) and raises ValueError.
    """
    layers = named_adapter_layers(model)
    if not layers:
        raise ValueError("merge_for_language: the model has no adapter layers")
    first = layers[0][1]
    if not first.mergeable:
        raise ValueError(f"{first.kind} adapters cannot be merged: the selected ranks depend on "
                         f"the input")
    index = _language_index(first.languages, lang, first.kind)
    merged = copy.deepcopy(model)
    for name, layer in named_adapter_layers(merged):
        merged.set_submodule(name, layer.merged_linear(index))
    return merged
