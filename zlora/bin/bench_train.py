"""Benchmark: one full Speech-LLM stage-2 training step per adapter kind (issue 11, item 2).

    python -m zlora.bin.bench_train [--kinds lora,independent,...] [--reps 7] [--warmup 2]
                                    [--utts_per_lang 40] [--threads 1] [--no_memory] [--quick]

The model is the mini12 stage-2 default (egs/mini12/asr1/conf/train_stage1.yaml +
conf/stage2/base.yaml): a Whisper-base-shaped encoder (d 512, 6 layers, 8 heads, ffn 2048, random
weights from a WhisperConfig) whose bottom 4 layers are cached, adapters of rank 16 on the top 2
layers, the gated-conv projector, the 4-layer Qwen3-style LLM of hidden 256 (frozen) with a rank-8
LLM-LoRA, max_tokens 320 and 4 packs per step. The stage-1 weights are random instead of loaded
from a stage-1 run (init_from is not read): the speed of a step does not depend on their values.

Data takes the real path: a synthetic Kaldi data dir (12 languages, utterances of 1.5-2.5 s,
random transcripts) with kaldiio-dumped random "cached encoder states" (T_enc = 50/s, d 512) in a
temp dir, read by zlora.train.data.build_train_data (load_utterances -> pack_corpus ->
PackBatchSampler -> DataLoader with collate_packs) and trained by zlora.train.Trainer.train_step
through the DDP engine (one gloo rank), exactly as ``zlora.bin.train`` does.

Timing: every kind gets its own model, data and trainer; repetitions run the kinds interleaved
(rotating order) and report medians, so all kinds see the same machine load; wall time and process
CPU time (robust to other jobs when torch runs one thread) are both printed. A step's time is the
loader's ``next()`` (reading + collating the micro-batch) plus ``Trainer.train_step`` (forward,
backward, clip, AdamW, adapter hooks). Peak memory is the peak RSS (VmHWM) of a fresh child
process per kind that builds the kind and runs ``--memory_steps`` steps (the
in-process numbers would mix the kinds); both the peak and its rise over the RSS after building
the model are printed. One JSON object per line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zlora.adapters import KINDS
from zlora.utils.cli import ArgumentParser, run_main

MINI12_LANGS = ["de", "es", "fr", "ru", "vi", "it", "en", "zh", "ar", "ja", "ko", "pt"]
ENC_FRAMES_PER_S = 50          # cached encoder states: Whisper's 2x conv over 100 mel frames/s
WHISPER_BASE = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                    num_mel_bins=80, max_source_positions=1500, dropout=0.0)
WHISPER_TINYTEST = dict(d_model=64, encoder_layers=6, encoder_attention_heads=2, encoder_ffn_dim=128,
                        num_mel_bins=80, max_source_positions=1500, dropout=0.0)
SYLLABLES = "ka ri to mu se na lo pe vi da su ne go ha mi ro zu be ta fo".split()


# ---- synthetic corpus ------------------------------------------------------------------------------
def synth_corpus(root: Path, langs: list[str], utts_per_lang: int, d_model: int, seed: int = 0) -> dict:
    """Kaldi dir root/data + kaldiio dump root/dump (T, d_model) float32 + root/lid.safetensors +
    root/spm.model. Utterances last 1.5-2.5 s; transcripts are 4-8 random pseudo-words."""
    import kaldiio
    from safetensors.torch import save_file

    from zlora.data.kaldi import DataDir
    from zlora.models.tokenizer import train_sentencepiece

    rng = np.random.default_rng(seed)
    text, u2l, u2s, u2d, wav, frames = {}, {}, {}, {}, {}, {}
    for lang in langs:
        for i in range(utts_per_lang):
            utt = f"{lang}_spk{i % 4}-{i:05d}"
            dur = round(float(rng.uniform(1.5, 2.5)), 2)
            words = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(rng.integers(4, 9))]
            text[utt], u2l[utt], u2s[utt], u2d[utt] = " ".join(words), lang, f"{lang}_spk{i % 4}", dur
            wav[utt] = f"/nonexistent/{utt}.wav"   # not read: features come from the dump
            frames[utt] = int(round(dur * ENC_FRAMES_PER_S))
    data, dump = root / "data", root / "dump"
    DataDir.write(data, wav_scp=wav, text=text, utt2spk=u2s, utt2lang=u2l, utt2dur=u2d)
    dump.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{dump / 'feats.ark'},{dump / 'feats.scp'}") as writer:
        for utt in sorted(frames):
            writer(utt, rng.standard_normal((frames[utt], d_model), dtype=np.float32))
    (dump / "utt2num_frames").write_text("".join(f"{u} {frames[u]}\n" for u in sorted(frames)))
    save_file({lang: torch.randn(d_model) for lang in langs}, str(root / "lid.safetensors"))
    train_sentencepiece([data / "text"], root / "spm", vocab_size=417, languages=langs)
    return {"data": str(data), "feats": str(dump / "feats.scp"), "lid": str(root / "lid.safetensors"),
            "spm": str(root / "spm.model"), "audio_s": sum(u2d.values()), "utts": len(text)}


def stage2_config(kind: str, corpus: dict, langs: list[str], exp_dir: Path, encoder: dict):
    """TrainConfig of mini12 stage 2 (conf/stage2/base.yaml over train_stage1.yaml), kind swapped."""
    from zlora.train.config import load_train_config

    cfg = {
        "exp_dir": str(exp_dir), "stage": 2, "languages": langs, "seed": 0,
        "init_from": "(bench: random stage-1 weights, not read)",
        "model": {
            "encoder": {"config": encoder, "n_mels": 80, "cached_layers": 4, "stage1_trainable": False},
            "projector": {"kind": "gated_conv", "downsample": 4},
            "llm": {"config": {"model_type": "qwen3", "hidden_size": 256, "intermediate_size": 768,
                               "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                               "head_dim": 64, "max_position_embeddings": 1024, "tie_word_embeddings": True},
                    "tokenizer": corpus["spm"], "trainable": False},
            "llm_lora": {"enabled": True, "rank": 8, "alpha": 16.0}},
        "adapter": {"kind": kind, "rank": 16, "alpha": 32.0, "lid_embeddings": corpus["lid"],
                    "target_modules": r"layers\.(4|5)\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)"},
        "data": {"train": corpus["data"], "train_feats": corpus["feats"], "max_tokens": 320, "batch_size": 4},
        "optim": {"lr": 5.0e-4, "warmup_ratio": 0.1, "max_steps": 150, "clip_grad": 1.0},
        "engine": {"engine": "ddp"}, "progress_bar": False, "tensorboard": False,
    }
    return load_train_config(["--config", _write_yaml(exp_dir / "bench.yaml", cfg)])


def _write_yaml(path: Path, data: dict) -> str:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


# ---- one kind's trainer --------------------------------------------------------------------------
class KindRunner:
    """Model + data + Trainer of one adapter kind; ``step()`` runs one timed optimizer step."""

    def __init__(self, kind: str, corpus: dict, langs: list[str], root: Path, encoder: dict):
        from zlora.models import build_speech_llm
        from zlora.train.data import build_train_data
        from zlora.train.distributed import init_distributed
        from zlora.train.engine import build_engine
        from zlora.train.trainer import Trainer

        self.kind = kind
        cfg = stage2_config(kind, corpus, langs, root / f"exp_{kind}", encoder)
        dist = init_distributed("gloo", 600.0)
        torch.manual_seed(0)
        model = build_speech_llm(cfg.model, langs)
        model.set_stage(1, None)               # what zlora.models.assembly does, minus the weights
        model.set_stage(2, cfg.adapter)
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.data = build_train_data(cfg, model, dist)
        self.trainer = Trainer(cfg, build_engine(cfg, model, dist), dist, self.data, None, None)
        self.batches = iter(self.data.loader())

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:          # end of epoch: what Trainer._run_epoch does
            self.data.sampler.set_epoch(self.data.sampler.epoch + 1)
            self.batches = iter(self.data.loader())
            return next(self.batches)

    def step(self) -> dict:
        c0, t0 = time.process_time(), time.perf_counter()
        micro = self._next()
        c1, t1 = time.process_time(), time.perf_counter()
        metrics = self.trainer.train_step([micro])
        c2, t2 = time.process_time(), time.perf_counter()
        self.data.sampler.advance(1)
        self.trainer.step += 1
        meta = micro[1]
        return {"load_s": t1 - t0, "train_s": t2 - t1, "step_s": t2 - t0, "load_cpu_s": c1 - c0,
                "step_cpu_s": c2 - c0, "real": meta.real_tokens,
                "padded": meta.padded_tokens, "audio_s": meta.audio_seconds, "utts": len(meta.utts),
                "packs": int(micro[0]["pack_ids"].max()) + 1, "loss": metrics["loss"]}


def summarise(kind: str, runs: list[dict], runner: KindRunner) -> dict:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    step = med("step_s")
    real, padded = sum(r["real"] for r in runs), sum(r["padded"] for r in runs)
    from zlora.data.packing import pack_efficiency

    ds = runner.data.dataset
    fill = pack_efficiency([ds.pack_tokens(i) for i in range(len(ds))], 320)
    return {"bench": "train_step", "kind": kind, "reps": len(runs), "step_ms": round(step * 1000, 1),
            "train_ms": round(med("train_s") * 1000, 1), "loader_ms": round(med("load_s") * 1000, 2),
            "loader_share": round(sum(r["load_s"] for r in runs) / sum(r["step_s"] for r in runs), 4),
            "step_cpu_ms": round(med("step_cpu_s") * 1000, 1),
            "loader_share_cpu": round(sum(r["load_cpu_s"] for r in runs) / sum(r["step_cpu_s"] for r in runs), 4),
            "tokens_per_s": round(med("real") / step, 1), "audio_s_per_s": round(med("audio_s") / step, 2),
            "utts_per_step": med("utts"), "packs_per_step": med("packs"),
            "batch_real_over_padded": round(real / padded, 4), "pack_fill_real_over_max_tokens": round(fill, 4),
            "trainable_params": runner.trainable, "loss_first": round(runs[0]["loss"], 3),
            "loss_last": round(runs[-1]["loss"], 3), "targets": {"loader_share": "< 0.05",
                                                                 "packing": ">= 0.95"}}


def packing_sweep(corpus_utts: list, max_tokens_list: list[int], batch_size: int, scale: int) -> list[dict]:
    """Pack fill and batch padding efficiency of the real packer + sampler on this corpus's packed
    lengths, at several ``max_tokens``, and on ``scale`` x as many utterances per language (each
    utterance repeated: the same length distribution) to separate the per-language tail from the packer."""
    from zlora.data.dataset import pack_corpus
    from zlora.data.packing import batch_padding_efficiency, pack_efficiency
    from zlora.data.sampler import PackBatchSampler

    big = [u for u in corpus_utts for _ in range(scale)]     # same lengths, scale x per language
    rows = []
    for name, utts in (("corpus", corpus_utts), (f"corpus_x{scale}", big)):
        for mt in max_tokens_list:
            packs, by_lang = pack_corpus(utts, mt)
            tok = [sum(utts[i].n_tokens for i in p) for p in packs]
            batches = PackBatchSampler(by_lang, batch_size, 1, 0, 0).epoch_batches(0)
            # No packer can beat ceil(tokens of a language / max_tokens) packs per language.
            per_lang = {}
            for u in utts:
                per_lang[u.lang] = per_lang.get(u.lang, 0) + u.n_tokens
            min_packs = sum(-(-n // mt) for n in per_lang.values())
            rows.append({"bench": "packing", "utterances": name, "n_utts": len(utts), "max_tokens": mt,
                         "packs": len(packs), "utts_per_pack": round(len(utts) / len(packs), 2),
                         "pack_fill": round(pack_efficiency(tok, mt), 4), "min_packs": min_packs,
                         "pack_fill_upper_bound": round(sum(tok) / (min_packs * mt), 4),
                         "batch_real_over_padded": round(batch_padding_efficiency(batches, tok), 4)})
    return rows


# ---- memory (child process) ------------------------------------------------------------------------
def memory_child(kind: str, corpus: dict, langs: list[str], root: Path, encoder: dict, steps: int) -> dict:
    """Run in a fresh process: peak RSS of building ``kind`` + ``steps`` steps. The peak is VmHWM of
    /proc/self/status, not getrusage's ru_maxrss, which Linux carries across fork + execve (a child
    of this benchmark would report the parent's peak)."""
    runner = KindRunner(kind, corpus, langs, root, encoder)
    after_build = _rss_kib()
    rss_per_step = []
    for _ in range(steps):
        runner.step()
        rss_per_step.append(round(_rss_kib() / 1024, 1))
    peak = _status_kib("VmHWM")
    return {"bench": "train_step_memory", "kind": kind, "steps": steps, "measure": "VmHWM (peak RSS of this process)",
            "peak_rss_mib": round(peak / 1024, 1), "rss_after_build_mib": round(after_build / 1024, 1),
            "peak_rise_during_steps_mib": round((peak - after_build) / 1024, 1),
            "rss_after_each_step_mib": rss_per_step}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def _rss_kib() -> int:
    return _status_kib("VmRSS")


