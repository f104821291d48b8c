"""Adapter tensors in and out: state dicts and self-describing safetensors files.

An adapter file holds every adapter/router tensor (including FlyLoRA's frozen A and bias d and
the routers' LID embeddings, so a file restores outputs exactly) plus the AdapterConfig as JSON
metadata. Keys are qualified module names relative to the model passed in; a file saved from a
parent model (``encoder.layers.0...``) also loads into the sub-model (``layers.0...``) and back,
as long as one prefix maps every key.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch
from torch import nn

from zlora.adapters.base import get_adapter_config, named_adapter_layers
from zlora.adapters.config import AdapterConfig

FORMAT = "zlora-adapter"
FORMAT_VERSION = "1"
# Fields whose difference changes tensor shapes or meaning: checked when loading a file (plus
# the kind's own KindSpec.structural options).
STRUCTURAL_FIELDS = ("kind", "rank", "languages")


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter and router tensors only (no base weights), keyed by qualified name."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in named_adapter_layers(model):
        for key, value in layer.adapter_state().items():
            out[f"{name}.{key}"] = value.detach()
    return out


def _align_keys(expected: set[str], found: dict[str, Any]) -> dict[str, Any]:
    """Re-key ``found`` to ``expected`` when one module-name prefix separates them."""
    if set(found) == expected or not expected or not found:
        return found
    e0 = min(expected)
    for fk in found:
        if fk.endswith("." + e0):                       # file saved from a parent model
            prefix = fk[: -len(e0)]
            remapped = {k[len(prefix):]: v for k, v in found.items() if k.startswith(prefix)}
            if set(remapped) == expected and len(remapped) == len(found):
                return remapped
        if e0.endswith("." + fk):                       # file saved from a sub-model
            prefix = e0[: -len(fk)]
            remapped = {prefix + k: v for k, v in found.items()}
            if set(remapped) == expected:
                return remapped
    return found


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True,
                            source: str = "state dict") -> None:
    """Copy ``state`` into the model's adapter tensors; missing/unexpected keys or shape
    mismatches raise ValueError naming them."""
    own = adapter_state_dict(model)
    if not own:
        raise ValueError(f"{source}: the model has no adapter layers to load into")
    state = _align_keys(set(own), state)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise ValueError(f"{source}: adapter keys do not match the model: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    with torch.no_grad():
        for key, target in own.items():
            if key not in state:
                continue
            value = state[key]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, "
                                 f"the model expects {tuple(target.shape)}")
            target.copy_(value)


def save_adapter_file(model: nn.Module, path: str | os.PathLike,
                      values: dict[str, torch.Tensor] | None = None) -> None:
    """Write the adapter tensors + config metadata as safetensors, atomically.

    ``values``: replacements keyed like the model's state dict (e.g. float32 master weights of a
    bf16 model); tensors not in it are taken from the model.
    """
    from safetensors.torch import save_file

    from zlora.utils.io import atomic_save_file

    cfg = get_adapter_config(model)
    if cfg is None:
        raise ValueError(f"{path}: the model has no adapter layers to save")
    values = values or {}
    tensors = {k: values.get(k, v).detach().cpu().clone().contiguous()
               for k, v in adapter_state_dict(model).items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "adapter_config": cfg.to_metadata()}
    atomic_save_file(lambda tmp: save_file(tensors, tmp, metadata=meta), path)


def read_adapter_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (tensors, config dict) of a zlora adapter file; errors name the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"adapter file {path!r} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: not a readable safetensors file: {e}") from e
    if meta.get("format") != FORMAT or "adapter_config" not in meta:
        raise ValueError(f"{path}: not a zlora adapter file (metadata format={meta.get('format')!r})")
    # Files written before options moved under ``conf`` hold flat keys: read them in the new form.
    return load_file(path), AdapterConfig.migrate_config(json.loads(meta["adapter_config"]), path)


def check_compatible(file_cfg: dict, model_cfg: Any, path: str) -> None:
    """Raise ValueError naming the first structural field that differs (kind, rank, languages,
    then the kind's structural options, e.g. zipper-static's shared_rank)."""
    for name in STRUCTURAL_FIELDS:
        want, have = getattr(model_cfg, name), file_cfg.get(name)
        if have != want:
            raise ValueError(f"{path}: adapter {name} differs: the file has {have!r}, "
                             f"the model has {want!r}")
    file_opts = _file_options(file_cfg, path)
    for name in model_cfg.spec.structural:
        want, have = getattr(model_cfg.options, name), getattr(file_opts, name)
        if have != want:
            raise ValueError(f"{path}: adapter {name} differs: the file has {have!r}, "
                             f"the model has {want!r}")


def _file_options(file_cfg: dict, path: str):
    """The typed options of an adapter file's config (defaults resolved as for a new config)."""
    fields = {f.name for f in dataclasses.fields(AdapterConfig)}
    try:
        return AdapterConfig(**{k: v for k, v in file_cfg.items() if k in fields}).options
    except ValueError as e:
        raise ValueError(f"{path}: its adapter config is not valid here: {e}") from e


def load_adapter_file(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load an adapter file into a model wrapped with a matching config; returns the file's config.

    A file whose kind, rank or language list (order included: it defines the indices) differs
    from the model's raises ValueError saying which.
    """
    cfg = get_adapter_config(model)
    if cfg is None:
        raise ValueError(f"{path}: the model has no adapter layers; call apply_adapters first")
    tensors, file_cfg = read_adapter_file(path)
    check_compatible(file_cfg, cfg, str(path))
    load_adapter_state_dict(model, tensors, source=str(path))
    return file_cfg
