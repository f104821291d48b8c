"""espeak-ng as a subprocess: list voice variants, synthesise one utterance, resample, write WAV.

One process per utterance (~15 ms of start-up): splitting one long espeak-ng output back into
utterances would need timing marks the command line does not give, and a pool of processes
already keeps both cores busy.
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import resample_poly

_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z]+)*\)")  # "(en)": espeak-ng changed language rules
MIN_SECONDS = 0.2  # shorter output means espeak-ng skipped the text (unknown voice, bad input)


class SynthError(RuntimeError):
    """espeak-ng failed or produced no usable audio; the message names the utterance."""


@dataclass(frozen=True)
class UttSpec:
    """Everything that determines one utterance's audio and labels."""

    utt: str
    spk: str
    lang: str
    text: str
    voice: str      # espeak-ng -v argument, e.g. "de+m3"
    speed: int      # -s
    pitch: int      # -p
    word_gap: int   # -g


def require_espeak(espeak: str = "espeak-ng") -> str:
    path = shutil.which(espeak)
    if path is None:
        raise FileNotFoundError(
            f"{espeak} not found on PATH; install it (tools/install.sh, or apt-get install espeak-ng)")
    return path


def espeak_version(espeak: str = "espeak-ng") -> str:
    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def list_variants(espeak: str = "espeak-ng") -> list[str]:
    """Voice-variant file names (``m3``, ``klatt2``, ``Mr serious``), sorted."""
    out = subprocess.run([espeak, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    if not lines or "File" not in lines[0]:
        raise SynthError(f"unexpected `{espeak} --voices=variant` output: {out[:200]!r}")
    start, end = lines[0].index("File"), lines[0].index("Other")
    names = [ln[start:end].strip() for ln in lines[1:] if len(ln) > start]
    return sorted(n[len("!v/"):] for n in names if n.startswith("!v/"))


def language_switches(texts: list[str], voice: str, espeak: str = "espeak-ng") -> list[bool]:
    """For each text: does espeak-ng leave ``voice``'s rules for another language's while reading
    it (kanji or unreadable kana spelled as English "Japanese letter", Latin read as English)?

    Texts are checked many per espeak-ng call (one per line) and a failing batch is bisected, so
    the cost is a few calls per thousand texts when switches are rare.
    """
    if not texts:
        return []
    proc = subprocess.run([espeak, "-q", "-x", "-b", "1", "-v", voice], input="\n".join(texts).encode("utf-8"),
                          capture_output=True)
    if proc.returncode != 0:
        raise SynthError(f"espeak-ng -v {voice} (phoneme check of {texts[0]!r}...) exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace').strip()[:300]}")
    out = proc.stdout.decode("utf-8", errors="replace")
    if not _SWITCH.search(out):
        return [False] * len(texts)
    if len(texts) == 1:
        return [True]
    mid = len(texts) // 2
    return language_switches(texts[:mid], voice, espeak) + language_switches(texts[mid:], voice, espeak)


def parse_espeak_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """espeak-ng --stdout bytes -> (int16 samples, rate). Its header's sizes are placeholders
    (it streams), so the data chunk is taken to run to the end."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthError(f"{what}: espeak-ng output is not a WAV file ({len(data)} bytes)")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", data[pos + 8:pos + 16])
            bits = struct.unpack("<H", data[pos + 22:pos + 24])[0]
            if (fmt, channels, bits) != (1, 1, 16):
                raise SynthError(f"{what}: expected 16-bit mono PCM, got format {fmt}, {channels} ch, {bits} bit")
        elif cid == b"data":
            if rate is None:
                raise SynthError(f"{what}: WAV data chunk before fmt chunk")
            body = data[pos + 8:]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2"), rate
        pos += 8 + size + (size & 1)
    raise SynthError(f"{what}: no data chunk in espeak-ng output")


def resample_int16(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return x.astype(np.int16)
    g = gcd(rate, target)
    y = resample_poly(x.astype(np.float64), target // g, rate // g)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def trim_trailing_silence(x: np.ndarray, keep: int, rel_threshold: float = 0.01) -> np.ndarray:
    """Cut ``x`` (n,) to ``keep`` samples after its last sample louder than ``rel_threshold`` x its
    peak (-40 dB). Only the end: espeak-ng's own silence; pauses inside stay."""
    mag = np.abs(x.astype(np.int32))
    loud = np.flatnonzero(mag > rel_threshold * mag.max())
    return x[: min(len(x), int(loud[-1]) + 1 + keep)] if len(loud) else x


def synthesize(spec: UttSpec, sample_rate: int = 16000, espeak: str = "espeak-ng",
               max_trailing_silence: float | None = None) -> np.ndarray:
    """Speak ``spec.text``; returns int16 samples at ``sample_rate``, shape (n,), with at most
    ``max_trailing_silence`` seconds after the last sound (None: as espeak-ng made it)."""
    cmd = [espeak, "-v", spec.voice, "-s", str(spec.speed), "-p", str(spec.pitch),
           "-g", str(spec.word_gap), "-b", "1", "--stdout"]
    what = f"utterance {spec.utt} ({spec.voice}: {spec.text!r})"
    proc = subprocess.run(cmd, input=spec.text.encode("utf-8"), capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[:300]
        raise SynthError(f"{what}: espeak-ng exited {proc.returncode}: {err}")
    x, rate = parse_espeak_wav(proc.stdout, what)
    if len(x) < MIN_SECONDS * rate or not np.any(x):
        raise SynthError(f"{what}: espeak-ng produced {len(x) / rate:.3f} s of audio; "
                         f"stderr: {proc.stderr.decode(errors='replace').strip()[:300]}")
    y = resample_int16(x, rate, sample_rate)
    if max_trailing_silence is not None:
        y = trim_trailing_silence(y, round(max_trailing_silence * sample_rate))
    return y


def write_wav(path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit mono PCM with a plain 44-byte header (stdlib ``wave``: byte-for-byte reproducible)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
