"""Corpus converters: official on-disk layouts -> Kaldi data dirs with utt2lang (paper §V-A).

One module per corpus (librispeech, mls, commonvoice, msr86k, wenetspeech), each with
``collect(root, lang, split, skip_missing=False, **options) -> Collected``; :func:`prepare` writes
the result as a checked Kaldi dir. :mod:`zlora.data.prep.plan` runs a whole Table-I data plan
(sampling by hours, published id lists) on top.
"""
from __future__ import annotations

import os
from pathlib import Path

from zlora.data.prep import commonvoice, librispeech, mls, msr86k, wenetspeech
from zlora.data.prep.common import (Collected, PrepError, Utt, map_corpus_ids, read_id_list,
                                    read_provenance, write_prepared)
from zlora.registry import Registry

CORPORA: Registry = Registry("corpus")
for _name, _mod in (("librispeech", librispeech), ("mls", mls), ("commonvoice", commonvoice),
                    ("msr86k", msr86k), ("wenetspeech", wenetspeech)):
    CORPORA.register(_name)(_mod.collect)


def prepare(corpus: str, root: str | os.PathLike, lang: str, split: str, out: str | os.PathLike,
            skip_missing: bool = False, **options) -> dict:
    """Convert one (corpus, language, split) into the Kaldi dir ``out``; returns its counts.

    ``options`` are corpus-specific: ``release`` (mls: auto|flac|opus), ``locale`` (commonvoice),
    ``min_confidence`` (wenetspeech).
    """
    try:
        collect = CORPORA.get(corpus)
    except ValueError as e:
        raise PrepError(str(e)) from e
    root = Path(os.path.abspath(root))  # wav.scp must hold absolute paths (symlinks kept as given)
    if not root.exists():
        raise PrepError(f"{root}: {corpus} root does not exist")
    found = collect(root, lang, split, skip_missing=skip_missing, **options)
    provenance = {"corpus": corpus, "root": str(root), "lang": lang, "split": split,
                  "options": dict(sorted(options.items())), "skip_missing": skip_missing,
                  "source": f"{corpus} {lang} {split} under {root}"}
    return write_prepared(out, found, provenance)


__all__ = ["CORPORA", "Collected", "PrepError", "Utt", "prepare", "map_corpus_ids", "read_id_list",
           "read_provenance", "write_prepared"]
