"""Batched greedy / beam search with KV cache, EOS per row, length and repetition guards."""
import math

import pytest
import torch

from models_testlib import random_batch
from zlora.models import DecodingOptions
from zlora.models.generation import (BeamSearchDecoder, GreedyDecoder, RepetitionGuard,
                                     build_decoder)

EOS = 0


class ScriptedStepper:
    """Stands in for CausalLMStepper: next-token log-probs are a function of (row, history)."""

    def __init__(self, table):
        self.table = table            # fn(row, hist tuple) -> {token: prob}
        self.vocab = 6

    def _logits(self):
        out = torch.full((len(self.rows), self.vocab), -math.inf)
        for i, (r, h) in enumerate(zip(self.rows, self.hist)):
            for tok, p in self.table(r, tuple(h)).items():
                out[i, tok] = math.log(p)
        return out

    def prefill(self, embeds, mask):
        self.rows = list(range(embeds.shape[0]))
        self.hist = [[] for _ in self.rows]
        return self._logits()

    def step(self, tokens):
        self.hist = [h + [int(t)] for h, t in zip(self.hist, tokens)]
        return self._logits()

    def select(self, idx):
        self.rows = [self.rows[i] for i in idx.tolist()]
        self.hist = [list(self.hist[i]) for i in idx.tolist()]


def script(row, hist):
    if row == 0:                                   # "1 2 3" then EOS
        seq = [1, 2, 3]
        return {seq[len(hist)]: 0.9, 5: 0.1} if len(hist) < 3 else {EOS: 1.0}
    if row == 1:                                   # loops on "4 5"
        return {4 if len(hist) % 2 == 0 else 5: 1.0}
    return {1: 0.6, 2: 0.4}                        # never stops


def run(decoder, limits):
    embeds = torch.zeros(len(limits), 1, 1)
    return decoder.decode(ScriptedStepper(script), embeds, torch.ones(len(limits), 1),
                          torch.tensor(limits), EOS)


@pytest.mark.parametrize("beam", [1, 2, 3])
def test_eos_length_and_repetition_guards(beam):
    opts = DecodingOptions(beam_size=beam, repetition_ngram=2, repetition_max=3)
    out = run(build_decoder(opts), [10, 40, 7])
    assert out[0] == [1, 2, 3]                                 # EOS ends the row, not returned
    assert out[1] == [4, 5] * 3                                # 4th "4 5" dropped, row stopped
    assert len(out[2]) == 7                                    # length guard


def test_beam_size_one_equals_greedy_on_scripted_rows():
    opts = DecodingOptions(repetition_ngram=2, repetition_max=3)
    assert run(GreedyDecoder(opts), [10, 40, 7]) == run(BeamSearchDecoder(opts), [10, 40, 7])


def test_beam_search_finds_a_better_hypothesis_than_greedy():
    table = {(): {1: 0.55, 2: 0.45}, (1,): {EOS: 0.3, 3: 0.35, 4: 0.35}, (1, 3): {EOS: 1.0},
             (1, 4): {EOS: 1.0}, (2,): {EOS: 0.99, 3: 0.01}}

    def fn(row, hist):
        return table.get(hist, {EOS: 1.0})

    embeds = torch.zeros(1, 1, 1)
    greedy = GreedyDecoder(DecodingOptions()).decode(ScriptedStepper(fn), embeds, torch.ones(1, 1),
                                                     torch.tensor([5]), EOS)
    beam = BeamSearchDecoder(DecodingOptions(beam_size=2)).decode(
        ScriptedStepper(fn), embeds, torch.ones(1, 1), torch.tensor([5]), EOS)
    assert greedy == [[1, 3]] and beam == [[2]]


def test_repetition_guard_counts_ngrams():
    guard = RepetitionGuard(ngram=2, max_count=2)
    hist = torch.tensor([[7, 8, 7, 8, 7, 8], [7, 8, 7, 8, 1, 2], [1, 1, 1, 1, 1, 1]])
    assert guard(hist).tolist() == [True, False, True]
    assert not RepetitionGuard(2, 0)(hist).any()               # 0 = off


