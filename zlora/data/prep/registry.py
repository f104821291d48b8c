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
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zlora.config import ConfigError, from_dict
from zlora.registry import ModuleRegistry


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


# every module of zlora.data.prep is imported before the registry is first read
CORPORA: ModuleRegistry[CorpusSpec] = ModuleRegistry("corpus", ("zlora.data.prep",))


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
