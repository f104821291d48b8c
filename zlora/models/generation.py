"""Batched decoding with a KV cache: greedy and beam search (after openai/whisper ``decoding.py``).

The prefix of each row (prompt embeddings + projected speech, Eq. 4) is LEFT-padded so every row's
next token sits in the last column; the 2D attention mask hides the padding and position ids
count only real tokens, so a row decodes exactly as it would alone. Guards, per row:

- EOS ends a hypothesis (EOS is not returned);
- length: at most ``min(max_new_tokens, ceil(max_len_ratio * speech_tokens))`` new tokens;
- repetition: Speech-LLMs loop, so a hypothesis whose latest ``repetition_ngram``-gram has now
  occurred more than ``repetition_max`` times ends, without that last occurrence.

Finished rows leave the batch (greedy) so a long row never makes short ones pay for its steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zlora.models.stages import adapter_language_context


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1                  # 1 = greedy
    max_new_tokens: int = 200
    max_len_ratio: float | None = 3.0   # new tokens per speech token (12.5 Hz); None = no limit
    repetition_ngram: int = 4
    repetition_max: int = 3             # occurrences allowed per n-gram; 0 = guard off
    length_penalty: float | None = None  # beam ranking: None = score / length, else GNMT ((5+n)/6)^p

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_len_ratio is not None and self.max_len_ratio <= 0:
            raise ValueError(f"max_len_ratio must be > 0, got {self.max_len_ratio}")
        if self.repetition_ngram < 1 or self.repetition_max < 0:
            raise ValueError("repetition_ngram must be >= 1 and repetition_max >= 0")

    def limits(self, speech_tokens: torch.Tensor) -> torch.Tensor:
        """(B,) maximum new tokens per row."""
        lim = torch.full_like(speech_tokens, self.max_new_tokens)
        if self.max_len_ratio is not None:
            by_ratio = torch.ceil(speech_tokens.float() * self.max_len_ratio).long().clamp(min=1)
            lim = torch.minimum(lim, by_ratio)
        return lim


class RepetitionGuard:
    """Flags rows whose latest n-gram has occurred more than ``max_count`` times (vectorised)."""

    def __init__(self, ngram: int, max_count: int):
        self.n, self.max_count = ngram, max_count

    def __call__(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (R, t) generated tokens -> (R,) bool."""
        r, t = hist.shape
        if self.max_count == 0 or t < self.n * (self.max_count + 1):
            return torch.zeros(r, dtype=torch.bool, device=hist.device)
        windows = hist.unfold(1, self.n, 1)                       # (R, t-n+1, n)
        last = hist[:, -self.n:]
        count = (windows == last[:, None, :]).all(-1).sum(-1)
        return count > self.max_count


class CausalLMStepper:
    """A Hugging Face causal LM plus its KV cache, fed embeddings first and token ids after.

    ``row_langs`` (R,) routes LLM-side adapters; it follows every row selection.
    """

    def __init__(self, llm: nn.Module, row_langs: torch.Tensor):
        self.llm, self.row_langs = llm, row_langs

    def _forward(self, **kw) -> torch.Tensor:
        with adapter_language_context(self.llm, self.row_langs):
            # `cache=` (transformers >= 5.24, our minimum): `past_key_values=` warns and goes in 5.40.
            out = self.llm(cache=self.cache, attention_mask=self.mask, use_cache=True,
                           logits_to_keep=1, **kw)
        return out.logits[:, -1]

    def prefill(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """embeds (R, L, d) left-padded, mask (R, L) -> next-token logits (R, V)."""
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.llm.config)
        self.mask = mask.long()
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.next_pos = pos[:, -1] + 1
        return self._forward(inputs_embeds=embeds, position_ids=pos)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (R,) appended to each row -> next-token logits (R, V)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        logits = self._forward(input_ids=tokens[:, None], position_ids=self.next_pos[:, None])
        self.next_pos = self.next_pos + 1
        return logits

    def select(self, idx: torch.Tensor) -> None:
        """Keep/reorder rows: row i becomes old row idx[i] (cache included)."""
        self.cache.reorder_cache(idx)
        self.mask, self.next_pos, self.row_langs = self.mask[idx], self.next_pos[idx], self.row_langs[idx]