def test_length_limits_follow_max_len_ratio():
    opts = DecodingOptions(max_new_tokens=50, max_len_ratio=2.0)
    assert opts.limits(torch.tensor([1, 10, 40])).tolist() == [2, 20, 50]
    assert DecodingOptions(max_len_ratio=None, max_new_tokens=9).limits(torch.tensor([1])).tolist() == [9]
    with pytest.raises(ValueError):
        DecodingOptions(beam_size=0)


def _no_early_eos(model):
    """Random tiny LLMs often emit EOS at once; push EOS down so rows decode several tokens."""
    with torch.no_grad():
        model.llm.get_output_embeddings().weight[model.tokenizer.eos_id] *= 0.0
        model.llm.get_output_embeddings().weight[model.tokenizer.eos_id] -= 0.05


@pytest.mark.parametrize("beam", [1, 3])
def test_batched_decoding_equals_each_row_alone(make_model, beam):
    model = make_model(seed=3).eval()
    _no_early_eos(model)
    batch = random_batch([120, 37, 80, 9], langs=[0, 1, 2, 0])
    opts = DecodingOptions(beam_size=beam, max_new_tokens=12, repetition_max=0)
    together = model.generate(batch["feats"], batch["feat_lens"], batch["lang_ids"], opts)
    alone = [model.generate(batch["feats"][i:i + 1, :n], batch["feat_lens"][i:i + 1],
                            batch["lang_ids"][i:i + 1], opts)[0]
             for i, n in enumerate(batch["feat_lens"].tolist())]
    assert together == alone
    assert max(len(h) for h in together) >= 4                  # rows really decoded several tokens
    limits = opts.limits(torch.tensor([model.speech_token_count(n) for n in batch["feat_lens"].tolist()]))
    assert all(len(h) <= int(lim) for h, lim in zip(together, limits))


def test_beam_size_one_equals_greedy_on_the_model(make_model):
    model = make_model(seed=4).eval()
    _no_early_eos(model)
    batch = random_batch([120, 37, 80])
    greedy = model.generate(batch["feats"], batch["feat_lens"], batch["lang_ids"],
                            DecodingOptions(max_new_tokens=10))
    beam1 = model.generate(batch["feats"], batch["feat_lens"], batch["lang_ids"],
                           DecodingOptions(max_new_tokens=10, beam_size=1))
    forced = BeamSearchDecoder(DecodingOptions(max_new_tokens=10))
    speech, s_lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
    embeds, mask = model.decoding_prefix(speech, s_lens, batch["lang_ids"])
    from zlora.models.generation import CausalLMStepper

    with torch.no_grad():
        beam_path = forced.decode(CausalLMStepper(model.llm, batch["lang_ids"]), embeds, mask,
                                  DecodingOptions(max_new_tokens=10).limits(s_lens), model.tokenizer.eos_id)
    assert greedy == beam1 == beam_path


def test_greedy_matches_uncached_argmax_decoding(make_model):
    """The KV-cache path equals recomputing the whole sequence at every step."""
    from zlora.adapters import language_context

    model = make_model(seed=5).eval()
    _no_early_eos(model)
    batch = random_batch([64], langs=[1])
    hyp = model.generate(batch["feats"], batch["feat_lens"], batch["lang_ids"],
                         DecodingOptions(max_new_tokens=6, repetition_max=0))[0]
    with torch.no_grad():
        speech, s_lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
        embeds, _ = model.decoding_prefix(speech, s_lens, batch["lang_ids"])
        emb = model.llm.get_input_embeddings()
        ref = []
        for _ in range(len(hyp)):
            x = torch.cat([embeds, emb(torch.tensor([ref], dtype=torch.long))], 1) if ref else embeds
            with language_context(model.llm, batch["lang_ids"]):
                ref.append(int(model.llm(inputs_embeds=x, use_cache=False).logits[0, -1].argmax()))
    assert hyp == ref


@pytest.mark.filterwarnings("error::FutureWarning")
def test_cached_decoding_uses_no_deprecated_transformers_argument(make_model):
    """The KV cache goes in the way transformers supports (`past_key_values` warns, goes in 5.40)."""
    model = make_model(seed=5).eval()
    batch = random_batch([32, 48], langs=[0, 1])
    for beam in (1, 2):
        model.generate(batch["feats"], batch["feat_lens"], batch["lang_ids"],
                       DecodingOptions(max_new_tokens=3, beam_size=beam))
