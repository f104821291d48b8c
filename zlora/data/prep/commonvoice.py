"""Mozilla Common Voice -> Kaldi data dir.

Official layout (``cv-corpus-<version>/``; ``root`` may be that dir or the locale dir itself)::

    <locale>/{train,dev,test,validated,other,invalidated}.tsv
    <locale>/clips/common_voice_<locale>_<n>.mp3

Each tsv has a header row. Recent releases (CV 17-18, which the paper's authors used)::

    client_id  path  sentence_id  sentence  sentence_domain  up_votes  down_votes  age  gender
    accents  variant  locale  segment

older ones ``client_id path sentence up_votes down_votes age gender accent(s) locale segment``.
Columns are found by name; the transcript column may be called ``sentence`` (all releases) or, in
re-packaged copies, ``text`` / ``transcript`` / ``transcription``. The tsvs are not quoted (a
sentence may contain ``"``), so they are read with QUOTE_NONE.

Utterance id = ``<client_id>-<clip name>`` (speaker = client_id, a prefix); the corpus id is the
clip name without extension (``common_voice_ar_24042033``), the form of the paper authors' lists.
``lang`` is the utt2lang code (ISO 639-1); the locale dir defaults to it and is named with
``locale`` where the CV locale differs (``--lang zh --locale zh-CN``).
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zlora.data.prep.common import (Collected, PrepError, Utt, audio_exists, check_lang, clean_text,
                                    speaker_utt_id)
from zlora.data.prep.registry import register_corpus

TEXT_COLUMNS = ("sentence", "text", "transcript", "transcription")
SPLITS = ("train", "dev", "test", "validated", "other", "invalidated")


def locale_dir(root: Path, locale: str) -> Path:
    for cand in (root / locale, root):
        if (cand / "clips").is_dir() and any(cand.glob("*.tsv")):
            return cand
    raise PrepError(f"{root}: no Common Voice locale {locale!r} (expected {root}/{locale}/ with "
                    "clips/ and <split>.tsv files)")


def header_columns(header: list[str], tsv: Path) -> tuple[int, int, int]:
    """Indices of (client_id, path, transcript) in the header row."""
    cols = {name.strip(): i for i, name in enumerate(header)}
    text_col = next((c for c in TEXT_COLUMNS if c in cols), None)
    missing = [c for c in ("client_id", "path") if c not in cols] + ([] if text_col else ["sentence"])
    if missing:
        raise PrepError(f"{tsv}:1: header lacks column(s) {', '.join(missing)} (has: "
                        f"{', '.join(cols)}; the transcript column may be one of {', '.join(TEXT_COLUMNS)})")
    return cols["client_id"], cols["path"], cols[text_col]


def clip_path(clips: Path, name: str) -> Path:
    """Clip file for a tsv ``path`` value (very old releases omitted the .mp3 extension)."""
    p = clips / name
    return p if p.suffix or p.is_file() else clips / f"{name}.mp3"


@dataclass
class CommonVoiceOptions:
    locale: str | None = field(default=None, metadata={
        "help": "CV locale dir where it differs from --lang (e.g. zh-CN)"})


def locate(root: Path, lang: str, split: str, opts: CommonVoiceOptions) -> Path:
    tsv = locale_dir(root, opts.locale or lang) / f"{split}.tsv"
    if not tsv.is_file():
        raise PrepError(f"{tsv}: Common Voice split file does not exist (splits: {', '.join(SPLITS)})")
    return tsv


@register_corpus("commonvoice", layout="cv-corpus-<version>/ holding <locale>/ (or the locale dir)",
                 locate=locate, options=CommonVoiceOptions)
def collect(root: Path, lang: str, split: str, opts: CommonVoiceOptions, skip_missing: bool = False
            ) -> Collected:
    """All utterances of one Common Voice split tsv. ``lang``: the utt2lang code; ``opts.locale``:
    the CV locale dir (default: ``lang``)."""
    check_lang(lang, "commonvoice")
    tsv = locate(root, lang, split, opts)
    d = tsv.parent
    csv.field_size_limit(sys.maxsize)
    found = Collected()
    with open(tsv, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise PrepError(f"{tsv}: empty file (no header row)")
        i_client, i_path, i_text = header_columns(header, tsv)
        for lineno, row in enumerate(rows, 2):
            where = f"{tsv}:{lineno}"
            if len(row) <= max(i_client, i_path, i_text):
                raise PrepError(f"{where}: {len(row)} columns, the header has {len(header)}")
            add_row(row[i_client], row[i_path], row[i_text], d / "clips", lang, where, found, skip_missing)
    return found


def add_row(client: str, name: str, text: str, clips: Path, lang: str, where: str,
            found: Collected, skip_missing: bool) -> None:
    text = clean_text(text)
    if not text:
        found.skip("empty transcript")
        return
    if not client or not name:
        raise PrepError(f"{where}: empty client_id or path")
    audio = clip_path(clips, name)
    corpus_id = Path(name).stem if Path(name).suffix else name
    if audio_exists(str(audio), skip_missing, found, where):
        found.utts.append(Utt(speaker_utt_id(client, corpus_id), client, lang, text, str(audio),
                              corpus_id, where))
