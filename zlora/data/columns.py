"""Column storage for millions of utterances: strings and integer lists in flat numpy arrays.

Why not lists of Python objects: a DataLoader worker is a fork of the training process, and
reading a Python object writes its reference count, so every page of a list of str / list /
dataclass that a worker touches becomes a private copy; over an epoch each worker ends up with
its own copy of the whole corpus (the well-known "memory grows with the epoch" of PyTorch
DataLoaders). A numpy array's data is one buffer that reading never writes, so forked workers
keep sharing it.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np


class StringArray:
    """Immutable list of str: one UTF-8 blob (uint8) and (n + 1,) int64 byte offsets."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets

    @classmethod
    def from_list(cls, items: Sequence[str]) -> "StringArray":
        if not items:
            return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        joined = "\n".join(items).encode("utf-8")
        if joined.count(b"\n") == len(items) - 1:      # no item holds a newline: split by position
            arr = np.frombuffer(joined, dtype=np.uint8)
            seps = np.flatnonzero(arr == 10)
            offsets = np.empty(len(items) + 1, dtype=np.int64)
            offsets[0], offsets[1:-1], offsets[-1] = 0, seps - np.arange(len(seps)), len(arr) - len(seps)
            return cls(np.delete(arr, seps), offsets)
        encoded = [s.encode("utf-8") for s in items]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def take(self, index: np.ndarray) -> "StringArray":
        """The strings at ``index`` (in that order)."""
        rows = Ragged(self.blob, self.offsets).take(index)
        return StringArray(rows.flat, rows.offsets)

    def tolist(self) -> list[str]:
        return list(self)

    @property
    def nbytes(self) -> int:
        return self.blob.nbytes + self.offsets.nbytes


class Ragged:
    """Immutable list of int lists: (total,) ``flat`` values and (n + 1,) int64 ``offsets``."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int]], dtype=np.int32) -> "Ragged":
        rows = rows if isinstance(rows, list) else list(rows)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)), out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """(n,) int64 row lengths."""
        return np.diff(self.offsets)

    def take(self, index: np.ndarray) -> "Ragged":
        """Rows at ``index`` (in that order), copied into new flat storage."""
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths()[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        # every kept value's position in ``flat``: row start + 0..len-1
        pos = np.repeat(self.offsets[:-1][index] - offsets[:-1], lens) + np.arange(offsets[-1])
        return Ragged(self.flat[pos], offsets)

    @property
    def nbytes(self) -> int:
        return self.flat.nbytes + self.offsets.nbytes
