"""Audio loading for wav.scp entries: files, ``cmd |`` pipes and segments.

Policy (one rule everywhere, training, feature dumping and decoding alike):
- Audio is decoded with soundfile (libsndfile) to float32; multi-channel audio is averaged to mono.
- Any sample rate other than 16 kHz is **resampled** to 16 kHz with
  ``scipy.signal.resample_poly`` (polyphase, Kaiser-windowed anti-aliasing filter). We resample
  rather than fail because corpora mix rates (espeak-ng writes 22.05 kHz, Common Voice 48 kHz mp3).
- Missing, zero-length, corrupt or truncated files, non-finite samples and failing pipes raise
  :class:`AudioError` naming the utterance and the path or command.

Formats decodable here (measured with soundfile 0.14.0 / bundled libsndfile 1.2.2): WAV (PCM and
float), FLAC, OGG/Vorbis, OGG/Opus, MP3 (MPEG layer I-III), plus AIFF, AU, CAF, W64, RF64, NIST
SPHERE and other libsndfile formats. m4a/AAC is NOT decodable by libsndfile: convert it with a
``ffmpeg -i x.m4a -f wav - |`` pipe in wav.scp.
"""
from __future__ import annotations

import io
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from zlora.utils.cli import UserError

TARGET_SR = 16000
# libsndfile logs "data : <declared> (should be <available>)" when a WAV/AIFF header promises more
# audio than the file holds, i.e. the file was truncated; it then silently reads what is there.
_TRUNCATED = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")
# Writers that stream to a pipe cannot seek back to fix the header and leave a placeholder size.
_STREAMING_SIZE = 0x7FFF0000


class AudioError(UserError):
    """Unreadable audio; the message names the utterance and the path or command."""


def is_pipe(spec: str) -> bool:
    return spec.rstrip().endswith("|")


def _who(utt: str | None, spec: str) -> str:
    kind = "command" if is_pipe(spec) else "audio file"
    return (f"utterance '{utt}': " if utt else "") + f"{kind} {spec.strip()!r}"


def run_pipe(spec: str, utt: str | None = None) -> bytes:
    """Run a wav.scp ``cmd |`` entry and return its stdout.

    A Kaldi pipe *is* a shell command, so it runs under ``bash -o pipefail -c`` (pipefail: a failure
    anywhere in the pipeline counts). Nothing else is ever passed to a shell.
    """
    cmd = spec.rstrip()[:-1].strip()
    try:
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as e:
        raise AudioError(f"{_who(utt, spec)}: could not run: {e}") from e
    err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
    if proc.returncode != 0:
        raise AudioError(f"{_who(utt, spec)}: failed with exit code {proc.returncode}"
                         + (f": {err}" if err else ""))
    if not proc.stdout:
        raise AudioError(f"{_who(utt, spec)}: produced no output" + (f" ({err})" if err else ""))
    return proc.stdout


def _check_not_truncated(f: sf.SoundFile, spec: str, utt: str | None) -> None:
    m = _TRUNCATED.search(f.extra_info or "")
    if m and int(m.group(1)) < _STREAMING_SIZE and int(m.group(2)) < int(m.group(1)):
        raise AudioError(f"{_who(utt, spec)}: truncated: the header declares {m.group(1)} bytes of "
                         f"audio but the file holds {m.group(2)}")


def _frame_range(n: int, sr: int, start: float | None, end: float | None, spec: str,
                 utt: str | None) -> tuple[int, int]:
    """Sample range [a, b) of the segment [start, end] s; end None or -1 = end of file."""
    from zlora.data.kaldi import SEGMENT_TOLERANCE_S

    dur = n / sr
    s = 0.0 if start is None else float(start)
    e = dur if end is None or end == -1 else float(end)
    if s < 0 or s >= dur or e <= s or e > dur + SEGMENT_TOLERANCE_S:
        raise AudioError(f"{_who(utt, spec)}: segment [{s}, {e}] lies outside the recording "
                         f"(duration {dur:.3f} s)")
    return int(round(s * sr)), min(n, int(round(e * sr)))


