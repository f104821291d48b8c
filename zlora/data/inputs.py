"""Where each utterance's input is, and reading it: feature matrices or audio, one index for a corpus.

An index maps an utterance's *row* (its position in the corpus) to its input, in numpy arrays
built once in the training process (:mod:`zlora.data.columns` says why not dicts): for entries
in Kaldi arks a file number and a byte offset, read through a per-process cache of open file
descriptors with ``os.pread`` (no reopen per utterance, and no shared file position between
forked workers); other entries (``wav.scp`` paths and pipes, ``segments``) keep their spec
string and segment times.

Inputs, by ``data.feats_type``:

- ``dumped``: ``feats.scp`` (dump_feats log-mel or dump_encoder states), lengths from its
  ``utt2num_frames``. A read returns the (T, D) float32 matrix.
- ``raw``: audio, lengths in 16-kHz samples. Either an utterance-level audio table (the
  ``audio.scp`` of ``python -m zlora.bin.dump_audio``: FLAC entries in kaldiio arks, lengths from
  its ``utt2num_samples``; or any wav.scp-like table of one file per utterance) or, with no table
  given, the data dir's ``wav.scp`` + ``segments``, lengths from the data dir's
  ``utt2num_samples`` or ``utt2dur``. Lengths are never measured by decoding files at start-up.
  A read returns (N,) float32 16-kHz samples, cut to the declared length (see ``read``).
"""
from __future__ import annotations

import io
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zlora.data.audio import TARGET_SR, AudioError, load_audio, resample
from zlora.data.columns import StringArray
from zlora.data.kaldi import DataDirError, read_segments, read_table
from zlora.utils.cli import UserError

SAMPLES_PER_FRAME = 160                 # 10-ms hop at 16 kHz (zlora.data.features)
# A declared length (utt2dur, utt2num_samples) may differ this much from the audio read (rounded
# times, a segment ending past its recording: zlora.data.kaldi.SEGMENT_TOLERANCE_S); more means
# the lengths table is stale and is an error naming the utterance.
LENGTH_TOLERANCE_S = 0.1
_ARK_ENTRY = re.compile(r"^(.+):(\d+)$")


class InputError(UserError):
    """An utterance's input could not be read; the message names the utterance and the file."""


class Handles:
    """Per-process LRU of read-only file descriptors (re-opened after a fork: a descriptor
    inherited from the parent would work with pread, but its LRU state would not be ours)."""

    def __init__(self, paths: Sequence[str], max_open: int = 128):
        self.paths, self.max_open = list(paths), max_open
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    def pread(self, file_id: int, offset: int, n: int) -> bytes:
        if self._pid != os.getpid():
            self._fds, self._pid = OrderedDict(), os.getpid()
        fd = self._fds.get(file_id)
        if fd is None:
            fd = os.open(self.paths[file_id], os.O_RDONLY)
            self._fds[file_id] = fd
            if len(self._fds) > self.max_open:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(file_id)
        return os.pread(fd, n, offset)

    def __getstate__(self):     # spawned workers get paths only, and open their own
        return {"paths": self.paths, "max_open": self.max_open}

    def __setstate__(self, state):
        self.__init__(state["paths"], state["max_open"])


