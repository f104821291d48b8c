"""Kaldi data directories: readers, writers and the validator.

A data dir holds ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2lang`` and optionally
``segments``, ``utt2dur`` (and, after feature dumping, ``feats.scp``/``utt2num_frames``). Every file
is ``<id> <value...>`` per line, sorted by id under ``LC_ALL=C``. Python's ``str`` order on the decoded
ids equals the C locale's byte order on their UTF-8 encoding, so ``sorted()`` is the right sort.

Every problem raises :class:`DataDirError` whose message names the file, the line number and the id,
in the style of Kaldi's ``validate_data_dir.sh``.
"""
from __future__ import annotations

import math
import operator
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np

from zlora.utils.cli import UserError
from zlora.utils.io import atomic_open

# Whisper's 100 language codes (openai/whisper tokenizer.LANGUAGES, also transformers'
# tokenization_whisper.LANGUAGES). All are ISO 639-1 except Whisper's own "haw" and "yue" (ISO 639-3)
# and "jw" (Whisper's spelling of Javanese, ISO 639-1 "jv"); we keep Whisper's spellings so a code
# here is always one Whisper's LID head knows.
KNOWN_LANGS: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian",
    "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali",
    "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer",
    "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan",
    "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese",
    "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}

# (minimum, maximum) whitespace-separated fields per line, id included; None = no maximum.
FIELD_COUNTS: dict[str, tuple[int, int | None]] = {
    "text": (1, None),  # an empty transcript is a content error, reported as such by the validator
    "utt2spk": (2, 2), "spk2utt": (2, None), "utt2lang": (2, 2), "wav.scp": (2, None),
    "segments": (4, 4), "utt2dur": (2, 2), "reco2dur": (2, 2), "feats.scp": (2, None),
    "utt2num_frames": (2, 2), "spk2gender": (2, 2),
}
PER_UTT_FILES = ("text", "utt2spk", "utt2lang", "utt2dur", "feats.scp", "utt2num_frames")
PER_RECO_FILES = ("reco2dur",)  # wav.scp is per recording when segments exists, else per utterance
PER_SPK_FILES = ("spk2utt", "spk2gender")
ALL_FILES = ("wav.scp", "segments", *PER_UTT_FILES, *PER_RECO_FILES, *PER_SPK_FILES)

# A segment may end this far past its recording (timestamps rounded when the corpus was prepared);
# further is an error. Kaldi's extract-segments allows 0.5 s (--max-overshoot); we are stricter.
SEGMENT_TOLERANCE_S = 0.05


class DataDirError(UserError):
    """A malformed Kaldi data dir; the message names file, line and id."""


class Entry(NamedTuple):
    lineno: int
    key: str
    value: str


class Segment(NamedTuple):
    rec: str
    start: float
    end: float  # -1 means "to the end of the recording" (Kaldi convention)


# ----------------------------------------------------------------------------------------------
# reading

def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[max(0, e.start - 10):e.end + 10]
        raise DataDirError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start}: ...{bad!r}...)") from e


BOM = "\ufeff"
_WHITESPACE = re.compile(r"\s")


def check_separators(line: str, path: Path, lineno: int, every: bool) -> None:
    """Kaldi's tools split fields on spaces and tabs only; Python's str.split on any Unicode
    whitespace. A no-break space (U+00A0) after an id would make them read different ids, so the
    separator after the id (``every``: every separator, for tables of fixed field counts) must be
    a space or a tab. A byte-order mark at the start of a file is part of the first id for them."""
    if lineno == 1 and line.startswith(BOM):
        raise DataDirError(f"{path}:1: the file starts with a UTF-8 byte-order mark (BOM, U+FEFF), "
                           "invisible but part of the first id for Kaldi's tools; remove it "
                           f"(sed -i '1s/^\\xEF\\xBB\\xBF//' FILE) or run utils/fix_data_dir.sh")
    for m in _WHITESPACE.finditer(line.strip()):
        if m.group() not in " \t":
            name = unicodedata.name(m.group(), "whitespace")
            raise DataDirError(f"{path}:{lineno}: fields are separated by U+{ord(m.group()):04X} ({name}), "
                               "not a space or tab: Kaldi's tools split on spaces and tabs only and would "
                               "read another id; use a plain space")
        if not every:
            return


