"""Benchmark the adapter kinds: speed relative to lora and PEFT, and parameter counts.

    python -m zlora.bin.bench_adapters [--quick] [--rows 12] [--tokens_per_row 32] [--reps 7]
        [--pair_reps 21] [--scaling_reps 5] [--threads 1] [--out F]
        [--sections params,kinds,peft,merged,mixed_inference,scaling]

Prints one JSON object per line. Timed variants of one comparison are interleaved (each
repetition runs every variant once, in rotating order) and ratios are medians of per-repetition
ratios of process CPU time (wall-clock ratios are printed too), so noise from other jobs on a
shared machine largely cancels. Layer shapes are those of one
Whisper-large-v3 encoder layer (q, k, v, out: 1280x1280; fc1: 1280->5120; fc2: 5120->1280),
rank 32, 12 languages; --quick shrinks them for a smoke run. Parameter counts are exact: built
by apply_adapters on a meta-device copy of the full 32-layer encoder's linear layers.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from zlora.adapters import (KINDS, AdapterConfig, apply_adapters, count_trainable_parameters,
                            language_context, merge_for_language, named_adapter_layers)
from zlora.utils.cli import ArgumentParser, run_main

SECTIONS = ("params", "kinds", "peft", "merged", "mixed_inference", "scaling")
TARGETS = {"homogeneous": 1.05, "mixed": 1.15, "ours_vs_peft": 1.0, "merged_vs_base": 1.02,
           "peft_mixed_speedup": 2.0}


@dataclass(frozen=True)
class Shapes:
    d_model: int
    d_ff: int
    rank: int
    n_layers: int         # encoder layers, for parameter counts only
    d_lid: int


FULL = Shapes(d_model=1280, d_ff=5120, rank=32, n_layers=32, d_lid=1280)
QUICK = Shapes(d_model=64, d_ff=256, rank=8, n_layers=2, d_lid=64)


class EncoderLayerLinears(nn.Module):
    """The six linear layers of a Whisper encoder layer, chained (attention maths left out)."""

    def __init__(self, d: int, d_ff: int):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d) -> (B, T, d)."""
        h = self.out_proj(self.q_proj(x) + self.k_proj(x) + self.v_proj(x))
        return self.fc2(nn.functional.gelu(self.fc1(h)))


def emit(record: dict, out) -> None:
    line = json.dumps({"bench": "adapters", **record}, sort_keys=False)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def languages(n: int) -> list[str]:
    return [f"l{i:02d}" for i in range(n)]


