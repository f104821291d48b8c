"""Benchmark: batched greedy decoding with a KV cache vs batch size 1, and beam search vs greedy
(issue 11, item 3).

    python -m zlora.bin.bench_decode [--kind zipper-soft] [--utts 32] [--batch_size 32] [--new_tokens 20]
                                     [--beam_size 4] [--reps 5] [--threads 1] [--quick]

Model: the mini12 stage-2 model of ``zlora.bin.bench_train`` (Whisper-base-shaped encoder with the
bottom 4 layers cached and adapters of rank 16 on the top 2, gated-conv projector, 4-layer Qwen3-style
LLM of hidden 256 with LLM-LoRA), random weights. Inputs: ``--utts`` synthetic utterances of 1.5-2.5 s
(cached encoder states, 50 frames/s, d 512) with their languages, decoded with ``SpeechLLM.generate``.

Random weights decode garbage of arbitrary length, so the generated length is forced, honestly:
the length cap is ``max_new_tokens=--new_tokens`` with ``max_len_ratio=None``, the repetition
guard is off (``repetition_max=0``), and EOS is made unreachable by giving ``generate`` a
tokenizer proxy whose ``eos_id`` is -1 (no argmax/top-k ever yields -1). Every hypothesis then has
exactly ``--new_tokens`` tokens (checked), so every variant does the same amount of work.

Variants, run interleaved in each repetition (rotating order), medians reported:
``greedy_b1`` (one utterance per call), ``greedy_bN`` (batches of ``--batch_size``), ``beam_bN``
(beam ``--beam_size``, same batches), ``encode_b1`` / ``encode_bN``: the speech encoder + projector
alone on the same batches, to split the speed-up into its compute-bound encoder part and its
LLM (prefill + token steps) part, and ``greedy_bN_merged``: greedy_bN with the LLM-LoRA folded
into the LLM's weights, as ``zlora.bin.decode`` does by default. Wall and process CPU time are both reported.
RTF = decode wall time / audio seconds. One JSON object per line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zlora.bin.bench_train import (MINI12_LANGS, WHISPER_BASE, WHISPER_TINYTEST, machine_info,
                                   stage2_config, synth_corpus)
from zlora.utils.cli import ArgumentParser, run_main


class NoEOSTokenizer:
    """The model's tokenizer with an EOS id no decoder can produce (forces fixed-length output)."""

    def __init__(self, tok):
        self._tok = tok
        self.eos_id = -1

    def __getattr__(self, name):
        if name == "_tok":                  # copy.deepcopy probes attributes before __init__ ran
            raise AttributeError(name)
        return getattr(self._tok, name)


def build_model(kind: str, corpus: dict, root: Path, encoder: dict):
    from zlora.models import build_speech_llm

    cfg = stage2_config(kind, corpus, MINI12_LANGS, root / "exp", encoder)
    torch.manual_seed(0)
    model = build_speech_llm(cfg.model, MINI12_LANGS)
    model.set_stage(1, None)
    model.set_stage(2, cfg.adapter)
    model.eval()
    model.tokenizer = NoEOSTokenizer(model.tokenizer)
    return model


def merged_llm_lora(model):
    """A copy of ``model`` with its LLM-LoRA folded into the LLM (zlora.bin.decode's default)."""
    import copy

    from zlora.adapters.merge import merge_shared_in_place

    merged = copy.deepcopy(model)
    merge_shared_in_place(merged.llm)
    return merged


def load_inputs(corpus: dict, n: int, seed: int = 0) -> list[tuple[torch.Tensor, int, float]]:
    """n utterances (feats (T, d), lang index, seconds), languages mixed, from the synthetic dump."""
    import kaldiio

    from zlora.data.kaldi import read_kv

    feats = kaldiio.load_scp(corpus["feats"])
    u2l, u2d = read_kv(Path(corpus["data"]) / "utt2lang"), read_kv(Path(corpus["data"]) / "utt2dur")
    utts = sorted(u2l)
    pick = np.random.default_rng(seed).choice(len(utts), size=n, replace=False)
    return [(torch.from_numpy(np.array(feats[utts[i]])), MINI12_LANGS.index(u2l[utts[i]]), float(u2d[utts[i]]))
            for i in sorted(pick)]


