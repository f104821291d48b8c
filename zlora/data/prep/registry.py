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
import hashlib
import os
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
    one-language corpus (prep_corpus's ``--lang`` default); ``sources(root, lang, split, opts) ->
    list[Path]`` names the transcript/manifest files whose change means the split must be
    converted again (default: what ``locate`` names, or the non-audio files directly inside it).
    """
    name: str
    collect: Callable[..., Any]
    locate: Callable[..., Path]
    layout: str
    options: type = NoOptions
    default_lang: str | None = None
    sources: Callable[..., list[Path]] | None = None

    def fingerprint(self, root: Path, lang: str, split: str, opts: Any) -> str:
        """sha256 over the path, size and mtime of each source file: cheap (no audio is read, as
        dump_feats' table fingerprints), and it changes when the corpus's transcripts do."""
        files = (self.sources or default_sources(self.locate))(root, lang, split, opts)
        h = hashlib.sha256()
        for f in sorted(map(Path, files)):
            st = f.stat()
            h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

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


def default_sources(locate: Callable[..., Path]) -> Callable[..., list[Path]]:
    """The file ``locate`` names, or the non-audio files directly inside the dir it names (MLS's
    transcripts.txt and segments.txt, MSR-86K's manifest.jsonl or wav.scp + text): the audio tree
    below is not walked, which would cost minutes on a large corpus."""
    from zlora.data.prep.common import SOUNDFILE_EXTS

    def sources(root: Path, lang: str, split: str, opts: Any) -> list[Path]:
        where = Path(locate(root, lang, split, opts))
        if where.is_file():
            return [where]
        return [f for f in where.iterdir() if f.is_file() and f.suffix.lower() not in SOUNDFILE_EXTS]
    return sources


# every module of zlora.data.prep is imported before the registry is first read
CORPORA: ModuleRegistry[CorpusSpec] = ModuleRegistry("corpus", ("zlora.data.prep",))


def register_corpus(name: str, *, layout: str, locate: Callable[..., Path], options: type = NoOptions,
                    default_lang: str | None = None, sources: Callable[..., list[Path]] | None = None
                    ) -> Callable[[Callable], Callable]:
    """Decorator on a corpus's ``collect``: registers the corpus under ``name`` with its layout
    line, locator, options dataclass, default language and source files (CorpusSpec); returns
    ``collect`` unchanged."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"corpus {name}: options must be a dataclass, got {options!r}")

    def deco(collect: Callable) -> Callable:
        CORPORA.register(name)(CorpusSpec(name, collect, locate, layout, options, default_lang, sources))
        return collect
    return deco


def roots_help() -> str:
    """One ``--roots.<corpus> DIR  <layout>`` line per registered corpus (CLI help texts)."""
    width = max(map(len, CORPORA.names()))
    return "\n".join(f"  --roots.{n:<{width}} DIR  {CORPORA.get(n).layout}" for n in CORPORA.names())