def split_line(line: str, path: Path, lineno: int, n_fields: tuple[int, int | None]) -> Entry:
    """``"id  rest of line"`` -> Entry(lineno, id, rest) after checking the field count and the
    separators (:func:`check_separators`)."""
    check_separators(line, path, lineno, every=n_fields[1] is not None)
    fields = line.split()
    lo, hi = n_fields
    if len(fields) < lo or (hi is not None and len(fields) > hi):
        want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo}-{hi}")
        what = f"id '{fields[0]}'" if fields else "empty line"
        raise DataDirError(f"{path}:{lineno}: malformed line ({what}): expected {want} fields, "
                           f"got {len(fields)}: {line.strip()!r}")
    parts = line.strip().split(maxsplit=1)
    return Entry(lineno, parts[0], parts[1] if len(parts) > 1 else "")


def iter_entries(path: str | os.PathLike, n_fields: tuple[int, int | None] = (2, None)):
    """Yield an :class:`Entry` per line; raise on non-UTF-8 or a wrong field count."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, path, lineno).rstrip("\r\n")
            yield split_line(line, path, lineno, n_fields)


def check_sorted_unique(entries: list[Entry], path: Path) -> None:
    """Kaldi's check_sorted_and_uniq: ids strictly increasing under LC_ALL=C."""
    first_line: dict[str, int] = {}
    prev: Entry | None = None
    for e in entries:
        if e.key in first_line:
            raise DataDirError(f"{path}:{e.lineno}: duplicate id '{e.key}' "
                               f"(first at line {first_line[e.key]})")
        first_line[e.key] = e.lineno
        if prev is not None and e.key < prev.key:
            raise DataDirError(f"{path}:{e.lineno}: file is not sorted (LC_ALL=C): id '{e.key}' comes "
                               f"after '{prev.key}' (line {prev.lineno}); run utils/fix_data_dir.sh")
        prev = e


