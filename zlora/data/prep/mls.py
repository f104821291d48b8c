"""Multilingual LibriSpeech (openslr.org/94) -> Kaldi data dir, FLAC or Opus release.

Official layout (``<name>`` = german, spanish, french, italian, portuguese, polish, dutch, english)::

    mls_<name>/<split>/transcripts.txt          "<speaker>_<book>_<segment>\\t<transcript>"
    mls_<name>/<split>/audio/<speaker>/<book>/<speaker>_<book>_<segment>.flac
    mls_<name>_opus/<split>/...                 the same with .opus files (OGG/Opus)

``root`` is the dir holding the ``mls_*`` dirs (or one ``mls_<name>[_opus]`` dir itself). When both
releases of a language are there, ``release`` picks one (``auto`` prefers FLAC: lossless).
Utterance id = corpus id, speaker = the reader id; transcripts (lower-case, no punctuation in the
corpus) are kept as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zlora.data.prep.common import Collected, PrepError, Utt, audio_exists, clean_text
from zlora.data.prep.registry import register_corpus

MLS_NAMES = {"de": "german", "es": "spanish", "fr": "french", "it": "italian", "pt": "portuguese",
             "pl": "polish", "nl": "dutch", "en": "english"}
RELEASES = {"flac": ("", ".flac"), "opus": ("_opus", ".opus")}


def language_dir(root: Path, lang: str, split: str, release: str) -> tuple[Path, str]:
    """(``mls_<name>[_opus]`` dir, audio extension) for ``lang``."""
    if lang not in MLS_NAMES:
        raise PrepError(f"MLS has no language {lang!r}; it has {', '.join(sorted(MLS_NAMES))}")
    if release not in ("auto", *RELEASES):
        raise PrepError(f"MLS release must be auto, flac or opus, got {release!r}")
    tried = []
    for rel in (["flac", "opus"] if release == "auto" else [release]):
        suffix, ext = RELEASES[rel]
        name = f"mls_{MLS_NAMES[lang]}{suffix}"
        # root holds the mls_* dirs, or root is the language dir itself
        for cand in (root / name, root) if root.name == name else (root / name,):
            tried.append(str(cand / split / "transcripts.txt"))
            if (cand / split / "transcripts.txt").is_file():
                return cand, ext
    raise PrepError(f"{root}: no MLS {MLS_NAMES[lang]} ({release}) split {split!r}: none of "
                    f"{', '.join(tried)} exists")


def parse_line(line: str, where: str) -> tuple[str, str, str, str]:
    """'spk_book_seg<TAB>text' -> (id, speaker, book, text)."""
    if "\t" not in line:
        raise PrepError(f"{where}: expected '<speaker>_<book>_<segment><TAB><transcript>', got {line!r}")
    uid, text = line.split("\t", 1)
    parts = uid.split("_")
    if len(parts) != 3 or not all(parts):
        raise PrepError(f"{where}: utterance id {uid!r} is not <speaker>_<book>_<segment>")
    return uid, parts[0], parts[1], text


@dataclass
class MLSOptions:
    release: Literal["auto", "flac", "opus"] = field(default="auto", metadata={
        "help": "which release when both are there (auto: FLAC, lossless)"})


def locate(root: Path, lang: str, split: str, opts: MLSOptions) -> Path:
    return language_dir(root, lang, split, opts.release)[0] / split


@register_corpus("mls", layout="dir holding mls_<language>[_opus]/ (or one such dir)",
                 locate=locate, options=MLSOptions)
def collect(root: Path, lang: str, split: str, opts: MLSOptions, skip_missing: bool = False) -> Collected:
    """All utterances of one MLS language split."""
    d, ext = language_dir(root, lang, split, opts.release)
    trans = d / split / "transcripts.txt"
    found = Collected()
    for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{trans}:{lineno}"
        uid, spk, book, text = parse_line(line, where)
        text = clean_text(text)
        if not text:
            found.skip("empty transcript")
            continue
        audio = str(d / split / "audio" / spk / book / f"{uid}{ext}")
        if audio_exists(audio, skip_missing, found, where):
            found.utts.append(Utt(uid, spk, lang, text, audio, uid, where))
    return found
