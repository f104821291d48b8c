"""Language-homogeneous sequence packing (paper §V-B).

"we pack training samples by constraining the total sequence length to at most 2048 tokens, where
the packed length includes the downsampled speech tokens, the text tokens, and reserved prompt
tokens; packing is performed within the same language."

An utterance's length is ``speech_token_count(frames) + len(prompt) + len(transcript) + 1`` (eos);
a pack is one LLM row. Packs are built with best-fit decreasing (sort longest first, put each
utterance into the fullest pack that still has room): like first-fit decreasing it is within
11/9 of the optimal number of packs, and with a sorted list of free capacities it costs
O(n log n) bisects instead of first-fit's O(n x packs) scan.
"""
from __future__ import annotations

import bisect
from typing import Sequence


def pack_lengths(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into packs of total length <= ``max_tokens``.

    Deterministic: ties are broken by index. Each pack lists its indices in ascending order and
    packs come in the order they were opened (longest first utterance first).
    A length > ``max_tokens`` (or < 1) is an error: callers filter those out first.
    """
    for i, n in enumerate(lengths):
        if n < 1 or n > max_tokens:
            raise ValueError(f"item {i} has length {n}, outside [1, max_tokens={max_tokens}]")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    # free[j] = (remaining capacity, pack index), kept sorted: best fit = first >= length.
    free: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            room, p = free.pop(j)
            packs[p].append(i)
            room -= n
        else:
            p = len(packs)
            packs.append([i])
            room = max_tokens - n
        if room > 0:
            bisect.insort(free, (room, p))
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
