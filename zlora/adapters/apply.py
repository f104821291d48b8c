"""apply_adapters: wrap matching nn.Linear modules of any PyTorch model in place."""
from __future__ import annotations

import re
from typing import Callable, Optional

from torch import nn

from zlora.adapters.base import AdapterLayer, get_adapter_config, named_adapter_layers  # noqa: F401
from zlora.adapters.config import AdapterConfig
from zlora.adapters.initial_b import apply_initial_b


def _find_targets(model: nn.Module, cfg: AdapterConfig) -> list[tuple[str, nn.Linear]]:
    try:
        pattern = re.compile(cfg.target_modules)
    except re.error as e:
        raise ValueError(f"adapter.target_modules {cfg.target_modules!r} is not a valid regex: {e}") from e
    modules = dict(model.named_modules())
    targets = []
    for name, module in modules.items():
        if not name or not isinstance(module, nn.Linear) or not pattern.fullmatch(name):
            continue
        parent = modules[name.rpartition(".")[0]]
        if isinstance(parent, nn.MultiheadAttention):
            # MHA reads out_proj.weight directly and never calls its forward: a wrapper would be
            # silently bypassed.
            raise ValueError(f"adapter.target_modules matches {name!r} inside nn.MultiheadAttention, "
                             f"whose forward never calls it; exclude it from the regex")
        targets.append((name, module))
    if not targets:
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(f"adapter.target_modules {cfg.target_modules!r} (re.fullmatch on qualified "
                         f"names) matched no nn.Linear; the model has {len(linears)}, e.g. "
                         f"{', '.join(linears[:5]) or 'none'}")
    return targets


def check_rank_fits(model: nn.Module, cfg: AdapterConfig, key: str = "adapter.rank") -> None:
    """A rank-r update of a d_in -> d_out layer needs r <= min(d_in, d_out); a larger rank (e.g.
    4096 on a 512-wide layer) only adds parameters that cannot help. ``key`` names the option in
    the message (adapter.rank, model.llm_lora.rank)."""
    for name, linear in _find_targets(model, cfg):
        width = min(linear.in_features, linear.out_features)
        if cfg.rank > width:
            from zlora.config import ConfigError

            raise ConfigError(f"{key} {cfg.rank} is more than the width of {name} ({linear.in_features} -> "
                              f"{linear.out_features}): a rank-r update needs r <= min(d_in, d_out) = "
                              f"{width}; lower {key}")


def apply_adapters(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    """Wrap every nn.Linear whose qualified name fully matches ``cfg.target_modules``.

    The wrapped base weights are frozen (nothing else is touched). Every kind starts out equal
    to the base model, unless ``cfg.init_b_from`` warm-starts B (Sec. IV-F). Returns the wrapped
    module names.
    """
    if named_adapter_layers(model):
        raise ValueError("model already has adapters; apply_adapters once per model")
    layer_cls = cfg.spec.layer
    shared_router = None
    names = []
    for name, linear in _find_targets(model, cfg):
        layer = layer_cls(linear, cfg, name, shared_router=shared_router)
        if cfg.spec.routed and not cfg.options.router_per_layer and shared_router is None:
            shared_router = layer.router      # owned (saved, counted) by the first layer only
        model.set_submodule(name, layer)
        names.append(name)
    post_apply = getattr(layer_cls, "post_apply", None)
    if post_apply is not None:          # kinds that need model-level wiring (mole's LID hook)
        post_apply(model, cfg, names)
    if cfg.init_b_from or cfg.init_router_from:
        apply_initial_b(model, cfg)
    return names


def adapter_step_hooks(model: nn.Module) -> list[Callable[[], None]]:
    """Per-optimizer-step hooks: ``on_optimizer_step`` of every module that defines one
    (FlyLoRA's load-balancing bias). The training loop calls each after ``optimizer.step()``."""
    return [m.on_optimizer_step for m in model.modules()
            if callable(getattr(m, "on_optimizer_step", None))]
