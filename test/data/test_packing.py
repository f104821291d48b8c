"""Best-fit-decreasing packing (zlora/data/packing.py)."""
import random

import pytest

from zlora.data.packing import batch_padding_efficiency, pack_efficiency, pack_lengths


def test_every_item_once_and_within_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    packs = pack_lengths(lengths, 128)
    flat = sorted(i for p in packs for i in p)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in p) <= 128 for p in packs)


def test_efficiency_close_to_lower_bound():
    rng = random.Random(1)
    lengths = [rng.randint(5, 60) for _ in range(2000)]
    packs = pack_lengths(lengths, 256)
    lower_bound = -(-sum(lengths) // 256)
    # Best-fit decreasing on small items is near-optimal; a naive one-per-pack would be 2000.
    assert len(packs) <= lower_bound * 1.02 + 1
    assert pack_efficiency([sum(lengths[i] for i in p) for p in packs], 256) > 0.97


def test_best_fit_uses_the_fullest_pack():
    # 60 opens pack A (room 40), 50 opens pack B (room 50); 40 must go to A (exact fit), not B.
    assert pack_lengths([60, 50, 40], 100) == [[0, 2], [1]]


def test_deterministic_and_rejects_oversized():
    lengths = [7, 3, 7, 3, 5, 5]
    assert pack_lengths(lengths, 10) == pack_lengths(list(lengths), 10)
    with pytest.raises(ValueError, match="item 1 has length 11"):
        pack_lengths([3, 11], 10)


def test_batch_padding_efficiency():
    tokens = [10, 10, 5, 20]
    assert batch_padding_efficiency([[0, 1]], tokens) == 1.0
    assert batch_padding_efficiency([[2, 3]], tokens) == pytest.approx(25 / 40)
