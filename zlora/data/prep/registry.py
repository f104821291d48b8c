"""The corpus registry: one entry per corpus, declared next to its converter, carrying everything
the rest of zlora needs to know about it.

A corpus module (``zlora/data/prep/<corpus>.py``) registers itself once::

    @dataclass
    class MLSOptions:
        release: Literal["auto", "flac", "opus"] = field(default="auto", metadata={"help": "..."})

    def locate(root: Path, lang: str, split: str, opts: MLSOptions) -> Path: ...

    @register_corpus("mls", layout="dir holding mls_<language>[_opus]/", options=MLSOptions,
                     locate=locate)
    def collect(root: Path, lang: str, split: str, opts: MLSOptions, skip_missing: bool = False
                ) -> Collected: ...

Everything else derives from :data:`CORPORA`: the corpus names a data plan accepts, its
``roots`` keys, the checking of each source's ``options``, :func:`zlora.data.prep.plan.locate_source`
and the subcommands and flags of ``zlora.bin.prep_corpus``. Every module of this package is
imported when the registry is first read, so a new corpus needs no list to be edited anywhere.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zlora.config import ConfigError, from_dict
from zlora.registry import Registry


@dataclass
class NoOptions:
    """Options of a corpus that has none."""


@dataclass(frozen=True)
class CorpusSpec:
    """Everything zlora knows about one corpus.

    ``collect(root, lang, split, opts, skip_missing=False) -> Collected`` reads one split;
    ``locate(root, lang, split, opts) -> Path`` names the file or dir ``collect`` would read,
    without reading it (PrepError naming what is missing); ``layout`` is one line saying what
    ``root`` must hold (help texts, messages); ``options`` is the dataclass of the corpus's own
    options (the plan's ``options:``, prep_corpus's flags); ``default_lang`` is the language of a
    one-language corpus (prep_corpus's ``--lang`` default).
    """
    name: str
    collect: Callable[..., Any]
    locate: Callable[..., Path]
    layout: str
    options: type = NoOptions
    default_lang: str | None = None

    def option_fields(self) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(self.options) if f.init]

    def parse_options(self, options: dict, where: str) -> Any:
        """``options`` (a plan's ``options:`` mapping, or keyword arguments) as this corpus's typed
        options; an unknown key or a wrong type is a ConfigError naming the key and the corpus."""
        known = [f.name for f in self.option_fields()]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {', '.join(repr(k) for k in unknown)} for "
                              f"corpus {self.name}; its options: {', '.join(known) or 'none'}")
        return from_dict(self.options, dict(options), f"{where} (corpus {self.name})")

    def option_types(self) -> dict[str, Any]:
        return typing.get_type_hints(self.options)


class CorpusRegistry(Registry[CorpusSpec]):
    """A Registry that imports every module of zlora.data.prep before it is first read (each
    corpus module registers itself), so no list of corpora is kept by hand."""

    def __init__(self, slot: str, package: str):
        super().__init__(slot)
        self._package, self._loaded = package, False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True       # first: a module imported here may read the registry
        try:
            pkg = importlib.import_module(self._package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{self._package}.{mod.name}")
        except BaseException:
            self._loaded = False
            raise

    def get(self, name: str) -> CorpusSpec:
        self._load()
        if name not in self._items:
            raise ConfigError(f"unknown {self.slot} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def __contains__(self, name: str) -> bool:
        self._load()
        return super().__contains__(name)

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's or a plug-in's own corpus, when it is done with it)."""
        self._items.pop(name, None)


CORPORA = CorpusRegistry("corpus", "zlora.data.prep")


def register_corpus(name: str, *, layout: str, locate: Callable[..., Path], options: type = NoOptions,
                    default_lang: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator on a corpus's ``collect``: registers the corpus under ``name`` with its layout
    line, locator, options dataclass and default language; returns ``collect`` unchanged."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"corpus {name}: options must be a dataclass, got {options!r}")

    def deco(collect: Callable) -> Callable:
        CORPORA.register(name)(CorpusSpec(name, collect, locate, layout, options, default_lang))
        return collect
    return deco


def roots_help() -> str:
    """One ``--roots.<corpus> DIR  <layout>`` line per registered corpus (CLI help texts)."""
    width = max(map(len, CORPORA.names()))
    return "\n".join(f"  --roots.{n:<{width}} DIR  {CORPORA.get(n).layout}" for n in CORPORA.names())
