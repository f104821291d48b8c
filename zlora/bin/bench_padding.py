"""Benchmark: encoder padding efficiency (real / computed encoder frames) at the zipper12 configs.

    python -m zlora.bin.bench_padding [--batches 300] [--seed 0]

For each duration distribution (LibriSpeech-, MLS- and Common-Voice-like; synthetic, see
DISTRIBUTIONS) and each zipper12 regime (chunked, full), utterances are laid out exactly as
training does: transcript lengths from the duration, packed length = speech tokens (12.5 Hz) +
prompt + transcript + eos, language-homogeneous packs of <= 2048 tokens
(zlora.data.dataset.pack_corpus), micro-batches of ``data.batch_size`` packs from
PackBatchSampler, chunk durations drawn per utterance from {1, 2, 4, 8} s. Each micro-batch's
encoder input is cut into pieces (zlora.models.pieces.plan_pieces, as the encoder does) and
grouped with the config's ``max_groups`` / ``group_target``; the efficiency of one padded batch
(``max_groups 1``, the encoder before length groups) is printed next to it. Lengths only: no
audio and no model run (the grouping is a function of the lengths). One JSON object per line.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from zlora.utils.cli import ArgumentParser, run_main

# Synthetic stand-ins for the corpora's utterance durations (seconds): not the real
# distributions, but their published shapes: LibriSpeech train segments mostly 10-17 s (mean
# ~12.3 s, up to ~35 s); MLS segments 10-20 s; Common Voice clips mostly 2-10 s (mean ~5 s).
DISTRIBUTIONS = {
    "librispeech": lambda rng, n: np.clip(rng.normal(12.3, 3.6, n), 1.0, 30.0),
    "mls": lambda rng, n: rng.uniform(10.0, 20.0, n),
    "commonvoice": lambda rng, n: np.clip(rng.lognormal(np.log(5.0), 0.35, n), 1.0, 15.0),
}
TOKENS_PER_SECOND = 3.5        # transcript tokens per second of speech (Qwen3 BPE, read speech)
PROMPT_TOKENS = 24             # Eq. 3 prompt of a language, in Qwen3 tokens (about)
REGIMES = {   # zipper12 micro-batches (egs/zipper12/asr1/conf/train_stage1_*.yaml; §V-B: 16 / 10 packs)
    "chunked": {"chunked": True, "batch_size": 16},
    "full": {"chunked": False, "batch_size": 10},
}


def speech_tokens(frames: int) -> int:
    """mel frames -> speech tokens: Whisper's 2x conv, then the projector's 4x (12.5 Hz)."""
    return -(-(-(-frames // 2)) // 4)


def utterances(dist: str, n: int, rng: np.random.Generator, n_langs: int = 4) -> list:
    from zlora.data.dataset import Utterance

    secs = DISTRIBUTIONS[dist](rng, n)
    out = []
    for i, s in enumerate(secs):
        frames = int(round(s * 100))
        text = max(1, int(round(s * TOKENS_PER_SECOND)))
        out.append(Utterance(f"u{i}", i % n_langs, frames, float(s), [0] * text,
                             speech_tokens(frames) + PROMPT_TOKENS + text + 1))
    return out


def micro_batches(utts: list, batch_size: int, count: int, seed: int) -> list[list]:
    """``count`` micro-batches (lists of utterances) from the training packer and sampler."""
    from zlora.data.dataset import pack_corpus
    from zlora.data.sampler import PackBatchSampler

    packs, by_lang = pack_corpus(utts, 2048)
    sampler = PackBatchSampler(by_lang, batch_size, seed=seed)
    out = []
    for batch in sampler.epoch_batches(0)[:count]:
        out.append([utts[i] for p in batch for i in packs[p]])
    return out


def efficiency(batches: list[list], chunked: bool, max_groups: int, target: float, seed: int) -> dict:
    from zlora.models.config import chunk_frames
    from zlora.models.pieces import plan_groups, plan_pieces

    rng = np.random.default_rng(seed)
    choices = [chunk_frames(s) for s in (1.0, 2.0, 4.0, 8.0)]
    real = computed = calls = 0
    for batch in batches:
        lens = torch.tensor([u.n_frames for u in batch])
        frames = torch.tensor(rng.choice(choices, len(batch))) if chunked else lens
        enc = (plan_pieces(lens, frames).length + 1) // 2          # encoder frames per piece
        groups = plan_groups(enc.numpy(), max_groups, target)
        real += int(enc.sum())
        computed += sum(len(g) * int(enc[g].max()) for g in groups)
        calls += len(groups)
    return {"efficiency": round(real / computed, 4), "encoder_calls_per_batch": round(calls / len(batches), 2)}


def main(argv: list[str]) -> int:
    p = ArgumentParser("bench_padding", description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=300, help="micro-batches measured per configuration")
    p.add_argument("--utts", type=int, default=20000, help="utterances drawn per distribution")
    p.add_argument("--max_groups", type=int, default=8, help="as model.encoder.max_groups")
    p.add_argument("--group_target", type=float, default=0.95, help="as model.encoder.group_target")
    p.add_argument("--seed", type=int, default=0, help="seeds the durations, packing and chunk draws")
    args = p.parse_args(argv)
    for dist in DISTRIBUTIONS:
        utts = utterances(dist, args.utts, np.random.default_rng(args.seed))
        for regime, rc in REGIMES.items():
            batches = micro_batches(utts, rc["batch_size"], args.batches, args.seed)
            row = {"distribution": dist, "regime": regime, "micro_batches": len(batches),
                   "utts_per_batch": round(float(np.mean([len(b) for b in batches])), 1),
                   "one_padded_batch": efficiency(batches, rc["chunked"], 1, 1.0, args.seed),
                   "length_groups": efficiency(batches, rc["chunked"], args.max_groups, args.group_target,
                                               args.seed)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
