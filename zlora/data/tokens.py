"""Transcript token ids, computed once per (text file, tokenizer) and cached on disk.

Tokenising a multi-million-line ``text`` costs minutes of CPU, and every rank of every run would
pay it at start-up. The ids (one flat int32 array plus offsets, and a per-line "has a letter or
digit" flag) are saved as ``<cache dir>/<key>.npz``, where the key is a sha256 of the text
file's bytes, the tokenizer's files (:func:`tokenizer_fingerprint`) and :data:`FORMAT`: a changed
transcript or tokenizer gives another key, so a stale cache is never read. Writes are atomic
(temp file + rename); an unreadable cache file is recomputed, not trusted.

``python -m zlora.bin.cache_tokens`` fills the cache in data prep; training fills it on first use
(rank 0, while the other ranks wait) and every later run and rank reads it.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zlora.data.columns import Ragged
from zlora.utils.io import atomic_open
from zlora.utils.log import get_logger

log = get_logger("data.tokens")
FORMAT = "zlora-token-cache-1"
_ALNUM = re.compile(r"[^\W_]")      # a letter or digit: \w without the underscore == str.isalnum


def cache_dir_for(data_dir: str | Path) -> Path:
    """Where a data dir's token caches live (``data.token_cache: true``, ``cache_tokens``)."""
    return Path(data_dir) / ".tokens"


def has_alnum(texts: Sequence[str]) -> np.ndarray:
    """(n,) bool: the transcript holds at least one letter or digit."""
    search = _ALNUM.search
    return np.fromiter((search(t) is not None for t in texts), dtype=bool, count=len(texts))


def file_sha256(path: str | Path, h=None) -> "hashlib._Hash":
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h


def tokenizer_fingerprint(tokenizer) -> str | None:
    """The tokenizer's own ``fingerprint()`` (zlora.models.tokenizer), or None (then no caching)."""
    fp = getattr(tokenizer, "fingerprint", None)
    return fp() if callable(fp) else None


def encode_all(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of every text; ``encode_batch`` when the tokenizer has one (much faster)."""
    batch = getattr(tokenizer, "encode_batch", None)
    if callable(batch):
        out: list[list[int]] = []
        for i in range(0, len(texts), 65536):           # bounded peak memory
            out.extend(batch(list(texts[i:i + 65536])))
        return out
    return [tokenizer.encode(t) for t in texts]


def cache_key(text_file: str | Path, tok_fp: str) -> str:
    h = file_sha256(text_file, hashlib.sha256(f"{FORMAT}\0{tok_fp}\0".encode()))
    return h.hexdigest()[:32]


def load_cache(path: Path, n: int) -> tuple[Ragged, np.ndarray] | None:
    try:
        with np.load(path) as z:
            ids, offsets, alnum = z["ids"], z["offsets"], z["alnum"]
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable token cache (%s); recomputing it", path, e)
        return None
    if len(offsets) != n + 1 or len(alnum) != n or offsets[-1] != len(ids):
        log.warning("%s: token cache holds %d lines, the text %d; recomputing it", path, len(offsets) - 1, n)
        return None
    return Ragged(ids, offsets), alnum


def save_cache(path: Path, ids: Ragged, alnum: np.ndarray) -> bool:
    """Atomically write the cache; False (logged) when the directory is not writable."""
    try:
        with atomic_open(path, "wb", encoding=None) as f:
            np.savez(f, ids=ids.flat, offsets=ids.offsets, alnum=alnum)
        return True
    except OSError as e:
        log.warning("cannot write the token cache %s (%s); tokens are recomputed by every run", path, e)
        return False


def transcript_tokens(text_file: str | Path, texts: Sequence[str], tokenizer,
                      cache_dir: str | Path | None, is_main: bool = True,
                      barrier: Callable[[], None] = lambda: None) -> tuple[Ragged, np.ndarray]:
    """(token ids per line of ``text_file``, (n,) has-a-letter-or-digit flags), from the cache
    when current. ``texts``: the transcripts in file order. Collective when ``barrier`` is one:
    the main rank computes and saves a missing cache first, the others then read it."""
    tok_fp = tokenizer_fingerprint(tokenizer) if cache_dir is not None else None
    if tok_fp is None:
        return Ragged.from_lists(encode_all(tokenizer, texts)), has_alnum(texts)
    path = Path(cache_dir) / f"{cache_key(text_file, tok_fp)}.npz"
    if is_main and not path.is_file():
        ids, alnum = _compute(texts, tokenizer, text_file)
        save_cache(path, ids, alnum)
        barrier()
        return ids, alnum
    barrier()
    cached = load_cache(path, len(texts)) if path.is_file() else None
    if cached is not None:
        log.info("transcript tokens of %s from the cache %s", text_file, path)
        return cached
    ids, alnum = _compute(texts, tokenizer, text_file)
    if is_main:
        save_cache(path, ids, alnum)
    return ids, alnum


def _compute(texts: Sequence[str], tokenizer, text_file) -> tuple[Ragged, np.ndarray]:
    log.info("tokenising %d transcripts of %s (cached for later runs)", len(texts), text_file)
    return Ragged.from_lists(encode_all(tokenizer, texts)), has_alnum(texts)
