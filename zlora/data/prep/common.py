"""Shared pieces of the corpus converters: the utterance record, text and audio rules, and the
writer that turns a list of utterances into a checked Kaldi data dir.

Conventions every converter follows (so the plan executor and the authors' id lists work the same
way for every corpus):

- Utterance ids are sorted under ``LC_ALL=C`` (``write_kv`` sorts) and the speaker id is a prefix
  of the utterance id (Kaldi's rule). Where the corpus id already starts with the speaker (LibriSpeech
  ``1089-134686-0000``, MLS ``9351_9280_000632``, WenetSpeech ``Y0000000000_--5llN02F84_S00000``)
  the corpus id *is* the utterance id; otherwise the converter writes ``<speaker>-<corpus id>``.
- Every prepared dir holds ``utt2corpusid`` (utterance id -> the corpus's own id, e.g. the Common
  Voice clip name ``common_voice_ar_24042033``) so published id lists (the paper authors' lists use
  corpus ids) can be mapped onto utterance ids; see :func:`map_corpus_ids`.
- Transcripts are kept as the corpus gives them; the only normalisation is whitespace: tabs,
  newlines and runs of spaces become one space, and leading/trailing space is dropped (a Kaldi
  ``text`` line cannot hold a newline). Empty transcripts are skipped and counted.
- ``wav.scp`` holds plain paths for every format soundfile decodes here (measured with soundfile
  0.14.0 / libsndfile 1.2.2: WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3; see zlora.data.audio). Only other
  extensions (m4a, aac, webm, ...) become an ``ffmpeg ... |`` pipe. None of the five corpora here
  needs the pipe: LibriSpeech and MLS are FLAC, MLS-opus and WenetSpeech are OGG/Opus, Common Voice
  is MP3; MSR-86K is WAV (paper: 16 kHz WAV), any other extension in a manifest gets the pipe.
- The output dir is written into a temporary sibling and renamed into place, with ``prep.yaml``
  (what was converted, from where, counts) inside: a dir that exists is complete.
"""
from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from zlora.data.kaldi import KNOWN_LANGS, DataDir, DataDirError, Segment, read_kv, write_kv
from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger("prep")

# Extensions soundfile decodes here (see the module docstring); anything else gets an ffmpeg pipe.
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".sph", ".caf"}
CORPUS_ID_FILE = "utt2corpusid"
PROVENANCE_FILE = "prep.yaml"


class PrepError(UserError):
    """A corpus that does not look like its official layout; the message names file and line."""


@dataclass(frozen=True)
class Utt:
    """One utterance as read from a corpus.

    ``audio`` is the file holding the speech: the utterance's own file, or, when ``rec`` is set,
    the long recording of which [start, end] seconds is the utterance. ``where`` ("file:line")
    names the corpus line the utterance came from, for error messages.
    """
    utt: str
    spk: str
    lang: str
    text: str
    audio: str
    corpus_id: str
    where: str
    rec: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass
class Collected:
    """What a converter found: the utterances plus counts of what it skipped and why."""
    utts: list[Utt] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def clean_text(text: str) -> str:
    """The one normalisation applied to transcripts: collapse all whitespace to single spaces."""
    return " ".join(text.split())


def speaker_utt_id(spk: str, corpus_id: str) -> str:
    """Utterance id with the speaker as prefix: the corpus id itself when it already starts with
    ``spk``, else ``<spk>-<corpus id>``."""
    return corpus_id if corpus_id.startswith(spk) else f"{spk}-{corpus_id}"


def audio_spec(path: str | os.PathLike) -> str:
    """wav.scp value for an audio file: the path, or an ffmpeg pipe for formats soundfile lacks."""
    path = str(path)
    if path.rstrip().endswith("|") or Path(path).suffix.lower() in SOUNDFILE_EXTS:
        return path  # already a pipe (a Kaldi-style manifest may hold one), or decodable
    return f"ffmpeg -nostdin -loglevel error -i {shlex.quote(path)} -f wav -ac 1 -ar 16000 - |"


def check_lang(lang: str, what: str) -> str:
    if lang not in KNOWN_LANGS:
        raise PrepError(f"{what}: language code {lang!r} is not one of Whisper's codes "
                        "(ISO 639-1 such as en, fr, zh)")
    return lang


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise PrepError(f"{path}: {what} does not exist")
    return path


def audio_exists(path: str, skip_missing: bool, found: Collected, where: str) -> bool:
    """True if ``path`` is a file (or a pipe); a missing file is an error naming ``where`` unless
    skipping."""
    if path.rstrip().endswith("|") or os.path.isfile(path):
        return True
    if not skip_missing:
        raise PrepError(f"{where}: audio file {path} does not exist (pass --skip_missing to skip "
                        "utterances whose audio is missing)")
    found.skip("audio file missing")
    return False


# ---------------------------------------------------------------------------------------------
# writing a prepared dir

def _check_ids(u: Utt, seen: dict[str, str]) -> None:
    for name, value in (("utterance", u.utt), ("speaker", u.spk)):
        if not value or any(c.isspace() for c in value):
            raise PrepError(f"{u.where}: {name} id {value!r} is empty or contains whitespace")
    if not u.utt.startswith(u.spk):
        raise PrepError(f"{u.where}: speaker id {u.spk!r} is not a prefix of utterance id {u.utt!r}")
    if u.utt in seen:
        raise PrepError(f"{u.where}: duplicate utterance id {u.utt!r} (first at {seen[u.utt]})")
    seen[u.utt] = u.where