def read_entries(path: str | os.PathLike, n_fields: tuple[int, int | None] | None = None) -> list[Entry]:
    """All lines of a Kaldi table file, checked: UTF-8, field count, sorted, unique ids.

    ``n_fields`` = (min, max) fields per line including the id; default from the file name.
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file does not exist")
    if n_fields is None:
        n_fields = FIELD_COUNTS.get(path.name, (2, None))
    entries = list(iter_entries(path, n_fields))
    check_sorted_unique(entries, path)
    return entries


def read_kv(path: str | os.PathLike, n_fields: int | tuple[int, int | None] | None = None) -> dict[str, str]:
    """Read a sorted Kaldi table into an ordered dict ``id -> rest of line``.

    ``n_fields``: exact field count (int, id included), a (min, max) pair, or None (by file name;
    2+ for unknown names). Errors name ``file:line`` and the id.
    """
    if isinstance(n_fields, int):
        n_fields = (n_fields, n_fields)
    return {e.key: e.value for e in read_entries(path, n_fields)}


def parse_float(e: Entry, path: Path, what: str, text: str | None = None) -> float:
    text = e.value if text is None else text
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise DataDirError(f"{path}:{e.lineno}: id '{e.key}': {what} is not a number: {text!r}")
    return v


def parse_segment(e: Entry, path: Path) -> Segment:
    rec, s, t = e.value.split()
    start, end = parse_float(e, path, "start time", s), parse_float(e, path, "end time", t)
    if start < 0 or (end != -1 and end <= start):
        raise DataDirError(f"{path}:{e.lineno}: utterance '{e.key}': bad segment times "
                           f"start={s} end={t} (need 0 <= start < end, or end = -1)")
    return Segment(rec, start, end)


def parse_duration(e: Entry, path: Path) -> float:
    v = parse_float(e, path, "duration")
    if v <= 0:
        raise DataDirError(f"{path}:{e.lineno}: utterance '{e.key}': duration must be > 0, got {e.value}")
    return v


def read_segments(path: str | os.PathLike) -> dict[str, Segment]:
    path = Path(path)
    return {e.key: parse_segment(e, path) for e in read_entries(path, FIELD_COUNTS["segments"])}


def read_utt2dur(path: str | os.PathLike) -> dict[str, float]:
    path = Path(path)
    return {e.key: parse_duration(e, path) for e in read_entries(path, (2, 2))}


# ----------------------------------------------------------------------------------------------
# writing

def format_float(v: float) -> str:
    """Seconds with microsecond precision, no trailing zeros: 1.5 -> '1.5', 2.0 -> '2.0'."""
    s = f"{float(v):.6f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def format_value(v) -> str:
    if isinstance(v, Segment):
        return f"{v.rec} {format_float(v.start)} {format_float(v.end) if v.end != -1 else '-1'}"
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, (list, tuple)):
        return " ".join(format_value(x) for x in v)
    return str(v)


def write_kv(path: str | os.PathLike, mapping: Mapping[str, object]) -> None:
    """Write ``id value`` lines sorted by id (LC_ALL=C order), atomically.

    Values may be str, float (seconds), Segment, or a list (joined by spaces).
    """
    with atomic_open(path, "w") as f:
        for key in sorted(mapping):
            if not key or any(c.isspace() for c in key):
                raise DataDirError(f"{path}: invalid id {key!r} (empty or contains whitespace)")
            val = format_value(mapping[key])
            f.write(f"{key} {val}\n" if val != "" else f"{key}\n")


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


# ----------------------------------------------------------------------------------------------
# the directory object

class DataDir:
    """Lazy, checked access to a Kaldi data dir. Each file is parsed (and checked) on first use.

    Attributes: ``.utts`` (sorted ids), ``.text``, ``.utt2spk``, ``.spk2utt``, ``.utt2lang``,
    ``.wav_scp`` (dict id -> path or ``cmd |``), ``.segments`` (dict utt -> Segment, or None),
    ``.utt2dur`` (dict utt -> seconds, or None). A missing required file raises DataDirError.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataDirError(f"{self.path}: data directory does not exist")
        self._cache: dict[str, object] = {}

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def _get(self, name: str, reader, optional: bool = False):
        if name not in self._cache:
            if not self.has(name):
                if optional:
                    return None
                raise DataDirError(f"{self.path}: required file {name} does not exist")
            self._cache[name] = reader(self.path / name)
        return self._cache[name]

    text = property(lambda self: self._get("text", read_kv))
    utt2spk = property(lambda self: self._get("utt2spk", read_kv))
    utt2lang = property(lambda self: self._get("utt2lang", read_kv))
    wav_scp = property(lambda self: self._get("wav.scp", read_kv))
    segments = property(lambda self: self._get("segments", read_segments, optional=True))
    utt2dur = property(lambda self: self._get("utt2dur", read_utt2dur, optional=True))

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        return {k: v.split() for k, v in self._get("spk2utt", read_kv).items()}

    @property
    def utts(self) -> list[str]:
        """Utterance ids: from utt2spk (Kaldi's canonical list), else text, segments or wav.scp."""
        for name in ("utt2spk", "text", "segments", "wav.scp"):
            if self.has(name):
                return list(self._get(name, read_segments if name == "segments" else read_kv))
        raise DataDirError(f"{self.path}: no utt2spk, text, segments or wav.scp: not a data dir")

    def recording_of(self, utt: str) -> tuple[str, Segment | None]:
        """(wav.scp id, segment or None) for an utterance."""
        segs = self.segments
        if segs is None:
            return utt, None
        if utt not in segs:
            raise DataDirError(f"{self.path / 'segments'}: no segment for utterance '{utt}'")
        return segs[utt].rec, segs[utt]

    @staticmethod
    def write(path: str | os.PathLike, *, clean: bool = True, **files: Mapping[str, object] | None) -> None:
        """Write a data dir: keyword = file name with '.' as '_' (``wav_scp=``, ``feats_scp=``).

        ``spk2utt`` is derived from ``utt2spk`` when not given. With ``clean`` (default), known Kaldi
        files in ``path`` that are not being written are removed, so no stale file survives.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        named = {k.replace("_scp", ".scp"): v for k, v in files.items() if v is not None}
        unknown = set(named) - set(ALL_FILES)
        if unknown:
            raise ValueError(f"DataDir.write: unknown file(s) {sorted(unknown)}")
        if "utt2spk" in named and "spk2utt" not in named:
            named["spk2utt"] = utt2spk_to_spk2utt(named["utt2spk"])
        if clean:
            for name in set(ALL_FILES) - set(named):
                if (path / name).is_file():
                    (path / name).unlink()
        for name in ALL_FILES:
            if name in named:
                write_kv(path / name, named[name])


# ----------------------------------------------------------------------------------------------
# the validator

@dataclass
class DataDirSummary:
    path: str
    n_utts: int
    n_spks: int
    lang_counts: dict[str, int]
    hours: float | None
    hours_source: str  # "utt2dur", "segments", "audio" or "unknown"
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        langs = ",".join(f"{k}:{v}" for k, v in sorted(self.lang_counts.items()))
        hours = "? hours (no utt2dur; run utils/get_utt2dur.sh)" if self.hours is None \
            else f"{self.hours:.3f} hours (from {self.hours_source})"
        return (f"validate_data_dir: {self.path}: OK: {self.n_utts} utterances, {self.n_spks} speakers, "
                f"{len(self.lang_counts)} languages ({langs}), {hours}")


def _ids_differ(path: Path, a_name: str, a: list[Entry], b_name: str, b: list[Entry], kind: str) -> None:
    """Raise Kaldi's "lists ... differ, partial diff is:" with file:line for each differing id."""
    a_ids, b_ids = {e.key for e in a}, {e.key for e in b}
    if a_ids == b_ids:
        return
    only_a = [e for e in a if e.key not in b_ids]
    only_b = [e for e in b if e.key not in a_ids]
    lines = [f"< {path / a_name}:{e.lineno}: {e.key} (not in {b_name})" for e in only_a[:5]]
    lines += [f"> {path / b_name}:{e.lineno}: {e.key} (not in {a_name})" for e in only_b[:5]]
    more = len(only_a) + len(only_b) - len(lines)
    if more > 0:
        lines.append(f"... and {more} more")
    raise DataDirError(f"in {path}, {kind} lists extracted from {a_name} and {b_name} differ "
                       f"({len(only_a)} only in {a_name}, {len(only_b)} only in {b_name}); "
                       f"partial diff is:\n" + "\n".join(lines) + "\nrun utils/fix_data_dir.sh to keep "
                       "the intersection")


