"""Adapter kinds by short name (``adapter.kind`` in YAML), each with everything about it.

A kind's module defines its layer class and its options dataclass, and registers one
:class:`KindSpec`; every list of kinds, label table and per-kind branch elsewhere derives from
the registry, so adding a kind touches its own file and a test (docs/extending.md)::

    @dataclass
    class MyOptions:            # adapter: {kind: mine, conf: {...}}
        width: int = 4

    @register_kind(display="My-LoRA", options=MyOptions)
    class MyLayer(AdapterLayer):
        kind = "mine"
        ...
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from zlora.registry import ModuleRegistry


@dataclass
class NoOptions:
    """A kind without options of its own."""


@dataclass(frozen=True)
class KindSpec:
    """What the rest of zlora needs to know about an adapter kind.

    - ``display``: its name in results tables and figures (the paper's spelling).
    - ``options``: dataclass of its own options (``adapter.conf``); an ``options.check(cfg)``
      method, if any, validates them against the whole AdapterConfig (e.g. k <= rank).
    - ``routed``: needs a LID router (``conf.lid_embeddings``, Eq. 16-18).
    - ``language_free``: may be used with ``languages: []``.
    - ``mergeable``: dW(l) does not depend on the input (``merge_for_language`` works).
    - ``compared``: one of the paper's compared methods (generic tests and benchmarks iterate
      over these; a kind that needs a model with transformer blocks, such as mole, is not).
    - ``initial_b``: ``load(layer, shared (r, d_out), spec (L, r, d_out), name, path)`` copying a
      converged Zipper's B banks into a fresh layer (Initial-B, Sec. IV-F); None = unsupported.
    - ``structural``: option names whose difference changes tensor shapes or meaning (checked
      when loading an adapter file).
    - ``legacy``: flat pre-``conf`` config keys of this kind -> option names (old configs and
      adapter files still load).
    """
    name: str
    layer: type
    display: str
    options: type = NoOptions
    routed: bool = False
    language_free: bool = False
    mergeable: bool = True
    compared: bool = True
    initial_b: Optional[Callable[..., None]] = None
    structural: tuple[str, ...] = ()
    legacy: dict[str, str] = field(default_factory=dict)


# Every module of zlora.adapters is imported before the registry is first read, so a new kind's
# module registers itself by being there (the package __init__ imports the built-in kinds first,
# which fixes their order: the paper's).
ADAPTER_KINDS: ModuleRegistry[KindSpec] = ModuleRegistry("adapter kind", ("zlora.adapters",))


def register_kind(display: str, **spec: Any) -> Callable[[type], type]:
    """Class decorator for an AdapterLayer subclass (its ``kind`` is the registered name)."""

    def deco(layer: type) -> type:
        ADAPTER_KINDS.register(layer.kind)(KindSpec(name=layer.kind, layer=layer, display=display, **spec))
        return layer

    return deco


def kind_spec(kind: str) -> KindSpec:
    """The spec of ``kind``; ConfigError (a ValueError) listing the known kinds otherwise."""
    return ADAPTER_KINDS.get(kind)


def kinds(**where: bool) -> tuple[str, ...]:
    """Registered kind names, in registration order, whose spec fields equal ``where``
    (e.g. ``kinds(compared=True)``, ``kinds(routed=True)``)."""
    return tuple(n for n, s in ADAPTER_KINDS.items() if all(getattr(s, k) == v for k, v in where.items()))


def display_name(kind: str) -> str:
    return kind_spec(kind).display


def option_names(kind: str) -> list[str]:
    return [f.name for f in dataclasses.fields(kind_spec(kind).options)]
