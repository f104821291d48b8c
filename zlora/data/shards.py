"""Audio shards: FLAC-compressed utterances in kaldiio arks (ESPnet's ``flac.ark``).

An entry is ``<utt> `` + ``AUDIO`` + a length header + a complete 16-bit, 16-kHz mono FLAC file:
exactly what ``kaldiio.save_ark(..., write_function="soundfile", write_kwargs={"format": "flac"})``
writes, so ``kaldiio.load_mat("x.ark:OFFSET")`` reads it too. The scp offset points at ``AUDIO``.

Samples are stored as int16 ``round(x * 32768)``: for the usual 16-bit, 16-kHz sources this is
exactly what soundfile decoded (it reads PCM16 as k / 32768), so a shard is lossless with
respect to the corpus; audio that was resampled or decoded from a lossy format is quantised to
16 bits (noise 96 dB below full scale, under Whisper's 80-dB log-mel range).

A shard is written to ``<name>.tmp``, read back entry by entry (header, FLAC decode, sample count,
CRC-32 of the samples) and only then renamed into place.
"""
from __future__ import annotations

import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import soundfile as sf

from zlora.data.audio import TARGET_SR
from zlora.utils.cli import UserError

MAGIC = b"AUDIO"


class ShardError(UserError):
    """A shard failed validation; the message names the shard and the utterance."""


@dataclass
class ShardEntry:
    utt: str
    offset: int          # byte offset of MAGIC (what audio.scp points at)
    samples: int         # 16-kHz samples
    nbytes: int          # FLAC bytes
    crc: int             # CRC-32 of the int16 samples


def to_int16(x: np.ndarray) -> np.ndarray:
    """(N,) float32 in [-1, 1) -> int16 with round(x * 32768), clipped."""
    return np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def length_header(n: int) -> bytes:
    """kaldiio's length header: one byte with the byte count, then ``n`` little-endian."""
    size = max(1, (n.bit_length() + 7) // 8)
    return bytes([size]) + n.to_bytes(size, "little")


def encode_flac(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, TARGET_SR, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_shard(path: Path, utts: Iterable[str], load: Callable[[str], np.ndarray]) -> list[ShardEntry]:
    """Write the utterances (``load(utt)`` -> (N,) float32 16 kHz) to ``path`` (via ``path.tmp``),
    validate it and rename it into place; returns its index."""
    tmp = path.with_name(path.name + ".tmp")
    entries = []
    try:
        with open(tmp, "wb") as f:
            for utt in utts:
                pcm = to_int16(load(utt))
                flac = encode_flac(pcm)
                f.write(f"{utt} ".encode("utf-8"))
                entries.append(ShardEntry(utt, f.tell(), len(pcm), len(flac), zlib.crc32(pcm.tobytes())))
                f.write(MAGIC + length_header(len(flac)) + flac)
            f.flush()
            os.fsync(f.fileno())
        validate_shard(tmp, entries, shown=path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return entries


def read_entry(f, offset: int, where: str) -> np.ndarray:
    """(N,) int16 samples of the entry at ``offset`` of the open shard ``f``."""
    head = os.pread(f.fileno(), 14, offset)
    if head[:5] != MAGIC or len(head) < 7:
        raise ShardError(f"{where}: no audio entry at offset {offset}")
    n = head[5]
    size = int.from_bytes(head[6:6 + n], "little")
    data = os.pread(f.fileno(), size, offset + 6 + n)
    if len(data) != size:
        raise ShardError(f"{where}: truncated at offset {offset} ({len(data)} of {size} bytes)")
    x, rate = sf.read(io.BytesIO(data), dtype="int16")
    if rate != TARGET_SR:
        raise ShardError(f"{where}: entry at offset {offset} has {rate} Hz, not {TARGET_SR}")
    return x


def validate_shard(path: Path, entries: list[ShardEntry], shown: Path | None = None) -> None:
    """Read every entry back: id before it, FLAC decodes, sample count and CRC as written, and
    nothing after the last one. Raises ShardError naming the shard and the utterance."""
    where = str(shown or path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        end = 0
        for e in entries:
            key = f"{e.utt} ".encode("utf-8")
            if os.pread(f.fileno(), len(key), e.offset - len(key)) != key:
                raise ShardError(f"{where}: utterance '{e.utt}': id not found before offset {e.offset}")
            try:
                x = read_entry(f, e.offset, f"{where}: utterance '{e.utt}'")
            except sf.LibsndfileError as err:
                raise ShardError(f"{where}: utterance '{e.utt}': FLAC does not decode: {err}") from err
            if len(x) != e.samples or zlib.crc32(x.tobytes()) != e.crc:
                raise ShardError(f"{where}: utterance '{e.utt}': read back {len(x)} samples that differ "
                                 f"from the {e.samples} written")
            end = e.offset + len(MAGIC) + len(length_header(e.nbytes)) + e.nbytes
    if end != size:
        raise ShardError(f"{where}: {size - end} unexpected bytes after the last entry")