def _read_all(path: Path, require_text: bool) -> dict[str, list[Entry]]:
    required = ["wav.scp", "utt2spk", "spk2utt", "utt2lang"] + (["text"] if require_text else [])
    for name in required:
        if not (path / name).is_file():
            raise DataDirError(f"in {path}: required file {path / name} does not exist")
    return {name: read_entries(path / name) for name in ALL_FILES if (path / name).is_file()}


def _check_line_ends(path: Path) -> None:
    """No trailing whitespace or carriage return: shell tools (cut, join, awk -F' ') keep it as
    part of the last field, so 'en ' would be another language than 'en'."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip(b"\n")
            if line.endswith(b"\r"):
                raise DataDirError(f"{path}:{lineno}: Windows line ending (CR LF); convert the file "
                                   "(dos2unix, or sed -i 's/\\r$//' FILE)")
            if line != line.rstrip():
                raise DataDirError(f"{path}:{lineno}: trailing whitespace after the last field; remove it "
                                   "(sed -i 's/[[:space:]]*$//' FILE): Kaldi's shell tools would keep it "
                                   "as part of the value")


def _check_id_sets(path: Path, files: dict[str, list[Entry]]) -> None:
    base = files["utt2spk"]
    per_utt = [n for n in PER_UTT_FILES if n in files and n != "utt2spk"]
    per_utt.append("segments" if "segments" in files else "wav.scp")
    for name in per_utt:
        _ids_differ(path, "utt2spk", base, name, files[name], "utterance")
    if "segments" in files:
        recs = [Entry(e.lineno, e.value.split()[0], "") for e in files["segments"]]
        seen: dict[str, Entry] = {}
        for e in recs:
            seen.setdefault(e.key, e)
        _ids_differ(path, "segments", list(seen.values()), "wav.scp", files["wav.scp"], "recording")


def _check_spk2utt(path: Path, files: dict[str, list[Entry]]) -> None:
    expected = utt2spk_to_spk2utt({e.key: e.value for e in files["utt2spk"]})
    for e in files["spk2utt"]:
        got = e.value.split()
        if e.key not in expected:
            raise DataDirError(f"{path / 'spk2utt'}:{e.lineno}: speaker '{e.key}' is not in utt2spk")
        if sorted(got) != expected[e.key]:
            diff = sorted(set(got) ^ set(expected[e.key]))[:5]
            raise DataDirError(f"{path / 'spk2utt'}:{e.lineno}: speaker '{e.key}': utterances differ from "
                               f"utt2spk (e.g. {', '.join(diff) or 'duplicates'}); regenerate with "
                               f"utils/utt2spk_to_spk2utt.pl")
    missing = sorted(set(expected) - {e.key for e in files["spk2utt"]})
    if missing:
        raise DataDirError(f"{path / 'spk2utt'}: speaker '{missing[0]}' of utt2spk is missing "
                           f"({len(missing)} speakers missing)")


def _check_contents(path: Path, files: dict[str, list[Entry]], known_langs) -> None:
    for e in files.get("text", []):
        if not e.value.strip():
            raise DataDirError(f"{path / 'text'}:{e.lineno}: utterance '{e.key}' has an empty transcript")
    known = set(KNOWN_LANGS) if known_langs is None else set(known_langs)
    for e in files["utt2lang"]:
        if e.value not in known:
            which = "not one of Whisper's language codes" if known_langs is None \
                else f"not in the language set [{', '.join(sorted(known))}]"
            raise DataDirError(f"{path / 'utt2lang'}:{e.lineno}: utterance '{e.key}': unknown language "
                               f"code '{e.value}' ({which}; use ISO 639-1, e.g. en, zh, ja)")
    for e in files.get("utt2dur", []):
        parse_duration(e, path / "utt2dur")
    for e in files.get("segments", []):
        parse_segment(e, path / "segments")
    for e in files.get("utt2num_frames", []):
        if not e.value.isdigit() or int(e.value) <= 0:
            raise DataDirError(f"{path / 'utt2num_frames'}:{e.lineno}: utterance '{e.key}': frame count "
                               f"must be a positive integer, got {e.value!r}")


def _check_audio(path: Path, files: dict[str, list[Entry]]) -> dict[str, float]:
    """Decode every recording fully; return recording id -> duration (s). Checks segment bounds,
    and that every utterance is long enough for dump_feats (one log-mel frame)."""
    from zlora.data.audio import AudioError, read_audio

    durs: dict[str, float] = {}
    for e in files["wav.scp"]:
        try:
            wave, sr = read_audio(e.value, utt=e.key)
        except AudioError as err:
            raise DataDirError(f"{path / 'wav.scp'}:{e.lineno}: {err}") from err
        durs[e.key] = len(wave) / sr
        if "segments" not in files:
            _check_long_enough(path / "wav.scp", e, math.ceil(len(wave) * 16000 / sr))
    for e in files.get("segments", []):
        seg = parse_segment(e, path / "segments")
        dur = durs[seg.rec]
        if seg.start >= dur or seg.end > dur + SEGMENT_TOLERANCE_S:
            raise DataDirError(f"{path / 'segments'}:{e.lineno}: utterance '{e.key}': segment "
                               f"[{seg.start}, {seg.end}] lies outside recording '{seg.rec}' "
                               f"(duration {dur:.3f} s)")
        end = dur if seg.end == -1 else min(seg.end, dur)
        _check_long_enough(path / "segments", e, math.ceil((end - seg.start) * 16000))
    return durs


def _check_long_enough(path: Path, e: Entry, samples_16k: int) -> None:
    """dump_feats needs more than N_FFT/2 samples at 16 kHz for one log-mel frame (12.5 ms)."""
    from zlora.data.features import N_FFT

    if samples_16k <= N_FFT // 2:
        raise DataDirError(f"{path}:{e.lineno}: utterance '{e.key}': {samples_16k / 16:.1f} ms of audio is too "
                           f"short for one log-mel frame (dump_feats needs more than {N_FFT // 2} samples at "
                           "16 kHz, 12.5 ms); drop it or fix the recording")


def _hours(files: dict[str, list[Entry]], rec_durs: dict[str, float] | None) -> tuple[float | None, str]:
    if "utt2dur" in files:
        return sum(float(e.value) for e in files["utt2dur"]) / 3600, "utt2dur"
    if "segments" in files:
        total = 0.0
        for e in files["segments"]:
            rec, s, t = e.value.split()
            if float(t) == -1:
                if rec_durs is None:
                    return None, "unknown"
                t = rec_durs[rec]
            total += float(t) - float(s)
        return total / 3600, "segments"
    if rec_durs is not None:
        return sum(rec_durs.values()) / 3600, "audio"
    return None, "unknown"


def validate_data_dir(path: str | os.PathLike, known_langs: Iterable[str] | None = None,
                      check_audio: bool = True, require_text: bool = True) -> DataDirSummary:
    """Check a data dir like Kaldi's validate_data_dir.sh; raise DataDirError at the first problem.

    ``known_langs``: allowed utt2lang codes (default: Whisper's languages, :data:`KNOWN_LANGS`).
    ``check_audio``: decode every recording fully (catches missing, corrupt, truncated, empty audio
    and failing ``cmd |`` pipes) and check segments against recording lengths.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: data directory does not exist")
    files = _read_all(path, require_text)
    if not files["utt2spk"]:
        raise DataDirError(f"in {path}: {path / 'utt2spk'} is empty: no utterances")
    _check_id_sets(path, files)
    _check_contents(path, files, None if known_langs is None else list(known_langs))
    for name in files:
        _check_line_ends(path / name)
    _check_spk2utt(path, files)
    rec_durs = _check_audio(path, files) if check_audio else None
    hours, source = _hours(files, rec_durs)
    langs: dict[str, int] = {}
    for e in files["utt2lang"]:
        langs[e.value] = langs.get(e.value, 0) + 1
    return DataDirSummary(str(path), len(files["utt2spk"]), len(files["spk2utt"]), langs, hours, source)


# ----------------------------------------------------------------------------------------------
# manipulating data dirs (fix, subset, combine)

def read_lenient(path: str | os.PathLike, n_fields: tuple[int, int | None] | None = None
                 ) -> tuple[dict[str, str], list[str]]:
    """Read a table keeping what is usable: (id -> value sorted by id, list of problems).

    Non-UTF-8 and malformed lines are dropped; of duplicate ids the first line is kept.
    """
    path = Path(path)
    n_fields = n_fields or FIELD_COUNTS.get(path.name, (2, None))
    table: dict[str, str] = {}
    problems: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = _decode(raw, path, lineno).rstrip("\r\n")
                if lineno == 1 and line.startswith(BOM):
                    line = line[len(BOM):]
                    problems.append(f"{path}:1: removed a UTF-8 byte-order mark (BOM) before the first id")
                e = split_line(line, path, lineno, n_fields)
                if path.name == "segments":
                    parse_segment(e, path)
                elif path.name in ("utt2dur", "reco2dur"):
                    parse_duration(e, path)
            except DataDirError as err:
                problems.append(f"{err} (line dropped)")
                continue
            if e.key in table:
                problems.append(f"{path}:{lineno}: duplicate id '{e.key}' (kept the first line)")
                continue
            table[e.key] = e.value
    return {k: table[k] for k in sorted(table)}, problems


def load_tables(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """All known Kaldi files of a dir, strictly checked: file name -> {id: value}."""
    path = Path(path)
    return {name: read_kv(path / name) for name in ALL_FILES if (path / name).is_file()}


def filter_tables(tables: Mapping[str, Mapping[str, str]], utts: Iterable[str]) -> dict[str, dict[str, str]]:
    """Keep only ``utts`` in every per-utterance file, and the recordings/speakers they use.

    spk2utt is rebuilt from the filtered utt2spk.
    """
    keep = set(utts)
    out: dict[str, dict[str, str]] = {}
    for name, table in tables.items():
        if name in PER_UTT_FILES or (name == "wav.scp" and "segments" not in tables) or name == "segments":
            out[name] = {k: v for k, v in table.items() if k in keep}
    if "segments" in tables:
        recs = {v.split()[0] for v in out["segments"].values()}
        for name in ("wav.scp", *PER_RECO_FILES):
            if name in tables:
                out[name] = {k: v for k, v in tables[name].items() if k in recs}
    if "utt2spk" in out:
        spks = set(out["utt2spk"].values())
        out["spk2utt"] = {s: " ".join(u) for s, u in utt2spk_to_spk2utt(out["utt2spk"]).items()}
        if "spk2gender" in tables:
            out["spk2gender"] = {k: v for k, v in tables["spk2gender"].items() if k in spks}
    return out


def write_tables(path: str | os.PathLike, tables: Mapping[str, Mapping[str, str]]) -> None:
    """Write {file name: {id: value}} as a data dir (stale known files removed)."""
    DataDir.write(path, **{name.replace(".scp", "_scp"): t for name, t in tables.items()})


def copy_subset(src: str | os.PathLike, dst: str | os.PathLike,
                utts: Iterable[str]) -> dict[str, dict[str, str]]:
    """Write to ``dst`` the data dir ``src`` restricted to ``utts``; returns the written tables."""
    tables = filter_tables(load_tables(src), utts)
    write_tables(dst, tables)
    return tables


# ----------------------------------------------------------------------------------------------
# large tables (millions of lines): columns instead of Entry objects

def read_table(path: str | os.PathLike, n_fields: tuple[int, int | None] | None = None
               ) -> tuple[list[str], list[str]]:
    """(ids, values) of a sorted Kaldi table, with read_entries' checks, ~10x faster for the
    multi-million-line tables of a large corpus (no Entry object per line).

    Lines with only single spaces take the fast path (``partition``); anything else (tabs, runs
    of spaces, CR) the general one. Any problem is re-read with :func:`read_entries`, so the
    error names the file, the line and the id exactly as :func:`read_kv` does.
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file does not exist")
    n_fields = n_fields or FIELD_COUNTS.get(path.name, (2, None))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        read_entries(path, n_fields)            # raises, naming the line
        raise
    pairs = _split_pairs(text) if n_fields[0] == 2 else None     # two fields a line: the common case
    keys, values = pairs if pairs is not None else _split_table(text)
    if not _table_ok(keys, values, n_fields):
        entries = read_entries(path, n_fields)  # raises with file:line and id
        return [e.key for e in entries], [e.value for e in entries]
    return keys, values


def _split_pairs(text: str) -> tuple[list[str], list[str]] | None:
    """``id value`` tables (utt2lang, utt2dur, utt2num_samples, most scp files): one ``str.split``
    of the whole text, used when every line is exactly two fields (checked on the separator bytes: space,
    newline, space, newline, ...); None otherwise."""
    parts = text.split()
    n_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if len(parts) != 2 * n_lines:
        return None
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    seps = raw[(raw == 32) | (raw == 10)]
    if len(seps) not in (2 * n_lines, 2 * n_lines - 1) or (seps[0::2] != 32).any() or (seps[1::2] != 10).any():
        return None
    return parts[0::2], parts[1::2]


def _split_table(text: str) -> tuple[list[str], list[str]]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\t" in text or "\r" in text or "  " in text or " \n" in text or text.startswith(" ") \
            or "\n " in text or text.endswith(" "):
        parts = [line.split(None, 1) for line in lines]
        return [p[0] if p else "" for p in parts], [p[1].rstrip() if len(p) > 1 else "" for p in parts]
    parts = [line.partition(" ") for line in lines]
    return [p[0] for p in parts], [p[2] for p in parts]


def _table_ok(keys: list[str], values: list[str], n_fields: tuple[int, int | None]) -> bool:
    """Field counts in range, ids non-empty, strictly increasing (sorted, unique)."""
    lo, hi = n_fields
    if not all(keys):
        return False
    if lo >= 2 and not all(values):
        return False
    if hi == 2 and any(" " in v or "\t" in v for v in values):
        return False
    if hi is not None and hi > 2 and any(len(v.split()) > hi - 1 for v in values):
        return False
    if lo > 2 and any(len(v.split()) < lo - 1 for v in values):
        return False
    return not any(map(operator.ge, keys[:-1], keys[1:]))
