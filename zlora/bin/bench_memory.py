"""Benchmark: a measured activation-memory model of zipper12 training (Whisper-large-v3 +
Qwen3-1.7B shapes), and one real-shape training step on a GPU.

    python -m zlora.bin.bench_memory [--stages 1 2] [--regimes chunked full] [--n_gpus 4]
    python -m zlora.bin.bench_memory --step [--batch_size 16] [--steps 3]   # on a GPU: tools/gpu_check.sh

**Model (default, runs on a CPU).** The saved-activation bytes of one 2048-token pack are
counted exactly with ``torch.autograd.graph.saved_tensors_hooks`` during a bf16 forward of our own
SpeechLLM (encoder pieces and length groups, projector, packed LLM rows, the loss) at the real
widths with random weights, as DeepSpeed bf16 runs it (parameters cast to bf16). Tensors are
counted once per storage; parameters are not activations. With activation checkpointing the
checkpoint keeps each block's inputs instead of its internals: those are counted through a
forward pre-hook on every checkpointed block. Each configuration is measured with 1 and 2
encoder layers and 1 and 2 LLM layers; the per-layer differences are extrapolated to 32 and 28
layers (the layers are identical, so this is exact up to allocator effects).

The pack: LibriSpeech-like utterances (zlora.bin.bench_padding) packed to <= 2048 tokens; the
fullest of the first packs is used (about 110 s of speech, 5,600 encoder frames).

Peak per pack = saved bytes + the transient of the backward: without checkpointing, about one
layer's output gradient; with it, one block's recomputed internals (a measured per-layer number)
plus its gradient. Static memory per GPU (ZeRO-2 over ``--n_gpus``): bf16 weights of every
parameter, bf16 gradients of the trainable ones and the fp32 master + Adam moments (12 B per
trainable parameter), both sharded, and two reduce buckets (conf/deepspeed/zero2.json). The
parameter counts come from building the full model on the meta device.

**Step (``--step``).** Builds the full model (or ``--enc_layers/--llm_layers``) on the GPU if
there is one (else the CPU), trains ``--steps`` steps of ``--batch_size`` packs per micro-batch
through zlora's DeepSpeed engine (ZeRO-2, bf16, one rank) and prints peak device memory, tokens/s,
encoder frames/s and MFU (zlora.train.telemetry). On a CPU only tiny layer counts are practical
(the code path is tested). One JSON object per line.
"""
from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zlora.bin.gpu_check import emit
from zlora.utils.cli import ArgumentParser, run_main

LANGS = ["en", "fr", "th", "zh"]
STAGE2_KIND = "zipper-soft"
GB = 2 ** 30


# ---- the pack -----------------------------------------------------------------------------------
def sample_pack(seed: int = 0) -> list:
    """Utterances of one full, LibriSpeech-like 2048-token pack (zlora.bin.bench_padding)."""
    from zlora.bin.bench_padding import utterances
    from zlora.data.dataset import pack_corpus

    utts = [u for u in utterances("librispeech", 400, np.random.default_rng(seed)) if u.lang == 0]
    packs, _ = pack_corpus(utts, 2048)
    best = max(packs[:20], key=lambda p: sum(utts[i].n_tokens for i in p))
    return [utts[i] for i in best]


def pack_batch(pack: list, n_packs: int, vocab: int, chunked: bool, seed: int = 0) -> dict:
    """A model batch of ``n_packs`` copies of ``pack`` (random 128-bin features and tokens)."""
    g = torch.Generator().manual_seed(seed)
    utts = pack * n_packs
    lens = torch.tensor([u.n_frames for u in utts])
    batch = {"feats": torch.randn(len(utts), int(lens.max()), 128, generator=g), "feat_lens": lens,
             "lang_ids": torch.zeros(len(utts), dtype=torch.long),
             "text_ids": [torch.randint(3, vocab, (len(u.text_ids),), generator=g).tolist() for u in utts],
             "pack_ids": torch.arange(n_packs).repeat_interleave(len(pack))}
    if chunked:
        choices = torch.tensor([1.0, 2.0, 4.0, 8.0])
        batch["chunk_seconds"] = choices[torch.randint(4, (len(utts),), generator=g)]
    return batch


# ---- models ---------------------------------------------------------------------------------------
def tokenizer(tmp: Path) -> str:
    from zlora.models.tokenizer import train_sentencepiece

    (tmp / "text").write_text("hello world\nbonjour le monde\n" * 50, encoding="utf-8")
    train_sentencepiece([tmp / "text"], tmp / "bpe", 200, languages=LANGS)
    return str(tmp / "bpe.model")


