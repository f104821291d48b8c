"""Benchmark: our torch Whisper log-mel vs transformers' WhisperFeatureExtractor, side by side.

Usage: python -m zlora.bin.bench_features [--seconds 1,5,20] [--n_mels 80,128] [--reps 20]
                                          [--threads 1]
Prints one JSON object per line (per n_mels x duration): milliseconds per call for both (median of
``reps``), milliseconds per audio-second, our speed-up, and the max abs difference of the outputs
on the same audio. The extractor is called on one utterance with padding="longest" (no 30 s
padding) and truncation=False, i.e. the fair comparison; both run in this process, interleaved.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from zlora.data.features import log_mel
from zlora.utils.cli import ArgumentParser, run_main


def synth_speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """(N,) float32 16 kHz: a few harmonics with vibrato plus noise bursts (speech-like spectrum)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    x = x + 0.05 * rng.standard_normal(len(t))
    return (0.1 * x).astype(np.float32)


def time_ms(fn, repeats: int) -> float:
    fn()  # warm-up (filterbank caches, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_one(extractor, wave: np.ndarray, n_mels: int, repeats: int) -> dict:
    x = torch.from_numpy(wave)

    def theirs():
        return extractor(wave, sampling_rate=16000, padding="longest", truncation=False,
                         return_tensors="np").input_features[0]

    ours_ms = time_ms(lambda: log_mel(x, n_mels), repeats)
    theirs_ms = time_ms(theirs, repeats)
    diff = float(np.abs(log_mel(x, n_mels).numpy() - theirs()).max())
    secs = len(wave) / 16000
    return {"bench": "features", "n_mels": n_mels, "audio_s": secs, "frames": len(wave) // 160,
            "ours_ms": round(ours_ms, 4), "hf_ms": round(theirs_ms, 4),
            "ours_ms_per_audio_s": round(ours_ms / secs, 4), "hf_ms_per_audio_s": round(theirs_ms / secs, 4),
            "speedup_vs_hf": round(theirs_ms / ours_ms, 3), "max_abs_diff": diff}


def main(argv: list[str]) -> int:
    p = ArgumentParser("bench_features", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", default="1,5,20", help="comma-separated utterance durations (s)")
    p.add_argument("--n_mels", default="80,128", help="comma-separated mel bin counts")
    p.add_argument("--reps", type=int, default=20, help="timed calls per case (the median is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_alias("--repeats", "--reps")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers import WhisperFeatureExtractor

    machine = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or
               platform.machine(), "cores": os.cpu_count()}
    for n_mels in (int(v) for v in args.n_mels.split(",")):
        extractor = WhisperFeatureExtractor(feature_size=n_mels)
        for secs in (float(v) for v in args.seconds.split(",")):
            row = bench_one(extractor, synth_speechlike(secs), n_mels, args.reps)
            print(json.dumps({**row, **machine}), flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
