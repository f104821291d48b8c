"""WenetSpeech (Zhang et al., ICASSP 2022; 10,000+ h Mandarin) -> Kaldi data dir with segments.

Official layout: ``WenetSpeech.json`` next to ``audio/`` ::

    {"dataset": "WenetSpeech", ..., "audios": [
       {"aid": "Y0000000000_--5llN02F84", "path": "audio/train/youtube/B00000/Y0000000000_--5llN02F84.opus",
        "duration": 2494.57, "format": "opus", "sample_rate": 16000, ...,
        "segments": [{"sid": "Y0000000000_--5llN02F84_S00000", "begin_time": 20.08, "end_time": 24.4,
                      "text": "...", "confidence": 1.0, "subsets": ["L"]}, ...]}, ...]}

Subsets: S, M, L (training, nested: S in M in L), W (weakly labelled), DEV, TEST_NET and
TEST_MEETING (the paper's two test sets, Table I). One Kaldi dir per subset: wav.scp maps each long
recording (aid) to its .opus file (OGG/Opus: soundfile decodes it and seeks to a segment, so no
ffmpeg pipe), ``segments`` holds ``sid aid begin end``, speaker = aid (a prefix of sid; WenetSpeech
has no speaker labels). ``root`` is WenetSpeech.json or its dir.

The JSON is large (GBs); it is read as a stream (json.JSONDecoder.raw_decode, one value at a time,
over a sliding buffer), so memory holds one ``audios`` item, not the whole file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from zlora.data.prep.common import Collected, PrepError, Utt, audio_exists, clean_text, speaker_utt_id
from zlora.data.prep.registry import register_corpus

SUBSETS = ("S", "M", "L", "W", "DEV", "TEST_NET", "TEST_MEETING")
_CHUNK = 1 << 22


def json_path(root: Path) -> Path:
    p = root if root.suffix == ".json" else root / "WenetSpeech.json"
    if not p.is_file():
        raise PrepError(f"{p}: WenetSpeech.json does not exist")
    return p


class _JsonStream:
    """Incremental reader of one JSON document: decode values one at a time from a sliding buffer."""

    def __init__(self, f, path: Path):
        self.f, self.path, self.buf, self.pos, self.eof = f, path, "", 0, False
        self.dec = json.JSONDecoder()

    def _more(self) -> bool:
        chunk = "" if self.eof else self.f.read(_CHUNK)
        self.eof = not chunk
        self.buf, self.pos = self.buf[self.pos:] + chunk, 0  # compact only when reading
        return bool(chunk)

    def peek(self, skip: str = " \t\r\n") -> str:
        """Next character after any in ``skip`` ('' at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in skip:
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos:self.pos + 1]

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            raise PrepError(f"{self.path}: malformed JSON: expected {ch!r} {what}")
        self.pos += 1

    def value(self, what: str):
        """Decode the next JSON value (reading more until it is complete)."""
        self.peek()
        while True:
            try:
                val, end = self.dec.raw_decode(self.buf, self.pos)
                # a number (or literal) touching the buffer's end may continue in the next chunk
                if end < len(self.buf) or self.eof or isinstance(val, (dict, list, str)):
                    self.pos = end
                    return val
                self._more()
            except json.JSONDecodeError as e:
                if not self._more():
                    raise PrepError(f"{self.path}: malformed or truncated JSON in {what}: {e.msg}") from e


def iter_audios(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (index, dict) for each item of the top-level ``audios`` array, streaming: the other
    top-level values are decoded and dropped, so memory holds one item at a time."""
    with open(path, encoding="utf-8") as f:
        js = _JsonStream(f, path)
        js.expect("{", "at the start of the file")
        while js.peek(" \t\r\n,") not in ("}", ""):
            key = js.value("a top-level key")
            js.expect(":", f"after key {key!r}")
            if key != "audios":
                js.value(f"the value of {key!r}")
                continue
            js.expect("[", "to open the audios array")
            index = 0
            while js.peek(" \t\r\n,") not in ("]", ""):
                yield index, js.value(f"audios item {index}")
                index += 1
            js.expect("]", "to close the audios array")
            return
    raise PrepError(f"{path}: no top-level \"audios\" array")


def add_audio(item: dict, index: int, base: Path, subset: str, min_conf: float,
              found: Collected, skip_missing: bool, where_file: Path) -> None:
    try:
        aid, rel, segs = item["aid"], item["path"], item["segments"]
    except (KeyError, TypeError) as e:
        raise PrepError(f"{where_file}: audios[{index}] lacks aid/path/segments ({e})") from e
    where = f"{where_file}: audios[{index}] (aid {aid})"
    chosen = [s for s in segs if subset in s.get("subsets", ())]
    if not chosen:
        return
    audio = str(base / rel)
    if not audio_exists(audio, skip_missing, found, where):
        found.skipped["audio file missing"] += len(chosen) - 1  # counted per segment
        return
    for k, s in enumerate(chosen):
        add_segment(s, aid, audio, min_conf, found, f"{where} segment {k}")


def add_segment(s: dict, aid: str, audio: str, min_conf: float, found: Collected, where: str) -> None:
    try:
        sid, begin, end, text = s["sid"], float(s["begin_time"]), float(s["end_time"]), s["text"]
    except (KeyError, TypeError, ValueError) as e:
        raise PrepError(f"{where}: needs sid, begin_time, end_time, text ({e})") from e
    if float(s.get("confidence", 1.0)) < min_conf:
        found.skip(f"confidence below {min_conf}")
        return
    text = clean_text(text)
    if not text:
        found.skip("empty transcript")
        return
    spk = aid if sid.startswith(aid) else sid
    found.utts.append(Utt(speaker_utt_id(spk, sid), spk, "zh", text, audio, sid, where, aid, begin, end))


@dataclass
class WenetSpeechOptions:
    min_confidence: float = field(default=0.0, metadata={
        "help": "drop segments with a lower label confidence"})


def locate(root: Path, lang: str, split: str, opts: WenetSpeechOptions) -> Path:
    if split not in SUBSETS:
        raise PrepError(f"WenetSpeech subset must be one of {', '.join(SUBSETS)}, got {split!r}")
    return json_path(root)


@register_corpus("wenetspeech", layout="WenetSpeech.json next to audio/ (the file or its dir)",
                 locate=locate, options=WenetSpeechOptions, default_lang="zh")
def collect(root: Path, lang: str, split: str, opts: WenetSpeechOptions, skip_missing: bool = False
            ) -> Collected:
    """All segments of one WenetSpeech subset (``split`` = S, M, L, W, DEV, TEST_NET, TEST_MEETING)."""
    if lang != "zh":
        raise PrepError(f"WenetSpeech is Mandarin (zh); got lang={lang!r}")
    path = locate(root, lang, split, opts)
    found = Collected()
    for index, item in iter_audios(path):
        add_audio(item, index, path.parent, split, opts.min_confidence, found, skip_missing, path)
    return found