def run_memory_children(kinds: list[str], root: Path, args) -> None:
    for kind in kinds:
        cmd = [sys.executable, "-m", "zlora.bin.bench_train", "--memory_child", kind, "--root", str(root),
               "--threads", str(args.threads), "--memory_steps", str(args.memory_steps)]
        if args.quick:
            cmd.append("--quick")
        # A fresh rendezvous: this process's one-rank group still holds its MASTER_PORT.
        env = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"memory child for {kind} failed:\n{out.stderr[-2000:]}")
        print(out.stdout.strip().splitlines()[-1], flush=True)


# ---- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated adapter kinds")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions (medians are reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    p.add_argument("--utts_per_lang", type=int, default=40, help="synthetic utterances per language")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--memory_steps", type=int, default=3, help="steps of each peak-memory child process")
    p.add_argument("--no_memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny encoder (d 64), 2 kinds, 1 rep, few utterances")
    p.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.kinds = "lora,zipper-soft" if args.kinds == ",".join(KINDS) else args.kinds
        args.reps, args.warmup, args.utts_per_lang, args.memory_steps = 1, 1, 6, 1
    return args


def machine_info(threads: int) -> dict:
    import platform

    return {"torch": torch.__version__, "threads": threads, "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    encoder = WHISPER_TINYTEST if args.quick else WHISPER_BASE
    langs = MINI12_LANGS
    if args.memory_child:
        corpus = json.loads((Path(args.root) / "corpus.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            row = memory_child(args.memory_child, corpus, langs, Path(tmp), encoder, args.memory_steps)
        print(json.dumps(row), flush=True)
        return 0
    kinds = [k for k in args.kinds.split(",") if k]
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        corpus = synth_corpus(root, langs, args.utts_per_lang, encoder["d_model"])
        (root / "corpus.json").write_text(json.dumps(corpus))
        print(json.dumps({"bench": "train_step_setup", "utts": corpus["utts"], "languages": len(langs),
                          "audio_s": round(corpus["audio_s"], 1), "encoder": encoder,
                          **machine_info(args.threads)}), flush=True)
        runners = {k: KindRunner(k, corpus, langs, root, encoder) for k in kinds}
        runs = {k: [] for k in kinds}
        for rep in range(args.warmup + args.reps):
            order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]   # rotate: no kind always first
            for k in order:
                r = runners[k].step()
                if rep >= args.warmup:
                    runs[k].append(r)
        rows = {k: summarise(k, runs[k], runners[k]) for k in kinds}
        base = rows.get("lora")
        for k in kinds:
            if base is not None:
                rows[k]["step_vs_lora"] = round(rows[k]["step_ms"] / base["step_ms"], 3)
                rows[k]["step_cpu_vs_lora"] = round(rows[k]["step_cpu_ms"] / base["step_cpu_ms"], 3)
            print(json.dumps({**rows[k], "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
        first = runners[kinds[0]]
        for row in packing_sweep(first.data.corpus.utterances, [320, 640, 1024, 2048], 4, 10):
            print(json.dumps(row), flush=True)
        del runners, first
        if not args.no_memory:
            run_memory_children(kinds[:1] if args.quick else kinds, root, args)
    return 0


if __name__ == "__main__":
    run_main(main)
