"""Encoder work without padding blow-up: pieces and length groups.

A micro-batch gives the encoder B rows of different lengths. Each row is cut into *pieces*: the
whole row (full context), or fixed-duration chunks whose last one is shorter (§IV-F chunked
mode, chunk lengths drawn per utterance from {1, 2, 4, 8} s). Every piece is encoded
independently, so nothing forces all pieces into one padded batch. Padding every piece to the
longest one costs a lot: with chunk durations drawn per utterance, nearly every micro-batch holds
an 8-s chunk, and 1-s chunks padded to 8 s make a quarter of the computed frames real (measured:
0.244 on LibriSpeech-like lengths, BENCHMARKS.md).

:func:`plan_groups` partitions the pieces into at most ``max_groups`` groups of similar length,
each encoded as one padded batch, choosing the fewest groups whose padding efficiency (real /
computed frames) reaches ``target``. A group is a run of the pieces sorted by length, so the
optimal partition into k groups is a 1-D dynamic programme over the distinct lengths
(:func:`_best_partition`). Deterministic: a function of the lengths only, so a teacher and a
student (layer-wise KD) see the same groups for the same batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_DISTINCT = 1024     # longer length lists are rounded up to a coarser grid first (DP cost m^2)


@dataclass
class Pieces:
    """The pieces of a batch. All (N,) long tensors on the input's device.

    utt: row of each piece; start: its first input frame in the row; length: its input frames.
    Pieces are ordered by row, then time.
    """
    utt: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor

    def __len__(self) -> int:
        return int(self.utt.numel())


def plan_pieces(lens: torch.Tensor, frames: torch.Tensor) -> Pieces:
    """Cut row b (lens[b] frames) into pieces of frames[b] frames, the last one shorter.

    frames[b] >= lens[b] gives the whole row as one piece (full context).
    """
    frames = torch.minimum(frames, lens)
    n_pieces = (lens + frames - 1) // frames
    utt = torch.repeat_interleave(torch.arange(len(lens), device=lens.device), n_pieces)
    first = torch.cumsum(n_pieces, 0) - n_pieces
    k = torch.arange(len(utt), device=lens.device) - first[utt]
    start = k * frames[utt]
    length = torch.minimum(frames[utt], lens[utt] - start)
    return Pieces(utt, start, length)


def gather_pieces(x: torch.Tensor, pieces: Pieces, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, D) -> the pieces ``idx`` as one zero-padded batch (n, L_max, D) and their lengths (n,)."""
    utt, start, length = pieces.utt[idx], pieces.start[idx], pieces.length[idx]
    t = torch.arange(int(length.max()), device=x.device)
    valid = t[None, :] < length[:, None]
    cols = torch.where(valid, start[:, None] + t[None, :], torch.zeros_like(valid, dtype=torch.long))
    return x[utt[:, None], cols] * valid[..., None].to(x.dtype), length


def plan_groups(lengths: list[int] | np.ndarray, max_groups: int = 8, target: float = 0.95) -> list[np.ndarray]:
    """Partition piece indices into <= max_groups groups of similar length.

    Returns index arrays (each sorted ascending), longest group first. Uses the fewest groups
    whose padding efficiency sum(lengths) / sum(n_g * max_g) is >= target; with max_groups
    groups if none reaches it. max_groups = 1 is one padded batch (the old behaviour).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    if max_groups <= 1:
        return [np.arange(lengths.size)]
    keys = _grid(lengths)
    values, inverse, counts = np.unique(-keys, return_inverse=True, return_counts=True)
    values = -values                                     # distinct (gridded) lengths, descending
    cuts = _fewest_cuts(values, counts, int(lengths.sum()), max_groups, target)
    groups = []
    for lo, hi in zip([0, *cuts], [*cuts, len(values)]):
        groups.append(np.flatnonzero((inverse >= lo) & (inverse < hi)))
    return groups


def padding_efficiency(lengths, groups: list[np.ndarray]) -> float:
    """Real / computed frames when each group is padded to its longest piece."""
    lengths = np.asarray(lengths, dtype=np.int64)
    computed = sum(len(g) * int(lengths[g].max()) for g in groups if len(g))
    return float(lengths.sum()) / computed if computed else 1.0


def _grid(lengths: np.ndarray) -> np.ndarray:
    """Lengths rounded up to a grid coarse enough for <= MAX_DISTINCT distinct values (exact when
    they already are few: the usual case, since full chunks share a handful of lengths)."""
    if np.unique(lengths).size <= MAX_DISTINCT:
        return lengths
    step = -(-int(lengths.max()) // MAX_DISTINCT)
    return -(-lengths // step) * step


def _fewest_cuts(values: np.ndarray, counts: np.ndarray, real: int, max_groups: int,
                 target: float) -> list[int]:
    """Group boundaries over the distinct lengths (descending) for the smallest k reaching target."""
    best: list[int] = []
    for k in range(1, min(max_groups, len(values)) + 1):
        cost, best = _best_partition(values, counts, k)
        if real >= target * cost:
            break
    return best


def _best_partition(values: np.ndarray, counts: np.ndarray, k: int) -> tuple[float, list[int]]:
    """Minimum computed frames splitting the descending ``values`` (with ``counts``) into k
    contiguous runs, each padded to its first (longest) value. -> (cost, cut positions)."""
    m = len(values)
    cum = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)
    # seg[i, j] = cost of one group over values[i..j] (inclusive), inf where i > j.
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    seg = np.where(i <= j, (cum[j + 1] - cum[i]) * values[i], np.inf)
    dp = seg[0].copy()                       # dp[j]: best cost of values[0..j] in one group
    back = []
    for _ in range(1, k):
        # new[j] = min over i >= 1 of dp[i - 1] + seg[i, j]
        cand = np.full((m, m), np.inf)
        cand[1:] = dp[:-1, None] + seg[1:]
        arg = cand.argmin(axis=0)
        dp = cand[arg, np.arange(m)]
        back.append(arg)
    cuts, j = [], m - 1
    for arg in reversed(back):
        i = int(arg[j])
        cuts.append(i)
        j = i - 1
    return float(dp[m - 1]), sorted(cuts)