class GreedyDecoder:
    def __init__(self, options: DecodingOptions):
        self.guard = RepetitionGuard(options.repetition_ngram, options.repetition_max)

    def decode(self, stepper: CausalLMStepper, embeds: torch.Tensor, mask: torch.Tensor,
               limits: torch.Tensor, eos_id: int) -> list[list[int]]:
        logits = stepper.prefill(embeds, mask)
        n_rows = logits.shape[0]
        out: list[list[int] | None] = [None] * n_rows
        active = torch.arange(n_rows, device=logits.device)
        hist = torch.empty(n_rows, 0, dtype=torch.long, device=logits.device)
        for t in range(int(limits.max())):
            nxt = logits.argmax(-1)
            hist = torch.cat([hist, nxt[:, None]], dim=1)
            is_eos = nxt == eos_id
            repeated = self.guard(hist) & ~is_eos
            done = is_eos | repeated | (t + 1 >= limits[active])
            for j in done.nonzero().flatten().tolist():
                keep = t if is_eos[j] else t + 1 - (self.guard.n if repeated[j] else 0)
                out[int(active[j])] = hist[j, :keep].tolist()
            if bool(done.all()):
                break
            if bool(done.any()):
                rows = (~done).nonzero().flatten()
                stepper.select(rows)
                active, hist, nxt = active[rows], hist[rows], nxt[rows]
            logits = stepper.step(nxt)
        return out


class BeamSearchDecoder:
    """Batched beam search: B*K rows in one cache; per batch row, the K best unfinished beams
    continue until K hypotheses have finished or its length limit is reached."""

    def __init__(self, options: DecodingOptions):
        self.k = options.beam_size
        self.length_penalty = options.length_penalty
        self.guard = RepetitionGuard(options.repetition_ngram, options.repetition_max)

    def decode(self, stepper: CausalLMStepper, embeds: torch.Tensor, mask: torch.Tensor,
               limits: torch.Tensor, eos_id: int) -> list[list[int]]:
        k = self.k
        logits = stepper.prefill(embeds, mask)
        b, vocab = logits.shape
        stepper.select(torch.arange(b, device=logits.device).repeat_interleave(k))
        logp = torch.log_softmax(logits.float(), -1).repeat_interleave(k, 0)
        scores = torch.full((b, k), -math.inf, device=logits.device)
        scores[:, 0] = 0.0                       # all beams start identical: expand one
        hist = torch.empty(b * k, 0, dtype=torch.long, device=logits.device)
        finished: list[list[tuple[list[int], float, int]]] = [[] for _ in range(b)]
        done = [False] * b
        for t in range(int(limits.max())):
            src, tok, new = self._expand(scores, logp, hist, finished, done, eos_id, vocab)
            idx = torch.tensor(src, device=logits.device)
            hist = torch.cat([hist[idx], torch.tensor(tok, device=logits.device)[:, None]], 1)
            scores = torch.tensor(new, device=logits.device).view(b, k)
            stepper.select(idx)
            self._finish_repeated(hist, scores, finished)
            for i in range(b):
                alive = bool(torch.isfinite(scores[i]).any())
                if not done[i] and (len(finished[i]) >= k or t + 1 >= int(limits[i]) or not alive):
                    done[i] = True
                    for j in range(k):
                        if math.isfinite(float(scores[i, j])) and len(finished[i]) < k:
                            finished[i].append((hist[i * k + j].tolist(), float(scores[i, j]), t + 1))
            if all(done):
                break
            logp = torch.log_softmax(stepper.step(hist[:, -1]).float(), -1)
        return [self._best(f) for f in finished]

    def _expand(self, scores, logp, hist, finished, done, eos_id, vocab):
        """Pick K continuations per batch row; EOS candidates go to ``finished``."""
        k = self.k
        b = scores.shape[0]
        cand = (scores.reshape(-1, 1) + logp).view(b, -1)
        top_s, top_i = cand.topk(min(2 * k, cand.shape[1]), dim=-1)
        top_s, top_i = top_s.tolist(), top_i.tolist()
        src, tok, new = [], [], []
        for i in range(b):
            sel = []
            for s, flat in zip(top_s[i], top_i[i]):
                if done[i] or not math.isfinite(s) or len(sel) == k:
                    break
                beam, token = divmod(flat, vocab)
                if token == eos_id:
                    finished[i].append((hist[i * k + beam].tolist(), s, hist.shape[1] + 1))
                else:
                    sel.append((i * k + beam, token, s))
            sel += [(i * k, eos_id, -math.inf)] * (k - len(sel))   # placeholders for dead beams
            for r, token, s in sel:
                src.append(r), tok.append(token), new.append(s)
        return src, tok, new

    def _finish_repeated(self, hist, scores, finished) -> None:
        flat = scores.view(-1)
        rep = self.guard(hist) & torch.isfinite(flat)
        for r in rep.nonzero().flatten().tolist():
            finished[r // self.k].append((hist[r, :-self.guard.n].tolist(), float(flat[r]),
                                          hist.shape[1] - self.guard.n))
            flat[r] = -math.inf

    def _best(self, hyps: list[tuple[list[int], float, int]]) -> list[int]:
        if not hyps:
            return []

        def ranked(h):
            _, score, length = h
            length = max(length, 1)
            pen = length if self.length_penalty is None else ((5 + length) / 6) ** self.length_penalty
            return score / pen

        return max(hyps, key=ranked)[0]


def build_decoder(options: DecodingOptions):
    return GreedyDecoder(options) if options.beam_size == 1 else BeamSearchDecoder(options)