def adapter_cfg(kind: str, shapes: Shapes, n_lang: int, seed: int = 0) -> AdapterConfig:
    langs = languages(n_lang)
    g = torch.Generator().manual_seed(seed)
    lid = {c: torch.randn(shapes.d_lid, generator=g) for c in langs}
    return AdapterConfig.make(kind=kind, rank=shapes.rank, alpha=2.0 * shapes.rank, languages=langs,
                         lid_embeddings=lid, flylora_k=max(1, shapes.rank // 4))


def randomize_b(model: nn.Module) -> None:
    """Non-zero B so no kind times a trivially-zero update."""
    with torch.no_grad():
        for _, layer in named_adapter_layers(model):
            for name, p in layer.named_parameters():
                if name.startswith(("lora_B", "B_")):
                    p.normal_(0.0, 0.01)


# ---- parameter counts ---------------------------------------------------------------------------
def meta_encoder(shapes: Shapes) -> nn.Module:
    with torch.device("meta"):
        return nn.ModuleList(EncoderLayerLinears(shapes.d_model, shapes.d_ff)
                             for _ in range(shapes.n_layers))


def param_counts(shapes: Shapes, n_langs_list: tuple[int, ...], out) -> None:
    for n_lang in n_langs_list:
        counts = {}
        for kind in KINDS:
            model = meta_encoder(shapes)
            apply_adapters(model, adapter_cfg(kind, shapes, n_lang))
            counts[kind] = count_trainable_parameters(model)
        for kind, c in counts.items():
            emit({"section": "params", "kind": kind, "languages": n_lang, "rank": shapes.rank,
                  "encoder_layers": shapes.n_layers, "adapter": c["adapter"], "router": c["router"],
                  "trainable": c["adapter_total"], "frozen_buffers": c["adapter_buffers"],
                  "vs_lora": round(c["adapter_total"] / counts["lora"]["adapter_total"], 3),
                  "vs_independent": round(c["adapter_total"] / counts["independent"]["adapter_total"], 3)},
                 out)


# ---- timing -------------------------------------------------------------------------------------
def interleaved(variants: dict[str, Callable[[], None]], reps: int, warmup: int) -> dict[str, dict]:
    """Run every variant once per repetition, rotating the order.

    -> {variant: {"wall": [s...], "cpu": [s...]}}. CPU time (time.process_time) is what the
    ratios use: on a shared machine a descheduled process loses wall time but not CPU time.
    """
    names = list(variants)
    times = {n: {"wall": [], "cpu": []} for n in names}
    for rep in range(warmup + reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            w0, c0 = time.perf_counter(), time.process_time()
            variants[name]()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if rep >= warmup:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    return times


def paired_ratio(times: dict, name: str, ref: str, clock: str = "cpu") -> float:
    """Median over repetitions of time(name) / time(ref) measured in the same repetition."""
    return statistics.median(a / b for a, b in zip(times[name][clock], times[ref][clock]))


def median_s(times: dict, name: str, clock: str = "cpu") -> float:
    return statistics.median(times[name][clock])


def train_step(model: nn.Module, x: torch.Tensor, langs: list[str]) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        x.grad = None
        with language_context(model, langs):
            model(x).sum().backward()
    return run


def infer_step(model: nn.Module, x: torch.Tensor, langs: list[str] | None = None, **kw) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            if langs is None:
                model(x, **kw)
            else:
                with language_context(model, langs):
                    model(x)
    return run


def batch_langs(rows: int, n_lang: int, mixed: bool) -> list[str]:
    langs = languages(n_lang)
    return [langs[i % n_lang] for i in range(rows)] if mixed else [langs[0]] * rows


def timing_record(section: str, times: dict, ref: str, **extra) -> list[dict]:
    recs = []
    for name in times:
        recs.append({"section": section, "variant": name, **extra,
                     "cpu_median_ms": round(1000 * median_s(times, name), 2),
                     "wall_median_ms": round(1000 * median_s(times, name, "wall"), 2),
                     "reps": len(times[name]["cpu"]),
                     "ratio_vs_" + ref: round(paired_ratio(times, name, ref), 4),
                     "wall_ratio_vs_" + ref: round(paired_ratio(times, name, ref, "wall"), 4)})
    return recs


def bench_kinds(base: nn.Module, shapes: Shapes, args, out) -> None:
    models = {}
    for kind in KINDS:
        models[kind] = copy.deepcopy(base)
        apply_adapters(models[kind], adapter_cfg(kind, shapes, 12))
        randomize_b(models[kind])
    x = torch.randn(args.rows, args.tokens_per_row, shapes.d_model, requires_grad=True)
    for batch, mixed in (("homogeneous", False), ("mixed", True)):
        langs = batch_langs(args.rows, 12, mixed)
        times = interleaved({k: train_step(m, x, langs) for k, m in models.items()}, args.reps, 1)
        for rec in timing_record("kinds_fwd_bwd", times, "lora", batch=batch, languages=12):
            rec["target"] = TARGETS[batch]
            rec["met"] = rec["ratio_vs_lora"] <= TARGETS[batch]
            emit(rec, out)


def peft_lora(base: nn.Module, shapes: Shapes, n_adapters: int = 1) -> nn.Module:
    import peft

    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    cfg = peft.LoraConfig(r=shapes.rank, lora_alpha=2 * shapes.rank, target_modules=targets,
                          lora_dropout=0.0)
    model = peft.get_peft_model(copy.deepcopy(base), cfg, adapter_name="l00")
    for name in languages(n_adapters)[1:]:
        model.add_adapter(name, cfg)
    return model


def bench_peft(base: nn.Module, shapes: Shapes, args, out) -> None:
    ours = copy.deepcopy(base)
    apply_adapters(ours, adapter_cfg("lora", shapes, 12))
    theirs = peft_lora(base, shapes)
    x = torch.randn(args.rows, args.tokens_per_row, shapes.d_model, requires_grad=True)
    langs = batch_langs(args.rows, 12, False)

    def peft_step() -> None:
        theirs.zero_grad(set_to_none=True)
        x.grad = None
        theirs(x).sum().backward()
    times = interleaved({"peft_lora": peft_step, "ours_lora": train_step(ours, x, langs)},
                        args.pair_reps, 1)
    for rec in timing_record("lora_vs_peft_fwd_bwd", times, "peft_lora"):
        rec["target"], rec["met"] = TARGETS["ours_vs_peft"], rec["ratio_vs_peft_lora"] <= 1.0
        emit(rec, out)


def bench_merged(base: nn.Module, shapes: Shapes, args, out) -> None:
    model = copy.deepcopy(base)
    apply_adapters(model, adapter_cfg("zipper-soft", shapes, 12))
    randomize_b(model)
    merged = merge_for_language(model, "l00").eval()
    x = torch.randn(args.rows, args.tokens_per_row, shapes.d_model)
    times = interleaved({"bare_base": infer_step(base.eval(), x), "merged": infer_step(merged, x)},
                        args.pair_reps, 1)
    for rec in timing_record("merged_vs_base_inference", times, "bare_base"):
        rec["target"], rec["met"] = TARGETS["merged_vs_base"], rec["ratio_vs_bare_base"] <= 1.02
        emit(rec, out)


def bench_mixed_inference(base: nn.Module, shapes: Shapes, args, out) -> None:
    """12 languages in one batch, inference: PEFT's per-adapter loop vs our routed layers."""
    theirs = peft_lora(base, shapes, n_adapters=12).eval()
    x = torch.randn(args.rows, args.tokens_per_row, shapes.d_model)
    langs = batch_langs(args.rows, 12, True)
    variants = {"bare_base": infer_step(base.eval(), x),
                "peft_adapter_names": infer_step(theirs, x, adapter_names=langs)}
    for kind in ("independent", "zipper-soft"):
        model = copy.deepcopy(base)
        apply_adapters(model, adapter_cfg(kind, shapes, 12))
        randomize_b(model)
        variants["ours_" + kind] = infer_step(model.eval(), x, langs)
    times = interleaved(variants, args.reps, 1)
    base_med = median_s(times, "bare_base")
    peft_med = median_s(times, "peft_adapter_names")
    for rec in timing_record("mixed_inference_12_languages", times, "bare_base"):
        name = rec["variant"]
        if name.startswith("ours_"):
            ours_med = median_s(times, name)
            rec["peft_time_over_ours"] = round(paired_ratio(times, "peft_adapter_names", name), 4)
            rec["peft_overhead_over_ours_overhead"] = round(
                (peft_med - base_med) / max(ours_med - base_med, 1e-9), 3)
            rec["target_speedup"] = TARGETS["peft_mixed_speedup"]
        emit(rec, out)


def bench_scaling(base: nn.Module, shapes: Shapes, args, out) -> None:
    x = torch.randn(args.rows, args.tokens_per_row, shapes.d_model, requires_grad=True)
    kinds = ("lora", "independent", "zipper-static", "zipper-hard", "zipper-soft")
    for n_lang in args.scaling_languages:
        langs = batch_langs(args.rows, n_lang, True)
        variants = {}
        for kind in kinds:
            model = copy.deepcopy(base)
            apply_adapters(model, adapter_cfg(kind, shapes, n_lang))
            randomize_b(model)
            variants[kind] = train_step(model, x, langs)
        times = interleaved(variants, args.scaling_reps, 1)
        for rec in timing_record("scaling_fwd_bwd_mixed", times, "lora", languages=n_lang,
                                 languages_in_batch=min(n_lang, args.rows)):
            emit(rec, out)


# ---- CLI ----------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("bench_adapters", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, few reps (smoke run)")
    p.add_argument("--rows", type=int, default=12, help="batch rows (utterances); >= 12 for mixed")
    p.add_argument("--tokens_per_row", type=int, default=32, help="frames per row")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per variant")
    p.add_argument("--pair_reps", type=int, default=21,
                   help="repetitions for the two-variant comparisons (ours vs PEFT, merged vs base)")
    p.add_argument("--scaling_reps", type=int, default=5, help="repetitions of the scaling section")
    p.add_argument("--scaling_languages", type=lambda s: [int(v) for v in s.split(",")],
                   default=[2, 6, 12, 24, 48], help="comma-separated language counts of the scaling section")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    if args.quick:
        args.reps, args.pair_reps, args.scaling_reps, args.scaling_languages = 3, 3, 2, [2, 12]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = QUICK if args.quick else FULL
    out = open(args.out, "a", encoding="utf-8") if args.out else None
    emit({"section": "setup", "argv": argv, "shapes": shapes.__dict__, "rows": args.rows,
          "tokens_per_row": args.tokens_per_row, "threads": args.threads,
          "torch": torch.__version__, "python": platform.python_version(),
          "machine": platform.machine(), "cpus": os.cpu_count()}, out)
    base = EncoderLayerLinears(shapes.d_model, shapes.d_ff).requires_grad_(False)
    steps = {"params": lambda: param_counts(shapes, (2, 6, 12, 24, 48), out),
             "kinds": lambda: bench_kinds(base, shapes, args, out),
             "peft": lambda: bench_peft(base, shapes, args, out),
             "merged": lambda: bench_merged(base, shapes, args, out),
             "mixed_inference": lambda: bench_mixed_inference(base, shapes, args, out),
             "scaling": lambda: bench_scaling(base, shapes, args, out)}
    for section in args.sections:
        steps[section]()
    if out is not None:
        out.close()
    return 0


if __name__ == "__main__":
    run_main(main)