def build_tables(utts: list[Utt]) -> dict[str, dict[str, object]]:
    """Kaldi tables (file name with '.' as '_' -> {id: value}) for ``utts``; checks ids."""
    segmented = any(u.rec is not None for u in utts)
    if segmented and not all(u.rec is not None for u in utts):
        raise PrepError("internal: a prepared dir mixes segmented and whole-file utterances")
    seen: dict[str, str] = {}
    t: dict[str, dict[str, object]] = {k: {} for k in ("text", "utt2spk", "utt2lang", "wav_scp")}
    if segmented:
        t["segments"], t["utt2dur"] = {}, {}
    for u in utts:
        _check_ids(u, seen)
        check_lang(u.lang, u.where)
        t["text"][u.utt], t["utt2spk"][u.utt], t["utt2lang"][u.utt] = u.text, u.spk, u.lang
        if not segmented:
            t["wav_scp"][u.utt] = audio_spec(u.audio)
            continue
        spec = audio_spec(u.audio)
        if t["wav_scp"].setdefault(u.rec, spec) != spec:
            raise PrepError(f"{u.where}: recording {u.rec!r} points to {u.audio}, elsewhere to "
                            f"{t['wav_scp'][u.rec]}")
        if not (u.start is not None and u.end is not None and 0 <= u.start < u.end):
            raise PrepError(f"{u.where}: utterance {u.utt!r}: bad segment times [{u.start}, {u.end}]")
        t["segments"][u.utt] = Segment(u.rec, u.start, u.end)
        t["utt2dur"][u.utt] = round(u.end - u.start, 6)
    return t


def write_prepared(out: str | os.PathLike, found: Collected, provenance: dict) -> dict:
    """Write ``found.utts`` as a Kaldi data dir at ``out`` (atomically: temp dir, then rename).

    Also writes ``utt2corpusid`` and ``prep.yaml`` (``provenance`` plus counts). Returns the
    counts. Raises PrepError when there is nothing to write or an id rule is broken.
    """
    out = Path(out)
    if not found.utts:
        raise PrepError(f"{provenance.get('source', out)}: no utterances found"
                        + (f" (skipped: {found.skipped})" if found.skipped else ""))
    tables = build_tables(found.utts)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    DataDir.write(tmp, **tables)
    write_kv(tmp / CORPUS_ID_FILE, {u.utt: u.corpus_id for u in found.utts})
    counts = {"utterances": len(found.utts), "speakers": len(set(tables["utt2spk"].values())),
              "skipped": dict(found.skipped)}
    if "utt2dur" in tables:
        counts["hours"] = round(sum(tables["utt2dur"].values()) / 3600, 4)
    atomic_write_text(tmp / PROVENANCE_FILE, yaml.safe_dump({**provenance, **counts},
                                                            sort_keys=False, allow_unicode=True))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    for reason, n in found.skipped.items():
        log.warning("%s: skipped %d utterance(s): %s", out, n, reason)
    log.info("%s: %d utterances, %d speakers", out, counts["utterances"], counts["speakers"])
    return counts


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The ``prep.yaml`` of a finished prepared dir, or None."""
    f = Path(path) / PROVENANCE_FILE
    if not f.is_file():
        return None
    return yaml.safe_load(f.read_text(encoding="utf-8")) or {}


# ---------------------------------------------------------------------------------------------
# corpus ids (the authors' lists)

def read_id_list(path: str | os.PathLike) -> list[str]:
    """First field of every non-empty line (blank lines are ignored: a published list may have them)."""
    path = Path(path)
    if not path.is_file():
        raise PrepError(f"{path}: utterance id list does not exist")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise PrepError(f"{path}: not UTF-8 ({e})") from e
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise PrepError(f"{path}: utterance id list is empty")
    return ids


def corpus_id_index(datadir: str | os.PathLike) -> dict[str, list[str]]:
    """{corpus id: [utterance ids]} from ``datadir/utt2corpusid`` (empty if the file is absent)."""
    path = Path(datadir) / CORPUS_ID_FILE
    index: dict[str, list[str]] = {}
    if path.is_file():
        for utt, cid in read_kv(path, 2).items():
            index.setdefault(cid, []).append(utt)
    return index


def resolve_ids(ids: Iterable[str], utts: set[str], by_corpus: dict[str, list[str]], what: str,
                excluded: set[str] = frozenset()) -> list[str]:
    """Utterance ids for ``ids`` given as utterance ids or corpus ids; every id must resolve to an
    utterance of ``utts``. Duplicates collapse. Sorted."""
    chosen, missing = set(), []
    for i in ids:
        hits = [i] if i in utts or i in excluded else by_corpus.get(i, [])
        hits = [u for u in hits if u in utts or u in excluded]
        if not hits:
            missing.append(i)
            continue
        bad = [u for u in hits if u in excluded]
        if bad:
            raise DataDirError(f"{what}: id {i!r} is excluded from this selection (it is in an "
                               "excluded split or set)")
        chosen.update(hits)
    if missing:
        raise DataDirError(f"{what}: {len(missing)} id(s) are neither utterance ids nor corpus ids of "
                           f"the data: {' '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    return sorted(chosen)


def map_corpus_ids(datadir: str | os.PathLike, ids: Iterable[str], what: str) -> list[str]:
    """Utterance ids of ``datadir`` for ``ids`` given either as utterance ids or as corpus ids
    (``utt2corpusid``). Every id must be found; duplicates in ``ids`` collapse. Sorted."""
    return resolve_ids(ids, set(DataDir(datadir).utts), corpus_id_index(datadir),
                       f"{what} (data: {datadir})")
