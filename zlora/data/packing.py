"""Language-homogeneous sequence packing (paper §V-B).

"we pack training samples by constraining the total sequence length to at most 2048 tokens, where
the packed length includes the downsampled speech tokens, the text tokens, and reserved prompt
tokens; packing is performed within the same language."

An utterance's length is ``speech_token_count(frames) + len(prompt) + len(transcript) + 1`` (eos);
a pack is one LLM row. Packs are built with best-fit decreasing (sort longest first, put each
utterance into the fullest pack that still has room): like first-fit decreasing it is within
11/9 of the optimal number of packs. Rooms are integers up to max_tokens, so the open packs are
kept in one heap per room value: O(n log n) for millions of utterances, instead of first-fit's
O(n x packs) scan (or a sorted list of packs, whose inserts are O(packs) each).
"""
from __future__ import annotations

import bisect
import heapq
from typing import Sequence

import numpy as np


def pack_lengths(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into packs of total length <= ``max_tokens``.

    Deterministic: ties are broken by index. Each pack lists its indices in ascending order and
    packs come in the order they were opened (longest first utterance first).
    A length > ``max_tokens`` (or < 1) is an error: callers filter those out first.
    """
    lens = np.asarray(lengths, dtype=np.int64)
    bad = np.flatnonzero((lens < 1) | (lens > max_tokens))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"item {i} has length {int(lens[i])}, outside [1, max_tokens={max_tokens}]")
    order = np.lexsort((np.arange(len(lens)), -lens)).tolist()     # longest first, then by index
    packs: list[list[int]] = []
    # Best fit = the pack with the least room that still fits, the lowest pack index among equals.
    # Rooms are integers <= max_tokens: one heap of pack indices per room value, and a sorted list
    # of the room values that have packs (at most max_tokens of them), searched with bisect.
    by_room: dict[int, list[int]] = {}
    rooms: list[int] = []
    for i, n in zip(order, lens[order].tolist()):
        j = bisect.bisect_left(rooms, n)
        if j < len(rooms):
            room = rooms[j]
            heap = by_room[room]
            p = heapq.heappop(heap)
            if not heap:
                del by_room[room]
                rooms.pop(j)
            packs[p].append(i)
            room -= n
        else:
            p = len(packs)
            packs.append([i])
            room = max_tokens - n
        if room > 0:
            if room not in by_room:
                by_room[room] = []
                bisect.insort(rooms, room)
            heapq.heappush(by_room[room], p)
    return [sorted(p) for p in packs]


def pack_efficiency(pack_tokens: Sequence[int], max_tokens: int) -> float:
    """Real tokens / (packs x max_tokens): how full the packs are."""
    if not pack_tokens:
        return 0.0
    return sum(pack_tokens) / (len(pack_tokens) * max_tokens)


def batch_padding_efficiency(batches: Sequence[Sequence[int]], pack_tokens: Sequence[int]) -> float:
    """Real tokens / padded tokens, where a batch pads every pack (LLM row) to its longest one."""
    real = padded = 0
    for batch in batches:
        lens = [pack_tokens[p] for p in batch]
        if lens:
            real += sum(lens)
            padded += len(lens) * max(lens)
    return real / padded if padded else 0.0
