"""Pieces and length groups (zlora.models.pieces) and the encoder that uses them: the same
outputs as one padded batch, far less padding, over-long rows chunked alone, FlyLoRA counting
real frames only."""
import itertools

import numpy as np
import pytest
import torch

from models_testlib import LANGS, random_batch

from zlora.adapters import AdapterConfig, language_context
from zlora.adapters.posterior import language_posterior_context
from zlora.models.pieces import _best_partition, padding_efficiency, plan_groups, plan_pieces

LID = {c: torch.randn(6, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(LANGS)}


def test_plan_pieces_cuts_rows_into_chunks_with_a_short_last_one():
    p = plan_pieces(torch.tensor([250, 90, 10]), torch.tensor([100, 200, 4]))
    assert p.utt.tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert p.start.tolist() == [0, 100, 200, 0, 0, 4, 8]
    assert p.length.tolist() == [100, 100, 50, 90, 4, 4, 2]


def brute_force(lengths, k):
    values = sorted(set(lengths), reverse=True)
    best = None
    for cuts in itertools.combinations(range(1, len(values)), k - 1):
        bounds = [0, *cuts, len(values)]
        cost = sum(sum(1 for x in lengths if values[hi - 1] <= x <= values[lo]) * values[lo]
                   for lo, hi in zip(bounds, bounds[1:]))
        best = cost if best is None else min(best, cost)
    return best


def test_partition_is_optimal_for_its_number_of_groups():
    rng = np.random.default_rng(0)
    for _ in range(100):
        lengths = rng.integers(1, 40, size=int(rng.integers(1, 10))).tolist()
        values, counts = np.unique(-np.array(lengths), return_counts=True)
        for k in range(1, min(4, len(values)) + 1):
            assert _best_partition(-values, counts, k)[0] == brute_force(lengths, k)


def test_groups_cover_every_piece_once_and_reach_the_target():
    rng = np.random.default_rng(1)
    # chunks of {1, 2, 4, 8} s with ragged last chunks, as in a chunked training micro-batch
    lengths = np.concatenate([np.full(30, 800), np.full(20, 400), np.full(40, 100), rng.integers(2, 800, 60)])
    groups = plan_groups(lengths, max_groups=8, target=0.95)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    assert padding_efficiency(lengths, groups) >= 0.95 and len(groups) <= 8
    one = plan_groups(lengths, max_groups=1)
    assert len(one) == 1 and padding_efficiency(lengths, one) < 0.6
    # the fewest groups: equal lengths need one
    assert len(plan_groups([50] * 10)) == 1
    # unreachable target: max_groups groups, still the best partition into that many
    many = plan_groups(list(range(1, 200)), max_groups=3, target=0.999)
    assert len(many) == 3


def adapted(make_model, kind="zipper-soft", seed=0, **encoder):
    model = make_model(seed=seed, encoder=encoder)
    model.set_stage(2, AdapterConfig.make(kind=kind, rank=4, alpha=8.0, languages=list(LANGS),
                                     lid_embeddings=LID, flylora_k=2,
                                     target_modules=r"layers\.(1|2)\.(self_attn\.(q_proj|v_proj)|fc1|fc2)"))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in model.encoder.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize("mode", ["full", "chunked"])
def test_grouped_encoding_equals_one_padded_batch(make_model, mode):
    chunked = {"chunked": True} if mode == "chunked" else {}
    grouped = adapted(make_model, **chunked)
    single = adapted(make_model, max_groups=1, **chunked)
    single.load_state_dict(grouped.state_dict())
    batch = random_batch([300, 24, 160, 38, 250], langs=[0, 1, 2, 1, 0])
    # chunked: durations drawn per utterance, as in training
    secs = torch.tensor([0.2, 0.4, 0.2, 0.2, 1.2]) if chunked else None
    args = (batch["feats"], batch["feat_lens"], batch["lang_ids"], secs)
    with torch.no_grad():
        h1, l1 = grouped.encoder(*args)
        h2, l2 = single.encoder(*args)
    assert torch.equal(l1, l2)
    for i, n in enumerate(l1.tolist()):
        torch.testing.assert_close(h1[i, :n], h2[i, :n], atol=1e-5, rtol=1e-5)
    real, computed, _ = grouped.encoder.frame_stats.take()
    real1, computed1, _ = single.encoder.frame_stats.take()
    assert real == real1 and computed < computed1            # same work, less padding


def test_cached_layers_group_too(make_model):
    model = adapted(make_model, kind="lora", cached_layers=1)
    x = torch.randn(3, 80, model.encoder.d_model)
    lens = torch.tensor([80, 12, 30])
    with torch.no_grad():
        h, _ = model.encoder(x, lens, torch.tensor([0, 1, 2]))
        for i, n in enumerate(lens.tolist()):
            alone, _ = model.encoder(x[i:i + 1, :n], lens[i:i + 1], torch.tensor([i]))
            torch.testing.assert_close(h[i, :alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_only_over_long_rows_are_chunked(make_model):
    """long_inputs: chunk (decoding) chunks a row beyond the window alone; the other rows keep
    full context, so a row's result never depends on what it was batched with."""
    model = adapted(make_model, kind="lora", long_inputs="chunk", decode_chunk_seconds=8.0)
    batch = random_batch([3100, 200], langs=[0, 1])
    x, lens = batch["feats"], batch["feat_lens"]
    with torch.no_grad():
        h, _ = model.encoder(x, lens, torch.tensor([0, 1]))
        short, _ = model.encoder(x[1:, :200], lens[1:], torch.tensor([1]))
        torch.testing.assert_close(h[1, :100], short[0], atol=1e-5, rtol=1e-5)
        chunks = [model.encoder(x[:1, s:s + 800], torch.tensor([min(800, 3100 - s)]), torch.tensor([0]))[0][0]
                  for s in range(0, 3100, 800)]
        torch.testing.assert_close(h[0, :1550], torch.cat(chunks), atol=1e-5, rtol=1e-5)
    strict = adapted(make_model, kind="lora")
    from zlora.models.encoder import InputTooLongError

    with pytest.raises(InputTooLongError, match=r"batch row\(s\) \[0\]"):
        strict.encoder(x, lens, torch.tensor([0, 1]))


def test_flylora_counts_real_frames_only(make_model):
    model = adapted(make_model, kind="flylora", max_groups=1).train()
    batch = random_batch([100, 20, 40], langs=[0, 1, 2])
    with torch.no_grad():
        model.encoder(batch["feats"], batch["feat_lens"], batch["lang_ids"])
    real = sum((n + 1) // 2 for n in batch["feat_lens"].tolist())        # encoder frames
    layer = model.encoder.get_submodule("layers.1.fc1")
    assert int(layer.selection_counts.sum()) == real * layer.top_k      # padding not counted


def test_posterior_routing_works_with_groups_and_chunks(make_model):
    """A Zipper posterior (language-agnostic decoding) follows each group's rows; a one-hot
    posterior equals known-language routing, chunked too."""
    model = adapted(make_model, chunked=True, decode_chunk_seconds=0.2)
    batch = random_batch([90, 30, 60], langs=[2, 0, 1])
    x, lens, langs = batch["feats"], batch["feat_lens"], batch["lang_ids"]
    post = torch.nn.functional.one_hot(langs, len(LANGS)).float()
    with torch.no_grad():
        known, _ = model.encoder(x, lens, langs)
        with language_posterior_context(model.encoder, post):
            agnostic, _ = model.encoder(x, lens, langs)
    torch.testing.assert_close(agnostic, known, atol=1e-5, rtol=1e-5)
    with language_context(model.encoder, ["en"]):     # contexts restored after the forward
        pass
