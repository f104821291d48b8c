"""The prepared device check (run by tools/gpu_check.sh): tiny-model DeepSpeed bf16 training steps
for every adapter kind, chunked and full, on the device this process gets (CUDA when present).

    python -m zlora.bin.gpu_check [--steps 2]

Per kind and regime: a tiny Whisper-encoder + Qwen3 Speech-LLM (random weights, built from
configs), stage 2 with that kind's encoder adapters (MoLE with random experts), mixed-language
micro-batches, ``--steps`` optimizer steps through zlora's DeepSpeed engine (ZeRO-2, bf16, one
rank). Checks: the loss and gradient norm are finite, parameters are bf16 on the device, the
float32 master weights moved, the float32-policy buffers are float32. One JSON object per line;
exit status 1 if any check failed.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import torch

from zlora.adapters.registry import kinds
from zlora.utils.cli import ArgumentParser, run_main

LANGS = ["en", "fr", "de"]
TARGET = r"layers\.(1|2)\.(self_attn\.(q_proj|v_proj)|fc1|fc2)"
TINY_WHISPER = dict(d_model=64, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=128,
                    num_mel_bins=80, max_source_positions=1500, dropout=0.0)
TINY_QWEN3 = dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)


def tokenizer(tmp: Path) -> str:
    from zlora.models.tokenizer import train_sentencepiece

    (tmp / "text").write_text("hello world one two\nbonjour le monde\nhallo welt\n" * 40, encoding="utf-8")
    train_sentencepiece([tmp / "text"], tmp / "bpe", 120, languages=LANGS)
    return str(tmp / "bpe.model")


def tiny_model(sp: str, chunked: bool):
    from zlora.config import from_dict
    from zlora.models import SpeechLLMConfig, build_speech_llm

    enc = {"config": TINY_WHISPER, "chunked": chunked, "train_chunk_seconds": [0.2, 0.4],
           "decode_chunk_seconds": 0.4, "activation_checkpointing": True}
    cfg = from_dict(SpeechLLMConfig, {"encoder": enc, "llm": {"config": TINY_QWEN3, "tokenizer": sp,
                                                               "activation_checkpointing": True},
                                      "llm_lora": {"rank": 4, "alpha": 8.0}}, "model")
    torch.manual_seed(0)
    return build_speech_llm(cfg, LANGS)


def expert_files(sp: str, tmp: Path) -> list[str]:
    from zlora.adapters import AdapterConfig, save_adapter_file

    paths = []
    for i in range(len(LANGS)):
        m = tiny_model(sp, False)
        m.set_stage(2, AdapterConfig.make(kind="lora", rank=4, alpha=8.0, languages=LANGS, target_modules=TARGET))
        with torch.no_grad():
            for n, p in m.encoder.named_parameters():
                if "lora_" in n:
                    p.normal_(0, 0.3)
        paths.append(str(tmp / f"expert{i}.safetensors"))
        save_adapter_file(m.encoder, paths[-1])
    return paths


def adapter_cfg(kind: str, experts: list[str]):
    from zlora.adapters import AdapterConfig
    from zlora.adapters.registry import option_names

    lid = {c: torch.randn(16, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(LANGS)}
    options = {"k": 2, "lid_embeddings": lid, "experts": experts, "fused": r"layers\.1\..*", "lid_hidden": 8}
    conf = {k: v for k, v in options.items() if k in option_names(kind)}      # what this kind takes
    return AdapterConfig(kind=kind, rank=4, alpha=8.0, languages=LANGS, target_modules=TARGET, conf=conf)


def batch(chunked: bool, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([90, 52, 70, 36])
    out = {"feats": torch.randn(4, 90, 80, generator=g), "feat_lens": lens,
           "lang_ids": torch.tensor([0, 0, 1, 2]), "pack_ids": torch.tensor([0, 0, 1, 2]),
           "text_ids": [torch.randint(3, 40, (3 + i,), generator=g).tolist() for i in range(4)]}  # < vocab
    if chunked:
        out["chunk_seconds"] = torch.tensor([0.2, 0.4, 0.2, 0.4])
    return out


def check_kind(sp: str, kind: str, chunked: bool, experts: list[str], dist, steps: int) -> dict:
    from zlora.config import from_dict
    from zlora.train.config import TrainConfig
    from zlora.train.distill import build_loss_extensions
    from zlora.train.engine import DeepSpeedEngine

    model = tiny_model(sp, chunked)
    model.set_stage(2, adapter_cfg(kind, experts))
    start = {n: t.float().clone() for n, t in model.trainable_state_dict().items()}
    cfg = from_dict(TrainConfig, {
        "exp_dir": "unused", "languages": LANGS, "stage": 2, "init_from": "unused",
        "model": {"encoder": {"config": {}}, "llm": {"config": {"model_type": "qwen3"}, "tokenizer": "x"}},
        "data": {"train": "unused", "train_feats": "unused", "batch_size": 1},
        "adapter": adapter_cfg(kind, experts), "optim": {"lr": 2e-2, "max_steps": steps, "warmup_ratio": 0.0},
        "engine": {"engine": "deepspeed", "bf16": True}}, "gpu_check")
    t0 = time.perf_counter()
    engine = DeepSpeedEngine(model, cfg, dist, build_loss_extensions(cfg, model, dist.device, torch.bfloat16))
    losses, norms = [], []
    for s in range(steps):
        out = engine.micro_step(batch(chunked, s), last=True)
        norms.append(engine.step(cfg.optim.lr))
        losses.append(float(out["loss"].detach()))
    weights = engine.full_weights()
    trainable = [n for n, p in engine.model.named_parameters() if p.requires_grad]
    policy = [getattr(m, b).dtype == torch.float32 for m in engine.model.modules()
              for b in getattr(m, "float32_buffers", ())]
    checks = {"finite": all(map(math.isfinite, losses + norms)),
              "bf16_params": {p.dtype for p in engine.model.parameters()} == {torch.bfloat16},
              "on_device": {p.device.type for p in engine.model.parameters()} == {dist.device.type},
              "fp32_masters": all(weights[n].dtype == torch.float32 for n in trainable),
              "moved": any(not torch.equal(weights[n], start[n]) for n in trainable if "encoder" in n),
              "fp32_buffers": all(policy)}
    return {"kind": kind, "regime": "chunked" if chunked else "full", "device": str(dist.device),
            "losses": [round(x, 4) for x in losses], "ok": all(checks.values()), "checks": checks,
            "seconds": round(time.perf_counter() - t0, 2)}


def emit(row: dict, path: str | None) -> None:
    """One JSON line on stdout, and appended to ``path`` (stdout also carries DeepSpeed's logs)."""
    line = json.dumps(row)
    print(line, flush=True)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def main(argv: list[str]) -> int:
    p = ArgumentParser("gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per kind and regime")
    p.add_argument("--kinds", nargs="+", default=list(kinds()), help="adapter kinds (default: every registered one)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    from zlora.train.distributed import cleanup, init_distributed

    dist = init_distributed(None, 300)
    ok = True
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sp = tokenizer(Path(tmp))
            experts = expert_files(sp, Path(tmp))
            for kind in args.kinds:
                for chunked in (False, True):
                    try:
                        row = check_kind(sp, kind, chunked, experts, dist, args.steps)
                    except Exception as e:      # report every kind, then fail
                        row = {"kind": kind, "regime": "chunked" if chunked else "full", "ok": False,
                               "error": f"{type(e).__name__}: {e}"[:500]}
                    ok &= row["ok"]
                    emit(row, args.out)
    finally:
        cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    run_main(main)
