"""LibriSpeech (openslr.org/12) -> Kaldi data dir.

Official layout::

    LibriSpeech/<split>/<reader>/<chapter>/<reader>-<chapter>.trans.txt   ("<utt> TRANSCRIPT" lines)
    LibriSpeech/<split>/<reader>/<chapter>/<reader>-<chapter>-<nnnn>.flac

``root`` may be the dir holding ``LibriSpeech/`` or ``LibriSpeech/`` itself. Utterance id = the
corpus id (``1089-134686-0000``), speaker = the reader (``1089``); transcripts stay upper-case as
in the corpus (scoring applies Whisper's normaliser to reference and hypothesis alike).
"""
from __future__ import annotations

from pathlib import Path

from zlora.data.prep.common import Collected, PrepError, Utt, audio_exists, clean_text
from zlora.data.prep.registry import NoOptions, register_corpus

SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
          "test-clean", "test-other")


def split_dir(root: Path, split: str) -> Path:
    for cand in (root / "LibriSpeech" / split, root / split):
        if cand.is_dir():
            return cand
    raise PrepError(f"{root}: no LibriSpeech split {split!r} (looked for {root}/LibriSpeech/{split} "
                    f"and {root}/{split}; splits: {', '.join(SPLITS)})")


def read_trans(trans: Path, reader: str, chapter: str, found: Collected, skip_missing: bool) -> None:
    prefix = f"{reader}-{chapter}-"
    for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{trans}:{lineno}"
        parts = line.split(maxsplit=1)
        utt = parts[0]
        if not utt.startswith(prefix):
            raise PrepError(f"{where}: utterance id {utt!r} does not start with {prefix!r} "
                            "(the reader-chapter of its directory)")
        text = clean_text(parts[1]) if len(parts) > 1 else ""
        if not text:
            found.skip("empty transcript")
            continue
        audio = str(trans.parent / f"{utt}.flac")
        if audio_exists(audio, skip_missing, found, where):
            found.utts.append(Utt(utt, reader, "en", text, audio, utt, where))


def locate(root: Path, lang: str, split: str, opts: NoOptions) -> Path:
    return split_dir(root, split)


def sources(root: Path, lang: str, split: str, opts: NoOptions) -> list[Path]:
    """The transcripts sit two levels down, one per chapter (<reader>/<chapter>/*.trans.txt)."""
    return sorted(split_dir(root, split).glob("*/*/*.trans.txt"))


@register_corpus("librispeech", layout="dir holding LibriSpeech/ (or LibriSpeech/ itself)",
                 locate=locate, default_lang="en", sources=sources)
def collect(root: Path, lang: str, split: str, opts: NoOptions, skip_missing: bool = False) -> Collected:
    """All utterances of one LibriSpeech split (``lang`` must be en)."""
    if lang != "en":
        raise PrepError(f"LibriSpeech is English only; got lang={lang!r}")
    d = split_dir(root, split)
    found = Collected()
    for reader_dir in sorted(p for p in d.iterdir() if p.is_dir()):
        for chapter_dir in sorted(p for p in reader_dir.iterdir() if p.is_dir()):
            reader, chapter = reader_dir.name, chapter_dir.name
            trans = chapter_dir / f"{reader}-{chapter}.trans.txt"
            if not trans.is_file():
                raise PrepError(f"{chapter_dir}: no transcript file {trans.name}")
            read_trans(trans, reader, chapter, found, skip_missing)
    return found
