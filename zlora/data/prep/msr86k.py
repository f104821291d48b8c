"""MSR-86K (Li et al., Interspeech 2024; huggingface.co/datasets/Alex-Song/MSR-86K) -> Kaldi data dir.

The release is gated (manual approval) and we could not find its on-disk layout in any public
source (searched code, issue trackers, dataset cards: only the gate text and the language list,
es ko en fr de hi vi it nl pt th ru id ja ar, are public). So the expected layout is stated here,
explicitly, and kept small so it is easy to adapt: put (or link) each language and split as ::

    <root>/<lang>/<split>/manifest.jsonl      (form A)
    <root>/<lang>/<split>/wav.scp + text      (form B, Kaldi style; optional segments, utt2spk)

``<lang>`` may be the ISO code (``en``) or the English name (``english``); ``<split>`` is
``train`` or ``dev`` (MSR-86K has no test split; the paper evaluates on dev). Form A has one JSON
object per line::

    {"id": "...", "audio": "wavs/xyz.wav", "text": "...",          # required
     "speaker": "...", "start": 12.3, "end": 17.9}                   # optional

``audio`` is relative to the split dir (or absolute). With ``start``/``end`` the utterance is that
segment of ``audio`` (then every line needs them). In form B, wav.scp values that are relative
paths are taken relative to the split dir; pipes are kept.

Ids: MSR-86K's id format is unknown, so ids are made unique across languages with a prefix:
speaker = ``msr86k_<lang>-<speaker>`` (speaker = the ``speaker`` field / utt2spk, else the audio
file's stem for segments, else the id), utterance = ``msr86k_<lang>-<speaker>-<id>`` (or
``msr86k_<lang>-<id>`` when the id already starts with the speaker). utt2corpusid keeps the id.
Audio: the paper releases 16 kHz WAV (read directly); other extensions get an ffmpeg pipe.
"""
from __future__ import annotations

import json
from pathlib import Path

from zlora.data.kaldi import FIELD_COUNTS, iter_entries
from zlora.data.prep.common import (Collected, PrepError, Utt, audio_exists, check_lang, clean_text,
                                    speaker_utt_id)
from zlora.data.prep.registry import NoOptions, register_corpus

LANG_NAMES = {"en": "english", "fr": "french", "th": "thai", "ru": "russian", "vi": "vietnamese",
              "es": "spanish", "ko": "korean", "de": "german", "hi": "hindi", "it": "italian",
              "nl": "dutch", "pt": "portuguese", "id": "indonesian", "ja": "japanese", "ar": "arabic"}


def split_dir(root: Path, lang: str, split: str) -> Path:
    cands = [root / lang / split, root / LANG_NAMES.get(lang, lang) / split]
    for d in cands:
        if (d / "manifest.jsonl").is_file() or ((d / "wav.scp").is_file() and (d / "text").is_file()):
            return d
    raise PrepError(f"{root}: no MSR-86K {lang} {split}: expected manifest.jsonl or wav.scp + text in "
                    f"{' or '.join(str(c) for c in cands)} (see zlora/data/prep/msr86k.py for the layout)")


def resolve(d: Path, audio: str) -> str:
    if audio.rstrip().endswith("|") or Path(audio).is_absolute():
        return audio
    return str(d / audio)


def make_utt(lang: str, cid: str, spk_raw: str, text: str, audio: str, where: str,
             seg: tuple[str, float, float] | None) -> Utt:
    prefix = f"msr86k_{lang}-"
    utt, spk = prefix + speaker_utt_id(spk_raw, cid), prefix + spk_raw
    if seg is None:
        return Utt(utt, spk, lang, text, audio, cid, where)
    rec, start, end = seg
    return Utt(utt, spk, lang, text, audio, cid, where, prefix + rec, start, end)


def parse_json_line(line: str, where: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise PrepError(f"{where}: not a JSON object: {e}") from e
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("id", "audio", "text")):
        raise PrepError(f"{where}: needs string fields id, audio, text; got {line.strip()[:200]!r}")
    if ("start" in obj) != ("end" in obj):
        raise PrepError(f"{where}: give both start and end, or neither")
    return obj


def from_manifest(d: Path, lang: str, found: Collected, skip_missing: bool) -> None:
    manifest = d / "manifest.jsonl"
    segmented = None
    for lineno, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest}:{lineno}"
        obj = parse_json_line(line, where)
        has_seg = "start" in obj
        if segmented is not None and has_seg != segmented:
            raise PrepError(f"{where}: some lines have start/end and some do not")
        segmented = has_seg
        text, audio = clean_text(obj["text"]), resolve(d, obj["audio"])
        if not text:
            found.skip("empty transcript")
            continue
        stem = Path(obj["audio"]).stem
        seg = (stem, float(obj["start"]), float(obj["end"])) if has_seg else None
        spk_raw = obj.get("speaker") or (stem if has_seg else obj["id"])
        if audio_exists(audio, skip_missing, found, where):
            found.utts.append(make_utt(lang, obj["id"], spk_raw, text, audio, where, seg))


def read_table(path: Path, n_fields: tuple[int, int | None]) -> dict[str, tuple[str, str]]:
    """{id: (value, 'file:line')} of a Kaldi-style file, in file order (need not be sorted)."""
    out: dict[str, tuple[str, str]] = {}
    for e in iter_entries(path, n_fields):
        if e.key in out:
            raise PrepError(f"{path}:{e.lineno}: duplicate id {e.key!r} (first at {out[e.key][1]})")
        out[e.key] = (e.value, f"{path}:{e.lineno}")
    return out


def from_kaldi(d: Path, lang: str, found: Collected, skip_missing: bool) -> None:
    wav = read_table(d / "wav.scp", FIELD_COUNTS["wav.scp"])
    text = read_table(d / "text", (1, None))
    segs = read_table(d / "segments", (4, 4)) if (d / "segments").is_file() else None
    spk = read_table(d / "utt2spk", (2, 2)) if (d / "utt2spk").is_file() else {}
    for cid, (raw, where) in text.items():
        txt = clean_text(raw)
        if not txt:
            found.skip("empty transcript")
            continue
        seg = None
        if segs is not None:
            if cid not in segs:
                raise PrepError(f"{where}: utterance {cid!r} has no line in {d / 'segments'}")
            rec, s, e = segs[cid][0].split()
            seg = (rec, float(s), float(e))
        key = seg[0] if seg else cid
        if key not in wav:
            raise PrepError(f"{where}: {key!r} has no line in {d / 'wav.scp'}")
        audio = resolve(d, wav[key][0])
        spk_raw = spk[cid][0] if cid in spk else (seg[0] if seg else cid)
        if audio_exists(audio, skip_missing, found, wav[key][1]):
            found.utts.append(make_utt(lang, cid, spk_raw, txt, audio, where, seg))


def locate(root: Path, lang: str, split: str, opts: NoOptions) -> Path:
    return split_dir(root, lang, split)


@register_corpus("msr86k", layout="dir holding <lang>/<split>/ (manifest.jsonl, or wav.scp + text)",
                 locate=locate)
def collect(root: Path, lang: str, split: str, opts: NoOptions, skip_missing: bool = False) -> Collected:
    """All utterances of one MSR-86K language split (form A or B, see the module docstring)."""
    check_lang(lang, "msr86k")
    d = split_dir(root, lang, split)
    found = Collected()
    if (d / "manifest.jsonl").is_file():
        from_manifest(d, lang, found, skip_missing)
    else:
        from_kaldi(d, lang, found, skip_missing)
    return found
