"""Corpus converters: official on-disk layouts -> Kaldi data dirs with utt2lang (paper §V-A).

One module per corpus (librispeech, mls, commonvoice, msr86k, wenetspeech), each registering its
``collect``, layout, locator, options dataclass and default language once with
:func:`~zlora.data.prep.registry.register_corpus` (see :mod:`zlora.data.prep.registry` and
docs/extending.md); :func:`prepare` writes the result as a checked Kaldi dir.
:mod:`zlora.data.prep.plan` runs a whole Table-I data plan (sampling by hours, published id lists)
on top.
"""
from __future__ import annotations

import os
from pathlib import Path

from zlora.config import ConfigError
from zlora.data.prep.common import (Collected, PrepError, Utt, map_corpus_ids, read_id_list,
                                    read_provenance, write_prepared)
from zlora.data.prep.registry import CORPORA, CorpusSpec, NoOptions, register_corpus


def prepare(corpus: str, root: str | os.PathLike, lang: str, split: str, out: str | os.PathLike,
            skip_missing: bool = False, **options) -> dict:
    """Convert one (corpus, language, split) into the Kaldi dir ``out``; returns its counts.

    ``options`` are the corpus's own (its options dataclass, e.g. ``release`` for mls); an unknown
    one is a ConfigError naming it and the corpus. prep.yaml records them as given.
    """
    try:
        spec = CORPORA.get(corpus)
    except ConfigError as e:
        raise PrepError(str(e)) from e
    opts = spec.parse_options(options, "options")
    root = Path(os.path.abspath(root))  # wav.scp must hold absolute paths (symlinks kept as given)
    if not root.exists():
        raise PrepError(f"{root}: {corpus} root does not exist")
    # before reading: a transcript edited during the conversion makes the next run redo it
    fingerprint = spec.fingerprint(root, lang, split, opts)
    found = spec.collect(root, lang, split, opts, skip_missing=skip_missing)
    provenance = {"corpus": corpus, "root": str(root), "lang": lang, "split": split,
                  "options": dict(sorted(options.items())), "skip_missing": skip_missing,
                  "source": f"{corpus} {lang} {split} under {root}", "source_fingerprint": fingerprint}
    return write_prepared(out, found, provenance)


__all__ = ["CORPORA", "Collected", "CorpusSpec", "NoOptions", "PrepError", "Utt", "prepare",
           "map_corpus_ids", "read_id_list", "read_provenance", "register_corpus", "write_prepared"]