def split_ark_entries(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scp values -> (file_id (n,) int32, offset (n,) int64, files). Entries that are not
    ``path:offset`` into an existing file get file_id -1 (read by their spec instead)."""
    parts = [v.rpartition(":") for v in values]
    paths = {p: os.path.isfile(p) for p in dict.fromkeys(p[0] for p in parts)}   # few distinct arks
    files = [p for p, exists in paths.items() if p and exists]
    ids = {p: i for i, p in enumerate(files)}
    file_id = np.fromiter((ids.get(p[0], -1) if p[2].isdigit() else -1 for p in parts),
                          dtype=np.int32, count=len(parts))
    offset = np.zeros(len(values), dtype=np.int64)
    ark = np.flatnonzero(file_id >= 0)
    if len(ark) == len(values):
        offset[:] = np.array([p[2] for p in parts], dtype=np.int64)
    elif len(ark):
        offset[ark] = np.array([parts[i][2] for i in ark.tolist()], dtype=np.int64)
    return file_id, offset, files


@dataclass
class InputIndex:
    """Inputs of a corpus's rows. ``kind``: "feats" (matrices) or "audio" (samples).

    file_id/offset: ark entries (file_id -1: read ``spec`` instead, a kaldiio/wav.scp value);
    start/end: segment times in seconds (NaN: the whole recording); length: declared rows
    (frames) or samples per row; source: the table it came from (for messages)."""
    kind: str
    ids: StringArray
    file_id: np.ndarray
    offset: np.ndarray
    spec: StringArray
    start: np.ndarray
    end: np.ndarray
    length: np.ndarray
    handles: Handles
    source: str
    check_finite: bool = True
    extra: int = 0          # entries of the table that belong to no utterance of the corpus

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> "InputIndex":
        """The index restricted to ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return InputIndex(self.kind, self.ids.take(rows), self.file_id[rows], self.offset[rows],
                          self.spec.take(rows), self.start[rows], self.end[rows], self.length[rows],
                          self.handles, self.source, self.check_finite, self.extra)

    def read_order(self, rows: Sequence[int]) -> list[int]:
        """``rows`` sorted by (file, offset): one pack's reads go forward through its shard."""
        return sorted(rows, key=lambda r: (int(self.file_id[r]), int(self.offset[r])))

    def read(self, row: int) -> np.ndarray:
        """The row's (T, D) float32 matrix or (N,) float32 16-kHz samples (see module doc)."""
        utt = self.ids[row]
        try:
            x = self._read_feats(row, utt) if self.kind == "feats" else self._read_audio(row, utt)
        except (InputError, AudioError):
            raise
        except Exception as e:  # kaldiio / libsndfile raise assorted errors on corrupt input
            raise InputError(f"{self.source}: cannot read utterance '{utt}': {e}") from e
        if self.check_finite and not np.isfinite(x).all():
            what = "features contain" if self.kind == "feats" else "audio contains"
            raise InputError(f"{self.source}: utterance '{utt}': {what} NaN or Inf")
        return x

    # ---- matrices ---------------------------------------------------------------------------
    def _read_feats(self, row: int, utt: str) -> np.ndarray:
        fid = int(self.file_id[row])
        mat = None
        if fid >= 0:
            head = self.handles.pread(fid, int(self.offset[row]), 15)
            if head[:5] == b"\0BFM " and head[5:6] == b"\4" and head[10:11] == b"\4":
                rows, cols = (int.from_bytes(head[6:10], "little", signed=True),
                              int.from_bytes(head[11:15], "little", signed=True))
                data = self.handles.pread(fid, int(self.offset[row]) + 15, rows * cols * 4)
                if len(data) < rows * cols * 4:
                    raise InputError(f"{self.source}: utterance '{utt}': truncated ark "
                                     f"{self.handles.paths[fid]} ({len(data)} of {rows * cols * 4} bytes)")
                mat = np.frombuffer(data, dtype="<f4").reshape(rows, cols).copy()
        if mat is None:             # other encodings (double, compressed, pipes): kaldiio
            import kaldiio

            spec = self.spec[row] if fid < 0 else f"{self.handles.paths[fid]}:{int(self.offset[row])}"
            mat = np.array(kaldiio.load_mat(spec), dtype=np.float32)
        if mat.ndim != 2:
            raise InputError(f"{self.source}: utterance '{utt}': expected a (T, D) matrix, got {mat.shape}")
        if self.length[row] >= 0 and mat.shape[0] != self.length[row]:
            table = Path(self.source).parent / "utt2num_frames"
            raise InputError(f"{table}: utterance '{utt}' has {int(self.length[row])} frames there, but its "
                             f"matrix in {self.source} has {mat.shape[0]}: the file is stale (re-run the dump, "
                             "or delete it to have the frames counted from the matrices)")
        return mat

    # ---- audio ------------------------------------------------------------------------------
    def _read_audio(self, row: int, utt: str) -> np.ndarray:
        fid = int(self.file_id[row])
        if fid >= 0:
            x = self._read_ark_audio(fid, int(self.offset[row]), utt)
        else:
            s, e = float(self.start[row]), float(self.end[row])
            x = load_audio(self.spec[row], None if np.isnan(s) else s, None if np.isnan(e) else e, utt=utt)
        return self._fit_length(x, row, utt)

    def _read_ark_audio(self, fid: int, offset: int, utt: str) -> np.ndarray:
        """A kaldiio ``write_function="soundfile"`` entry: b"AUDIO", a length header, the file."""
        import soundfile as sf

        head = self.handles.pread(fid, offset, 14)
        if head[:5] != b"AUDIO":
            import kaldiio

            rate, x = kaldiio.load_mat(f"{self.handles.paths[fid]}:{offset}")   # RIFF, fLaC entries
            x = np.asarray(x)
            x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
            return resample(np.ascontiguousarray(x.mean(axis=1) if x.ndim == 2 else x), rate)
        n = head[5]
        size = int.from_bytes(head[6:6 + n], "little")
        data = self.handles.pread(fid, offset + 6 + n, size)
        if len(data) < size:
            raise InputError(f"{self.source}: utterance '{utt}': truncated shard {self.handles.paths[fid]} "
                             f"({len(data)} of {size} bytes at offset {offset})")
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
        return resample(np.ascontiguousarray(x), rate)

    def _fit_length(self, x: np.ndarray, row: int, utt: str) -> np.ndarray:
        """Cut to the declared length, so that packing (which counted it) and the model agree;
        more than LENGTH_TOLERANCE_S away from it is a stale lengths table."""
        want = int(self.length[row])
        if abs(len(x) - want) > LENGTH_TOLERANCE_S * TARGET_SR:
            raise InputError(f"{self.source}: utterance '{utt}': the audio has {len(x)} samples but its "
                             f"declared length is {want} ({want / TARGET_SR:.3f} s); the lengths table "
                             "(utt2num_samples / utt2dur) is stale: redo it")
        return x[:want]


# ---- building indexes ---------------------------------------------------------------------------
def _rows_of(table_keys: list[str], utts: list[str], where: Path, what: str,
             in_file: Path | None = None, hint: str = "") -> np.ndarray:
    """Position in ``table_keys`` of every utterance (an error names the first missing ones)."""
    if table_keys == utts:
        return np.arange(len(utts), dtype=np.int64)
    pos = dict(zip(table_keys, range(len(table_keys))))
    missing = [u for u in utts if u not in pos]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        of = f"{len(missing)} of {len(utts)}" + (f" in {in_file}" if in_file else "")
        raise DataDirError(f"{where}: no {what} for utterance {', '.join(repr(u) for u in missing[:5])}"
                           f"{more} ({of}){hint}")
    return np.fromiter((pos[u] for u in utts), dtype=np.int64, count=len(utts))


def read_lengths(path: Path, utts: list[str], what: str) -> np.ndarray:
    """(n,) int64 positive integers of a per-utterance table (utt2num_frames, utt2num_samples)."""
    keys, values = read_table(path, (2, 2))
    rows = _rows_of(keys, utts, path, "entry")
    try:
        out = np.array([values[r] for r in rows], dtype=np.int64)
    except ValueError:
        bad = next(values[r] for r in rows if not values[r].isdigit())
        raise DataDirError(f"{path}: {what} {bad!r} is not an integer")
    if len(out) and out.min() <= 0:
        raise DataDirError(f"{path}: utterance '{utts[int(np.argmin(out))]}': {what} must be > 0")
    return out


def _index(kind: str, utts: list[str], values: list[str], length: np.ndarray, source: str,
           start=None, end=None, check_finite: bool = True) -> InputIndex:
    file_id, offset, files = split_ark_entries(values)
    nan = np.full(len(utts), np.nan)
    spec = StringArray.from_list([v if f < 0 else "" for v, f in zip(values, file_id.tolist())])
    return InputIndex(kind, StringArray.from_list(utts), file_id, offset, spec,
                      nan if start is None else start, nan if end is None else end,
                      length, Handles(files), source, check_finite)


def feats_index(feats_scp: str | Path, utts: list[str], check_finite: bool = True,
                in_file: Path | None = None) -> InputIndex:
    """Dumped matrices of ``utts`` from feats.scp; lengths from utt2num_frames beside it (else
    the matrices' own shapes, read once: slow, logged). ``in_file``: the table ``utts`` came
    from (for messages)."""
    feats_scp = Path(feats_scp)
    if not feats_scp.is_file():
        raise UserError(f"{feats_scp}: features not found (run python -m zlora.bin.dump_feats)")
    keys, values = read_table(feats_scp, (2, None))
    rows = _rows_of(keys, utts, feats_scp, "features", in_file, "; re-run dump_feats on this data dir")
    sel = [values[r] for r in rows]
    u2n = feats_scp.parent / "utt2num_frames"
    length = read_lengths(u2n, utts, "frame count") if u2n.is_file() else np.full(len(utts), -1, np.int64)
    index = _index("feats", utts, sel, length, str(feats_scp), check_finite=check_finite)
    index.extra = len(keys) - len(utts)     # one dump may serve several subsets of a data dir
    if not u2n.is_file():
        from zlora.utils.log import get_logger

        get_logger("data").warning("%s not found; reading every matrix for its length", u2n)
        index.check_finite = False          # only the shapes here; values are checked when trained on
        index.length = np.array([index.read(i).shape[0] for i in range(len(utts))], dtype=np.int64)
        index.check_finite = check_finite
    return index


def audio_index(data_dir: str | Path, audio_scp: str | Path | None, utts: list[str],
                durations: np.ndarray | None = None) -> InputIndex:
    """Raw audio of ``utts``: from an utterance-level audio table (``audio_scp``, lengths from
    its utt2num_samples, else the data dir's), or from the data dir's wav.scp + segments
    (lengths from utt2num_samples or utt2dur in the data dir)."""
    data_dir = Path(data_dir)
    if audio_scp is not None:
        scp = Path(audio_scp)
        if not scp.is_file():
            raise UserError(f"{scp}: audio table not found (python -m zlora.bin.dump_audio writes one)")
        keys, values = read_table(scp, (2, None))
        sel = [values[r] for r in _rows_of(keys, utts, scp, "audio", data_dir / "text",
                                           "; re-run dump_audio on this data dir")]
        length = _sample_lengths([scp.parent, data_dir], utts, durations)
        index = _index("audio", utts, sel, length, str(scp))
        index.extra = len(keys) - len(utts)
        return index
    keys, values = read_table(data_dir / "wav.scp", (2, None))
    length = _sample_lengths([data_dir], utts, durations)
    seg_path = data_dir / "segments"
    if not seg_path.is_file():
        sel = [values[r] for r in _rows_of(keys, utts, data_dir / "wav.scp", "audio", data_dir / "text")]
        index = _index("audio", utts, sel, length, str(data_dir / "wav.scp"))
    else:
        segs = read_segments(seg_path)
        missing = [u for u in utts if u not in segs]
        if missing:
            raise DataDirError(f"{seg_path}: no segment for utterance '{missing[0]}' ({len(missing)} missing)")
        wav = dict(zip(keys, values))
        recs = [segs[u].rec for u in utts]
        absent = [r for r in recs if r not in wav]
        if absent:
            raise DataDirError(f"{data_dir / 'wav.scp'}: no entry for recording '{absent[0]}'")
        start = np.array([segs[u].start for u in utts], dtype=np.float64)
        end = np.array([segs[u].end if segs[u].end != -1 else np.nan for u in utts], dtype=np.float64)
        index = _index("audio", utts, [wav[r] for r in recs], length, str(data_dir / "wav.scp"), start, end)
        index.file_id[:] = -1          # a recording is read by its spec and the segment times
    return index


def _sample_lengths(dirs: list[Path], utts: list[str], durations: np.ndarray | None) -> np.ndarray:
    """Samples per utterance: the first utt2num_samples in ``dirs``, else utt2dur (``durations``,
    seconds aligned with ``utts``, NaN where it has none) x 16 k."""
    for d in dirs:
        if (d / "utt2num_samples").is_file():
            return read_lengths(d / "utt2num_samples", utts, "sample count")
    if durations is not None and not np.isnan(durations).all():
        missing = np.flatnonzero(np.isnan(durations))
        if not len(missing):
            return np.round(durations * TARGET_SR).astype(np.int64)
        raise DataDirError(f"{dirs[-1] / 'utt2dur'}: no duration for utterance '{utts[missing[0]]}' "
                           f"({len(missing)} of {len(utts)}); run python -m zlora.bin.get_utt2dur --force {dirs[-1]}")
    raise DataDirError(f"{dirs[-1]}: raw audio needs the utterance lengths for packing, from "
                       f"utt2num_samples or utt2dur, and neither exists; run python -m zlora.bin.get_utt2dur "
                       f"{dirs[-1]} (or python -m zlora.bin.dump_audio, which writes utt2num_samples)")
