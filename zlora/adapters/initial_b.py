"""Initial-B warm start (Sec. IV-F): B banks (and optionally routers) from a converged Zipper.

``init_b_from`` names an adapter file of a converged zipper-soft (or zipper-hard: same banks)
run. For every wrapped layer we copy, matching languages by code (the source may list more
languages, in any order), what the kind's ``KindSpec.initial_b`` says (zipper-soft/-hard: B_shared
and every B_spec(l), as the paper does; zipper-static: the matching rank columns; lora: B_shared;
independent: B_spec(l); see each kind's module).
The paper reuses B only; A keeps its fresh LoRA init unless ``init_a_from_b_file`` is true (then
the shared A is copied too, and for ``independent`` every language gets that A). The model then no
longer starts as the base model -- that is the point of the warm start.
``init_router_from`` copies the router weights (LayerNorm + Linear; the LID embeddings stay those
of this config) from a zipper-soft/-hard file with the same ``router_per_layer`` setting.
"""
from __future__ import annotations

import torch
from torch import nn

from zlora.adapters.base import copy_checked, named_adapter_layers
from zlora.adapters.config import AdapterConfig
from zlora.adapters.io import read_adapter_file
from zlora.adapters.registry import kinds

ROUTER_KEYS = ("router.norm.weight", "router.norm.bias", "router.proj.weight", "router.proj.bias")


def _source_key(tensors: dict, layer_name: str, leaf: str, path: str) -> str:
    """The file key for ``layer_name.leaf``, allowing the file to come from a parent model."""
    want = f"{layer_name}.{leaf}"
    hits = [k for k in tensors if k == want or k.endswith("." + want)]
    if len(hits) != 1:
        raise ValueError(f"{path}: {'no' if not hits else 'ambiguous'} tensor for layer "
                         f"{layer_name!r} ({leaf}); the file has e.g. {sorted(tensors)[:3]}")
    return hits[0]


def _load_shared_a(layer: nn.Module, a: torch.Tensor, name: str, path: str) -> None:
    target = layer.lora_A
    if target.dim() == 3:                       # independent: every language starts from A
        a = a.unsqueeze(0).expand_as(target) if tuple(a.shape) == tuple(target.shape[1:]) else a
    copy_checked(target, a, f"{name}.lora_A", path)


def _read_source(path: str, cfg: AdapterConfig) -> tuple[dict, dict]:
    """A converged routed (Zipper) adapter file: (tensors, its config dict)."""
    tensors, src_cfg = read_adapter_file(path)
    sources = kinds(routed=True)
    if src_cfg.get("kind") not in sources:
        raise ValueError(f"{path}: Initial-B needs a {' or '.join(sources)} adapter file, "
                         f"this one is {src_cfg.get('kind')!r}")
    if src_cfg.get("rank") != cfg.rank:
        raise ValueError(f"{path}: adapter rank differs: the file has {src_cfg.get('rank')!r}, "
                         f"the model has {cfg.rank}")
    return tensors, src_cfg


def _init_b(model: nn.Module, cfg: AdapterConfig, path: str) -> None:
    tensors, src_cfg = _read_source(path, cfg)
    src_langs = list(src_cfg.get("languages", []))
    missing = [c for c in cfg.languages if c not in src_langs]
    if missing:
        raise ValueError(f"{path}: no B_spec for language(s) {', '.join(missing)} "
                         f"(the file has {', '.join(src_langs)})")
    order = torch.tensor([src_langs.index(c) for c in cfg.languages], dtype=torch.long)
    load = cfg.spec.initial_b
    for name, layer in named_adapter_layers(model):
        shared = tensors[_source_key(tensors, name, "B_shared", path)]
        spec = tensors[_source_key(tensors, name, "B_spec", path)].index_select(0, order)
        load(layer, shared, spec, name, path)          # the kind's own rule (KindSpec.initial_b)
        if cfg.init_a_from_b_file:
            _load_shared_a(layer, tensors[_source_key(tensors, name, "lora_A", path)], name, path)


def _init_router(model: nn.Module, cfg: AdapterConfig, path: str) -> None:
    tensors, src_cfg = _read_source(path, cfg)
    src_shared = bool(src_cfg.get("conf", {}).get("router_per_layer", True))
    if src_shared != cfg.options.router_per_layer:
        raise ValueError(f"{path}: adapter router_per_layer differs: the file has {src_shared!r}, "
                         f"the model has {cfg.options.router_per_layer}")
    for name, layer in named_adapter_layers(model):
        if "router" not in layer._modules:      # a shared router is owned by the first layer
            continue
        params = dict(layer.named_parameters())
        for leaf in ROUTER_KEYS:
            copy_checked(params[leaf], tensors[_source_key(tensors, name, leaf, path)], f"{name}.{leaf}", path)


def apply_initial_b(model: nn.Module, cfg: AdapterConfig) -> None:
    """Warm-start the freshly wrapped ``model`` as ``cfg.init_b_from`` / ``init_router_from`` say."""
    if cfg.init_b_from:
        _init_b(model, cfg, cfg.init_b_from)
    if cfg.init_router_from:
        _init_router(model, cfg, cfg.init_router_from)