def _decode(source, spec: str, utt: str | None, start, end, check_truncation: bool):
    """Decode ``source`` (path or BytesIO) to ((N,) float32 mono at native rate, sr)."""
    try:
        with sf.SoundFile(source) as f:
            if check_truncation:
                _check_not_truncated(f, spec, utt)
            sr, n = f.samplerate, f.frames
            if n == 0:
                raise AudioError(f"{_who(utt, spec)}: zero-length audio (no samples)")
            a, b = _frame_range(n, sr, start, end, spec, utt)
            if a > 0:
                f.seek(a)
            x = f.read(b - a, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        if isinstance(e, AudioError):
            raise
        raise AudioError(f"{_who(utt, spec)}: unreadable or corrupt audio: {e}") from e
    if x.shape[0] < b - a:
        raise AudioError(f"{_who(utt, spec)}: truncated: expected {b - a} samples, decoded {x.shape[0]}")
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.isfinite(x).all():
        raise AudioError(f"{_who(utt, spec)}: audio contains NaN or Inf samples")
    return np.ascontiguousarray(x, dtype=np.float32), sr


def read_audio(spec: str, utt: str | None = None, start: float | None = None,
               end: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a wav.scp value (path or ``cmd |``) at its native rate -> ((N,) float32, sr)."""
    if is_pipe(spec):
        return _decode(io.BytesIO(run_pipe(spec, utt)), spec, utt, start, end, check_truncation=False)
    path = Path(spec.strip())
    if not path.is_file():
        raise AudioError(f"{_who(utt, spec)}: file does not exist")
    if path.stat().st_size == 0:
        raise AudioError(f"{_who(utt, spec)}: zero-length file (0 bytes)")
    return _decode(str(path), spec, utt, start, end, check_truncation=True)


def resample(x: np.ndarray, sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """(N,) float32 at ``sr`` -> (ceil(N * target_sr / sr),) float32 at ``target_sr``."""
    if sr == target_sr:
        return x
    from scipy.signal import resample_poly  # imported lazily: ~1.5 s of CPU, needed only here

    g = math.gcd(int(sr), int(target_sr))
    return resample_poly(x, target_sr // g, sr // g).astype(np.float32, copy=False)


def load_audio(spec: str, start: float | None = None, end: float | None = None,
               target_sr: int = TARGET_SR, utt: str | None = None) -> np.ndarray:
    """Load a wav.scp value (a path or a ``cmd |`` pipe), optionally the segment [start, end] s,
    as (N,) float32 mono at ``target_sr`` (always resampled; see the module policy)."""
    x, sr = read_audio(spec, utt=utt, start=start, end=end)
    return resample(x, sr, target_sr)


def load_utterance(datadir, utt: str, target_sr: int = TARGET_SR) -> np.ndarray:
    """(N,) float32 mono 16 kHz audio of one utterance of a :class:`zlora.data.kaldi.DataDir`."""
    from zlora.data.kaldi import DataDirError

    rec, seg = datadir.recording_of(utt)
    wav_scp = datadir.wav_scp
    if rec not in wav_scp:
        raise DataDirError(f"{datadir.path / 'wav.scp'}: no entry for '{rec}' (utterance '{utt}')")
    if seg is None:
        return load_audio(wav_scp[rec], target_sr=target_sr, utt=utt)
    return load_audio(wav_scp[rec], seg.start, seg.end, target_sr=target_sr, utt=utt)


def audio_duration(spec: str, utt: str | None = None) -> float:
    """Duration in seconds. Files: from the header (cheap; truncation is still detected);
    pipes: by running and decoding them."""
    if is_pipe(spec):
        x, sr = read_audio(spec, utt=utt)
        return len(x) / sr
    path = Path(spec.strip())
    if not path.is_file():
        raise AudioError(f"{_who(utt, spec)}: file does not exist")
    try:
        with sf.SoundFile(str(path)) as f:
            _check_not_truncated(f, spec, utt)
            if f.frames == 0:
                raise AudioError(f"{_who(utt, spec)}: zero-length audio (no samples)")
            return f.frames / f.samplerate
    except (sf.LibsndfileError, RuntimeError) as e:
        if isinstance(e, AudioError):
            raise
        raise AudioError(f"{_who(utt, spec)}: unreadable or corrupt audio: {e}") from e


def utterance_durations(datadir) -> dict[str, float]:
    """utt -> duration (s) for every utterance of a DataDir: segment lengths when ``segments``
    exists (``end = -1`` measured from the recording), else the audio's own length."""
    if datadir.segments is None:
        return {utt: audio_duration(spec, utt=utt) for utt, spec in datadir.wav_scp.items()}
    rec_durs: dict[str, float] = {}
    out: dict[str, float] = {}
    for utt, seg in datadir.segments.items():
        end = seg.end
        if end == -1:
            if seg.rec not in rec_durs:
                rec_durs[seg.rec] = audio_duration(datadir.wav_scp[seg.rec], utt=utt)
            end = rec_durs[seg.rec]
        out[utt] = end - seg.start
    return out