def build(sp: str, stage: int, chunked: bool, ckpt: bool, enc_layers=None, llm_layers=None, device="cpu"):
    """The zipper12 SpeechLLM at real widths (random weights), stage policy applied."""
    from zlora.adapters import AdapterConfig
    from zlora.config import from_dict
    from zlora.models import SpeechLLMConfig, build_speech_llm
    from zlora.models.shapes import model_section

    sec = model_section(sp, enc_layers, llm_layers, chunked=chunked, activation_checkpointing=ckpt)
    sec["llm"]["activation_checkpointing"] = ckpt
    cfg = from_dict(SpeechLLMConfig, sec, "model")
    with torch.device(device):
        torch.manual_seed(0)
        model = build_speech_llm(cfg, LANGS)
    model.set_stage(1)
    if stage == 2:
        lid = {c: torch.randn(1280) for c in LANGS}
        model.set_stage(2, AdapterConfig(kind=STAGE2_KIND, rank=32, alpha=64.0, languages=LANGS,
                                         conf={"lid_embeddings": lid}))
    return model


# ---- counting saved tensors -------------------------------------------------------------------------
def saved_bytes(model, batch: dict) -> int:
    """Bytes of the distinct storages autograd keeps for backward after one training forward
    (plus the inputs kept by checkpointed blocks), parameters excluded."""
    from zlora.adapters.checkpointing import is_checkpointed

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def keep(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = t.untyped_storage().nbytes()

    held = []      # keeps counted tensors alive (no storage reuse) without a graph cycle

    def pack(t):
        # Returning t itself would make a saved output refer to its own grad_fn: a cycle in
        # autograd's C++ graph that is never freed. The forward is never differentiated here.
        keep(t)
        held.append(t)
        return None

    def pre_hook(module, args, kwargs):
        for a in [*args, *kwargs.values()]:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                keep(a)

    blocks = [m for m in model.modules() if is_checkpointed(m)]
    handles = [b.register_forward_pre_hook(pre_hook, with_kwargs=True) for b in blocks]
    try:
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
            out = model(batch)
        del out
    finally:
        for h in handles:
            h.remove()
        held.clear()
    return sum(seen.values())


def measure(sp: str, stage: int, chunked: bool, ckpt: bool, pack: list) -> dict:
    """Saved bytes per pack: outside the layers, per encoder layer and per LLM layer."""
    totals = {}
    for e, l in ((1, 1), (2, 1), (1, 2)):
        model = build(sp, stage, chunked, ckpt, e, l).to(torch.bfloat16)
        batch = pack_batch(pack, 1, 151936, chunked)
        batch["feats"] = batch["feats"].bfloat16()
        totals[(e, l)] = saved_bytes(model, batch)
        del model
        gc.collect()          # checkpointed blocks hold their forward in a (Python) cycle
    enc = totals[(2, 1)] - totals[(1, 1)]
    llm = totals[(1, 2)] - totals[(1, 1)]
    return {"outside": totals[(1, 1)] - enc - llm, "enc_layer": enc, "llm_layer": llm}


# ---- static memory ------------------------------------------------------------------------------------
def parameter_counts(sp: str, stage: int) -> dict:
    model = build(sp, stage, False, False, device="meta")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def static_gb(counts: dict, n_gpus: int, bucket: int = 200_000_000) -> float:
    """bf16 weights + sharded bf16 grads + sharded fp32 master and Adam + 2 reduce buckets."""
    t = counts["trainable"]
    return (2 * counts["total"] + 2 * t / n_gpus + 12 * t / n_gpus + 2 * 2 * min(bucket, t)) / GB


def model_row(sp: str, stage: int, regime: str, pack: list, n_gpus: int, device_gb: float) -> dict:
    chunked = regime == "chunked"
    counts = parameter_counts(sp, stage)
    row = {"stage": stage, "regime": regime, "kind": STAGE2_KIND if stage == 2 else None,
           "pack_utts": len(pack), "pack_tokens": sum(u.n_tokens for u in pack),
           "pack_enc_frames": sum((u.n_frames + 1) // 2 for u in pack),
           "params_m": round(counts["total"] / 1e6, 1), "trainable_m": round(counts["trainable"] / 1e6, 1),
           "static_gb": round(static_gb(counts, n_gpus), 2)}
    plain = measure(sp, stage, chunked, False, pack)
    ckpt = measure(sp, stage, chunked, True, pack)
    for name, m in (("no_ckpt", plain), ("ckpt", ckpt)):
        saved = m["outside"] + 32 * m["enc_layer"] + 28 * m["llm_layer"]
        # backward transient: with checkpointing one block is recomputed (its no-checkpoint
        # internals) plus gradients of its size; without, gradients of about one layer's internals
        transient = 2 * max(plain["enc_layer"], plain["llm_layer"]) if name == "ckpt" else max(
            plain["enc_layer"], plain["llm_layer"])
        per_pack = (saved + transient) / GB
        row[name] = {"outside_mb": round(m["outside"] / 2 ** 20, 1),
                     "enc_layer_mb": round(m["enc_layer"] / 2 ** 20, 2),
                     "llm_layer_mb": round(m["llm_layer"] / 2 ** 20, 2),
                     "saved_gb_per_pack": round(saved / GB, 2), "peak_gb_per_pack": round(per_pack, 2),
                     "packs_that_fit": int((device_gb - 3.0 - row["static_gb"]) // per_pack)}
    return row


# ---- a real training step ---------------------------------------------------------------------------
def step_row(sp: str, args) -> dict:
    """--steps DeepSpeed ZeRO-2 bf16 steps of --batch_size packs on --device (one rank)."""
    from zlora.config import from_dict
    from zlora.train.config import TrainConfig
    from zlora.train.distributed import init_distributed
    from zlora.train.engine import DeepSpeedEngine
    from zlora.train.telemetry import StepTelemetry

    chunked = args.regime == "chunked"
    dist = init_distributed(None, 600)
    model = build(sp, args.stage, chunked, args.activation_checkpointing, args.enc_layers, args.llm_layers,
                  device=dist.device)
    cfg = from_dict(TrainConfig, {
        "exp_dir": "unused", "languages": LANGS, "stage": 1, "model": {"encoder": {"config": {}},
        "llm": {"config": {"model_type": "qwen3"}, "tokenizer": "x"}},
        "data": {"train": "unused", "train_feats": "unused", "batch_size": args.batch_size},
        "optim": {"lr": 2e-5, "max_steps": args.steps}, "engine": {"engine": "deepspeed", "bf16": True}}, "bench")
    engine = DeepSpeedEngine(model, cfg, dist)
    tele = StepTelemetry(engine.model, dist.device)
    pack = sample_pack()
    times, rows = [], []
    for s in range(args.steps):
        batch = pack_batch(pack, args.batch_size, 151936, chunked, seed=s)
        tele.start()
        t0 = time.perf_counter()
        engine.micro_step(batch, last=True)
        engine.step(2e-5)
        if dist.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens = args.batch_size * sum(u.n_tokens for u in pack)
        rows.append({"step_s": dt, "tokens_per_s": tokens / dt,
                     **tele.metrics(dt, 0.0, args.batch_size * 2048, 2048)})
    last = rows[-1]
    return {"step": True, "device": str(dist.device), "stage": args.stage, "regime": args.regime,
            "ckpt": args.activation_checkpointing, "packs": args.batch_size, "enc_layers": args.enc_layers or 32,
            "llm_layers": args.llm_layers or 28, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                     for k, v in last.items()}}


def main(argv: list[str]) -> int:
    p = ArgumentParser("bench_memory", description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2], help="training stages to model")
    p.add_argument("--regimes", nargs="+", default=["chunked", "full"], help="encoder regimes to model")
    p.add_argument("--n_gpus", type=int, default=4, help="ZeRO-2 data-parallel ranks (paper: 4)")
    p.add_argument("--device_gb", type=float, default=80.0, help="device memory (GB) for packs_that_fit")
    p.add_argument("--step", action="store_true", help="run real training steps instead of the model")
    p.add_argument("--stage", type=int, default=1, help="--step: training stage (1 or 2)")
    p.add_argument("--regime", default="chunked", help="--step: encoder regime (chunked or full)")
    p.add_argument("--activation_checkpointing", type=lambda s: s.lower() == "true", default=True,
                   help="--step: true|false, recompute encoder and LLM layers in backward")
    p.add_argument("--batch_size", type=int, default=16, help="--step: packs per micro-batch")
    p.add_argument("--steps", type=int, default=3, help="--step: optimizer steps")
    p.add_argument("--enc_layers", type=int, default=None, help="--step: encoder layers (default: all 32)")
    p.add_argument("--llm_layers", type=int, default=None, help="--step: LLM layers (default: all 28)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_alias("--ckpt", "--activation_checkpointing")
    p.add_alias("--packs", "--batch_size")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        sp = tokenizer(Path(tmp))
        if args.step:
            emit(step_row(sp, args), args.out)
            return 0
        pack = sample_pack()
        for stage in args.stages:
            for regime in args.regimes:
                t0 = time.perf_counter()
                row = model_row(sp, stage, regime, pack, args.n_gpus, args.device_gb)
                row["bench_s"] = round(time.perf_counter() - t0, 1)
                emit(row, args.out)
    return 0


if __name__ == "__main__":
    run_main(main)
