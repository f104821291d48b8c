"""Provenance records: what produced an output, stored with it, compared before it is reused.

A record is a flat mapping ``{name: fingerprint}`` (a sha256 of weights, of features, of the options
that shaped the output; short plain values such as a layer count are allowed too). Every output
that a later run may reuse instead of recomputing carries one: decode parts and merged decodes
(``.done``), encoder caches (``meta.yaml``), LID embeddings (safetensors metadata), tokenizers
(``OUT.provenance.json``) and a model's ``final/`` (safetensors metadata). Before reusing the output,
the producer computes the record it *would* write now and compares (:func:`differences`):

- equal: the output is current and kept;
- different, or no record (older zlora, or an interrupted run): the output is redone, and the log
  says which fingerprints differ (:func:`describe`), or, where redoing is not this command's job,
  :func:`require_match` refuses with a message naming the file and both fingerprints.

Fingerprints of files hash their *content* (:func:`file_sha256`): the same path holding other
weights must not pass for the old ones. Feature tables are fingerprinted by
:func:`zlora.utils.io.table_fingerprint` (the table plus size and mtime of every file it points to),
as hashing every ark would cost as much as reading the features.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from zlora.utils.cli import UserError

_CHUNK = 1 << 20
_FILE_CACHE: dict[tuple[str, int, int], str] = {}


class ProvenanceError(UserError):
    """An output was produced from other inputs than the ones given now; names file and fingerprints."""


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes; cached in this process per (path, size, mtime) so a model's weights
    are read once per command however many sets it decodes."""
    path = os.path.abspath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILE_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        _FILE_CACHE[key] = h.hexdigest()
    return _FILE_CACHE[key]


def files_sha256(paths: Iterable[str | os.PathLike]) -> str:
    """One sha256 over several files (name and content of each, in the given order); a missing file
    counts as absent, so adding or removing one changes the fingerprint."""
    h = hashlib.sha256()
    for p in paths:
        digest = file_sha256(p) if os.path.isfile(p) else "absent"
        h.update(f"{os.path.basename(p)}\0{digest}\n".encode())
    return h.hexdigest()


def value_sha256(value: Any) -> str:
    """sha256 of a JSON-able value (options, a config section), independent of key order."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def short(value: Any) -> str:
    """A fingerprint as shown in messages: 12 hex digits; other values as they are."""
    return value[:12] if isinstance(value, str) and len(value) == 64 else repr(value)


def differences(recorded: Mapping | None, expected: Mapping) -> dict[str, tuple[Any, Any]]:
    """{name: (recorded, expected)} for every entry of ``expected`` that ``recorded`` does not match
    (all of them when there is no record)."""
    recorded = recorded or {}
    return {k: (recorded.get(k), v) for k, v in expected.items() if recorded.get(k) != v}


def describe(diffs: Mapping[str, tuple[Any, Any]]) -> str:
    """``model: recorded 1a2b3c4d5e6f, now 9f8e7d6c5b4a; feats: ...`` for a log line or a message."""
    return "; ".join(f"{k}: recorded {'none' if old is None else short(old)}, now {short(new)}"
                     for k, (old, new) in diffs.items())


def require_match(recorded: Mapping | None, expected: Mapping, where: str, remedy: str) -> None:
    """Raise :class:`ProvenanceError` naming ``where`` and both fingerprints of every difference."""
    diffs = differences(recorded, expected)
    if diffs:
        raise ProvenanceError(f"{where}: made from other inputs than these ({describe(diffs)}); {remedy}")


def write_record(path: str | os.PathLike, record: Mapping) -> None:
    """Write a record as JSON, atomically (the caller writes it last: it marks the output complete)."""
    from zlora.utils.io import atomic_write_text

    atomic_write_text(path, json.dumps(dict(record), indent=1, sort_keys=True) + "\n")


def read_record(path: str | os.PathLike) -> dict | None:
    """The JSON record at ``path``; None when it is missing or unreadable (then nothing is reused)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
