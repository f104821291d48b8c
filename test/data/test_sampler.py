"""Pack batch sampler: language policy, disjoint rank shards, determinism, exact resume."""
from collections import Counter

import numpy as np
import pytest

from zlora.data.sampler import PackBatchSampler, ShardedSequentialSampler
from zlora.utils.cli import UserError

# 3 languages, imbalanced: 60 / 30 / 6 packs, pack ids disjoint.
PACKS = {0: list(range(0, 60)), 1: list(range(60, 90)), 2: list(range(90, 96))}
LANG_OF = {p: lang for lang, ps in PACKS.items() for p in ps}


def batches(sampler):
    return [[p for p, _, _ in b] for b in sampler]


def test_ranks_get_disjoint_shards_covering_the_epoch():
    per_rank = [batches(PackBatchSampler(PACKS, 4, world_size=3, rank=r, seed=1)) for r in range(3)]
    seen = [p for b in per_rank for batch in b for p in batch]
    assert len(seen) == len(set(seen))                        # disjoint
    assert len(seen) == 96                                    # 96 = 8 global batches of 12: nothing dropped
    assert {len(b) for b in per_rank} == {8}                  # same number of steps on every rank


def test_drop_tail_keeps_ranks_in_step_and_grad_accum_whole():
    s = [PackBatchSampler(PACKS, 5, world_size=2, rank=r, steps_multiple=4) for r in range(2)]
    assert s[0].batches_per_epoch() == s[1].batches_per_epoch() == 8   # 96 // 10 = 9 -> 8
    with pytest.raises(UserError, match="0 steps per epoch"):
        PackBatchSampler({0: [0, 1]}, 2, world_size=2)


def test_deterministic_per_seed_and_epoch():
    a, b = PackBatchSampler(PACKS, 4, seed=7), PackBatchSampler(PACKS, 4, seed=7)
    assert batches(a) == batches(b)
    a.set_epoch(1)
    assert batches(a) != batches(b)                           # a new shuffle each epoch
    assert batches(PackBatchSampler(PACKS, 4, seed=8)) != batches(b)


def test_proportional_visits_each_pack_once():
    s = PackBatchSampler(PACKS, 1)
    assert sorted(p for b in batches(s) for p in b) == list(range(96))
    assert s.language_probs() == pytest.approx({0: 60 / 96, 1: 30 / 96, 2: 6 / 96})


def test_temperature_upsamples_the_tail():
    s = PackBatchSampler(PACKS, 1, sampling="temperature", temperature=3.0)
    n = np.array([60, 30, 6], dtype=float) ** (1 / 3)
    assert s.language_probs() == pytest.approx(dict(enumerate(n / n.sum())))
    counts = Counter()
    for epoch in range(20):
        s.set_epoch(epoch)
        counts.update(LANG_OF[p] for b in batches(s) for p in b)
    share = counts[2] / sum(counts.values())
    assert share == pytest.approx(n[2] / n.sum(), abs=0.02)   # ~0.16, vs 0.0625 proportional
    # every tail pack recurs, high-resource packs are down-sampled
    assert counts[2] > 20 * 6 and counts[0] < 20 * 60


def test_state_dict_resumes_mid_epoch():
    s = PackBatchSampler(PACKS, 4, world_size=2, rank=1, seed=3)
    s.set_epoch(2)
    full = batches(s)
    s.advance(5)
    state = s.state_dict()
    t = PackBatchSampler(PACKS, 4, world_size=2, rank=1, seed=3)
    t.load_state_dict(state)
    assert batches(t) == full[5:]
    assert len(t) == len(full) - 5
    other = PackBatchSampler(PACKS, 4, world_size=1, seed=3)
    with pytest.raises(UserError, match="world_size"):
        other.load_state_dict(state)


def test_sequential_sampler_shards_everything():
    got = [b for r in range(3) for b in batches(ShardedSequentialSampler(10, 3, 3, r))]
    assert sorted(p for b in got for p in b) == list(range(10))


# Sequential reading: each language's packs in blocks of 5 (as pack_blocks makes them from shards)
BLOCKS = {lang: [ps[i:i + 5] for i in range(0, len(ps), 5)] for lang, ps in PACKS.items()}


def language_streams(sampler):
    """Per language, the packs in the order the epoch visits them (all ranks, all batches)."""
    seq = sampler.global_sequence(sampler.epoch)
    return {lang: [p for p in seq.tolist() if LANG_OF[p] == lang] for lang in PACKS}


def split_into_blocks(stream, blocks):
    """``stream`` as a sequence of whole blocks (an assertion fails if it is not one)."""
    by_first = {b[0]: b for b in blocks}
    out, i = [], 0
    while i < len(stream):
        block = by_first[stream[i]]
        assert stream[i:i + len(block)] == block, (stream, block)
        out.append(block)
        i += len(block)
    return out


def test_blocks_keep_their_packs_together_and_in_read_order():
    s = PackBatchSampler(PACKS, 4, seed=3, blocks=BLOCKS)
    assert sorted(p for b in batches(s) for p in b) == list(range(96))     # every pack once
    for lang, stream in language_streams(s).items():
        cut = split_into_blocks(stream, BLOCKS[lang])                      # whole blocks, in order
        assert sorted(cut) == sorted(BLOCKS[lang])
        assert cut != BLOCKS[lang] or len(cut) == 2                        # ... in a shuffled order
    # the language mix per slot is still random: not one language's packs after another
    first = [LANG_OF[p] for p in s.global_sequence(0)[:20].tolist()]
    assert len(set(first)) > 1
    s.set_epoch(1)
    assert language_streams(s) != language_streams(PackBatchSampler(PACKS, 4, seed=3, blocks=BLOCKS))


def test_blocks_under_temperature_cycle_whole_blocks():
    s = PackBatchSampler(PACKS, 1, sampling="temperature", temperature=3.0, blocks=BLOCKS)
    tail = language_streams(s)[2]                                          # 6 packs, up-sampled
    assert len(tail) > 12
    split_into_blocks(tail[:12], BLOCKS[2])                                # two whole cycles first


def test_resume_state_records_the_read_order():
    s = PackBatchSampler(PACKS, 4, blocks=BLOCKS)
    state = s.state_dict()
    assert state["blocks"] is True
    with pytest.raises(UserError, match="blocks=True, this run has False"):
        PackBatchSampler(PACKS, 4).load_state_dict(state)
    old = {k: v for k, v in PackBatchSampler(PACKS, 4).state_dict().items() if k != "blocks"}
    PackBatchSampler(PACKS, 4).load_state_dict(old)                        # checkpoints from before
