"""Reading Kaldi ``text``/``utt2lang`` files for scoring.

Scoring needs a reader that differs from a data-dir validator (``zlora.data.kaldi.read_kv``):
a hypothesis line may hold only the utterance id (the model emitted nothing: all deletions), and
the order of lines does not matter (decoding jobs are merged). Everything else is strict: bad
UTF-8, blank lines and duplicate ids are errors that name the file and line.
"""
from __future__ import annotations

import os
from pathlib import Path

from zlora.utils.cli import UserError


def read_transcripts(path: str | os.PathLike, what: str = "text") -> dict[str, str]:
    """``utt transcript`` lines -> {utt: transcript} in file order; transcript may be ``''``.

    ``what`` names the file's role in error messages ("reference", "hypothesis", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode(raw, path, lineno)
            if not line.strip():
                raise UserError(f"{path}:{lineno}: blank line in {what} file")
            if line[0].isspace():
                raise UserError(f"{path}:{lineno}: line starts with whitespace (expected an utterance id)")
            fields = line.split(maxsplit=1)
            utt = fields[0]
            if utt in out:
                raise UserError(f"{path}:{lineno}: duplicate utterance id {utt!r} "
                                f"(first on line {first_line[utt]})")
            out[utt] = fields[1].strip() if len(fields) > 1 else ""
            first_line[utt] = lineno
    return out


def read_utt2lang(path: str | os.PathLike) -> dict[str, str]:
    """``utt lang`` lines -> {utt: lang}; the language must be exactly one token."""
    mapping = read_transcripts(path, "utt2lang")
    for lineno, (utt, lang) in enumerate(mapping.items(), start=1):
        if not lang or len(lang.split()) != 1:
            raise UserError(f"{path}:{lineno}: utterance {utt!r}: expected exactly one language code, "
                            f"got {lang!r}")
    return mapping


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                        f"{e.start + 1})") from None