def batches(items: list, size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = []
    for s in range(0, len(items), size):
        chunk = items[s:s + size]
        t_max = max(f.shape[0] for f, _, _ in chunk)
        x = torch.zeros(len(chunk), t_max, chunk[0][0].shape[1])
        for k, (f, _, _) in enumerate(chunk):
            x[k, :f.shape[0]] = f
        out.append((x, torch.tensor([f.shape[0] for f, _, _ in chunk]), torch.tensor([l for _, l, _ in chunk])))
    return out


@torch.no_grad()
def run_encode(model, batch_list, options=None, new_tokens=None) -> tuple[float, float]:
    """(wall, CPU) seconds of the speech encoder + projector alone (``generate``'s first phase)."""
    c0, t0 = time.process_time(), time.perf_counter()
    for feats, lens, langs in batch_list:
        model.encode_speech(feats, lens, langs)
    return time.perf_counter() - t0, time.process_time() - c0


@torch.no_grad()
def run_variant(model, batch_list, options, new_tokens: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) to decode every batch."""
    c0, t0 = time.process_time(), time.perf_counter()
    for feats, lens, langs in batch_list:
        hyps = model.generate(feats, lens, langs, options)
        if any(len(h) != new_tokens for h in hyps):
            raise RuntimeError(f"expected {new_tokens} tokens per hypothesis, got {[len(h) for h in hyps]}")
    return time.perf_counter() - t0, time.process_time() - c0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("bench_decode", description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="zipper-soft", help="encoder adapter kind of the model")
    p.add_argument("--utts", type=int, default=32, help="synthetic utterances decoded per variant")
    p.add_argument("--batch_size", type=int, default=32, help="utterances per batched generate call")
    p.add_argument("--new_tokens", type=int, default=20, help="tokens generated per utterance (forced)")
    p.add_argument("--beam_size", type=int, default=4, help="beam of the beam-search variant")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (medians are reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny encoder, 8 utterances, 1 rep")
    p.add_alias("--batch", "--batch_size")
    p.add_alias("--beam", "--beam_size")
    args = p.parse_args(argv)
    if args.quick:
        args.utts, args.batch_size, args.new_tokens, args.reps = 8, 8, 5, 1
    return args


def main(argv: list[str]) -> int:
    from zlora.models.generation import DecodingOptions

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    encoder = WHISPER_TINYTEST if args.quick else WHISPER_BASE
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        root = Path(tmp)
        per_lang = -(-args.utts // len(MINI12_LANGS)) + 1
        corpus = synth_corpus(root, MINI12_LANGS, per_lang, encoder["d_model"])
        model = build_model(args.kind, corpus, root, encoder)
        items = load_inputs(corpus, args.utts)
    audio = sum(s for _, _, s in items)
    common = dict(max_new_tokens=args.new_tokens, max_len_ratio=None, repetition_max=0)
    bs, width = args.batch_size, args.beam_size
    variants = {"greedy_b1": (batches(items, 1), DecodingOptions(beam_size=1, **common)),
                f"greedy_b{bs}": (batches(items, bs), DecodingOptions(beam_size=1, **common)),
                f"beam{width}_b{bs}": (batches(items, bs), DecodingOptions(beam_size=width, **common))}
    # The encoder + projector alone, same batches: the part batching cannot shrink (compute-bound).
    variants["encode_b1"] = (variants["greedy_b1"][0], None)
    variants[f"encode_b{bs}"] = (variants[f"greedy_b{bs}"][0], None)
    # What zlora.bin.decode does by default: the LLM-LoRA folded into the LLM's weights.
    variants[f"greedy_b{bs}_merged"] = variants[f"greedy_b{bs}"]
    models = {n: model for n in variants}
    models[f"greedy_b{bs}_merged"] = merged_llm_lora(model)
    runner = {n: (run_encode if n.startswith("encode") else run_variant) for n in variants}
    names = list(variants)
    for name in names:                                     # warm-up
        runner[name](models[name], variants[name][0][:1], variants[name][1], args.new_tokens)
    times = {n: [] for n in names}
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            times[name].append(runner[name](models[name], *variants[name], args.new_tokens))
    med = {n: statistics.median(w for w, _ in t) for n, t in times.items()}
    cpu = {n: statistics.median(c for _, c in t) for n, t in times.items()}
    b1, bn, beam = med[names[0]], med[names[1]], med[names[2]]
    print(json.dumps({"bench": "decode_setup", "kind": args.kind, "utts": args.utts, "audio_s": round(audio, 2),
                      "new_tokens_per_utt": args.new_tokens, "eos": "disabled (forced length)",
                      "encoder": encoder, **machine_info(args.threads)}), flush=True)
    for name in names:
        row = {"bench": "decode", "variant": name, "reps": args.reps, "median_s": round(med[name], 3),
               "median_cpu_s": round(cpu[name], 3),
               "rtf": round(med[name] / audio, 4)}
        if not name.startswith("encode"):
            row["tokens_per_s"] = round(args.utts * args.new_tokens / med[name], 1)
        if name == names[1]:
            e1, en = med[names[3]], med[names[4]]
            row.update(speedup_vs_b1=round(b1 / bn, 2), speedup_vs_b1_cpu=round(cpu[names[0]] / cpu[name], 2),
                       target_speedup=5.0, met=b1 / bn >= 5.0, encoder_share=round(en / bn, 3),
                       speedup_llm_part=round((b1 - e1) / max(bn - en, 1e-9), 2))
        if name == names[2]:
            row.update(cost_vs_greedy_same_batch=round(beam / bn, 2),
                       cost_vs_greedy_same_batch_cpu=round(cpu[name] / cpu[names[1]], 2))
        if name.endswith("_merged"):
            row.update(speedup_vs_unmerged=round(bn / med[name], 2),
                       speedup_vs_unmerged_cpu=round(cpu[names[1]] / cpu[name], 2))
        print(json.dumps({**row, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
