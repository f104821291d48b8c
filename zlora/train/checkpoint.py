"""Checkpoints and the final model on disk (building models: zlora.models.assembly).

Layout::

    EXP/checkpoints/step-N/model.safetensors     trainable tensors (rank 0)
                          optimizer.pt           DDP: AdamW state (rank 0)
                          optimizer-rankR.pt     DeepSpeed ZeRO: each rank's partition
                          rng-rankR.pt           torch / numpy / python (/ cuda) RNG of rank R
                          trainer.pt             step, epoch, sampler and schedule state
                          frozen.json            CRC32 of every frozen tensor (see below)
                          meta.json              sidecar {step, epoch, loss, lr, ...}
    EXP/checkpoints/latest                       text: the name of the newest complete step dir
    EXP/final/{model.safetensors, adapter.safetensors (stage 2), config.yaml, frozen.json, meta.json}

Atomicity: every file goes through zlora.utils.io (temp file, fsync, rename); a checkpoint is
written into ``.step-N.partial`` and renamed to ``step-N`` only when every rank has written its
files, then ``latest`` is replaced atomically. A kill or a full disk at any moment leaves
``latest`` naming the previous complete checkpoint. Optimizer / RNG / trainer state are plain
tensor containers loaded with ``torch.load(weights_only=True)``; weights are safetensors.

Frozen tensors are not saved; they come from the pretrained dirs or, for from-scratch parts, from
the seeded build. ``frozen.json`` records their CRC32s (zlora.models.assembly.frozen_fingerprint)
so a rebuild that would silently differ (another pretrained dir, another seed) is an error.

``final/model.safetensors`` carries what its tensors mean in its metadata (:func:`weights_record`:
the language list, whose order indexes the language-specific weights; adapter kind, rank and
alpha; LLM-LoRA rank and alpha; the tokenizer's sha256), and :func:`check_weights_record` compares
it with the config the weights are loaded with: a reordered language list in ``final/config.yaml``
once applied every language's weights to another language without a word.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zlora.config import save_config
from zlora.utils.provenance import short
from zlora.utils.io import (CheckpointError, atomic_save_file, atomic_write_text, fsync_dir,  # noqa: F401
                            load_tensors, read_metadata, save_tensors)
from zlora.utils.log import get_logger

log = get_logger("train.checkpoint")

CKPT_DIR = "checkpoints"
LATEST = "latest"
FINAL = "final"


def _save_state(obj: dict, path: Path) -> None:
    atomic_save_file(lambda tmp: torch.save(obj, tmp), path)


def load_state(path: Path) -> dict:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if type(e).__name__ == "UnpicklingError" and "Weights only load failed" in str(e):
            # torch's own message suggests weights_only=False, i.e. running the file's code: no.
            raise CheckpointError(f"{path}: refused: it holds pickled Python objects, not only tensors "
                                  "and plain containers (zlora loads .pt files with weights_only=True "
                                  "and never unpickles code); was it written by zlora?") from None
        raise CheckpointError(f"{path}: cannot load (truncated or corrupt?): {e}") from e


# ---- RNG ------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """RNG states as tensors and ints only (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                        "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- checkpoints during training ----------------------------------------------------------------------
@dataclass
class CheckpointPayload:
    """What one rank contributes to a checkpoint."""
    step: int
    weights: dict[str, torch.Tensor] | None      # rank 0 only
    optimizer: dict | None                       # rank 0 (DDP) or every rank (ZeRO)
    optimizer_per_rank: bool
    trainer: dict | None                         # rank 0 only
    meta: dict | None                            # rank 0 only
    frozen: dict | None                          # rank 0 only
    record: dict | None = None                   # rank 0 only: weights_record, stored with the weights


def checkpoint_root(exp_dir: str | Path) -> Path:
    return Path(exp_dir) / CKPT_DIR


def write_rank_files(tmp: Path, rank: int, payload: CheckpointPayload) -> None:
    """Files of one rank into the partial dir (weights first: the biggest, most likely to fail)."""
    from zlora.train.debug import maybe_kill

    if payload.weights is not None:
        meta = {RECORD_KEY: json.dumps(payload.record)} if payload.record is not None else None
        save_tensors(payload.weights, tmp / "model.safetensors", meta)
        maybe_kill("checkpoint_write", payload.step)
    if payload.optimizer is not None:
        name = f"optimizer-rank{rank}.pt" if payload.optimizer_per_rank else "optimizer.pt"
        _save_state(payload.optimizer, tmp / name)
    _save_state(rng_state(), tmp / f"rng-rank{rank}.pt")
    if payload.trainer is not None:
        _save_state(payload.trainer, tmp / "trainer.pt")
    if payload.frozen is not None:
        atomic_write_text(tmp / "frozen.json", json.dumps(payload.frozen, indent=0, sort_keys=True))


def save_checkpoint(exp_dir: str | Path, payload: CheckpointPayload, rank: int, device: torch.device,
                    keep_last: int) -> Path:
    """Collective: every rank calls it. Returns the checkpoint dir; raises CheckpointError on every
    rank if any rank failed, leaving ``latest`` and the earlier checkpoints untouched.

    Ranks write into one directory, so multi-node runs need an exp dir on a shared filesystem.
    """
    root = checkpoint_root(exp_dir)
    final, tmp = root / f"step-{payload.step}", root / f".step-{payload.step}.partial"

    def prepare():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    _collectively(prepare if rank == 0 else None, final, tmp, exp_dir, rank, device)
    _collectively(lambda: write_rank_files(tmp, rank, payload), final, tmp, exp_dir, rank, device)
    _collectively((lambda: _publish(tmp, final, payload.meta or {}, root, keep_last)) if rank == 0 else None,
                  final, tmp, exp_dir, rank, device)
    return final


def _collectively(action, final: Path, tmp: Path, exp_dir, rank: int, device: torch.device) -> None:
    """Run ``action`` (or nothing) on this rank; if it failed on any rank, fail on every rank
    (a rank raising alone would leave its peers blocked in the next collective)."""
    from zlora.train.distributed import any_rank

    error = None
    try:
        if action is not None:
            action()
    except OSError as e:
        error = e
    if any_rank(error is not None, device):
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = read_latest(exp_dir)
        raise CheckpointError(f"writing checkpoint {final} failed ({error or 'on another rank'}); "
                              f"the previous checkpoint is intact: {previous or 'none'}")


def _publish(tmp: Path, final: Path, meta: dict, root: Path, keep_last: int) -> None:
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    fsync_dir(tmp)
    if final.exists():              # left by a run killed after this rename but before 'latest'
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / LATEST, final.name + "\n")
    prune_checkpoints(root, keep_last)


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (never the one 'latest' names)."""
    latest = _read_pointer(root / LATEST) if (root / LATEST).is_file() else None
    steps = sorted((int(p.name[5:]), p) for p in root.glob("step-*") if p.name[5:].isdigit())
    if keep_last > 0:
        for _, path in steps[:-keep_last]:
            if path.name != latest:
                shutil.rmtree(path, ignore_errors=True)


def read_latest(exp_dir: str | Path) -> Path | None:
    """The newest complete checkpoint dir, or None when there is none."""
    root = checkpoint_root(exp_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = _read_pointer(pointer)
    path = root / name
    if not name.startswith("step-") or not (path / "meta.json").is_file():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a complete checkpoint dir")
    return path


def _read_pointer(pointer: Path) -> str:
    """The checkpoint name in ``latest``; bytes that are not text are an error naming the file."""
    try:
        return pointer.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        steps = sorted(p.name for p in pointer.parent.glob("step-*"))
        raise CheckpointError(f"{pointer}: not text (undecodable bytes); it must hold the name of the "
                              f"newest complete checkpoint dir, step-N (there are: "
                              f"{', '.join(steps) or 'none'}): write that name into it") from None


def read_meta(ckpt: Path) -> dict:
    path = Path(ckpt) / "meta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint sidecar: {e}") from e


def remove_partials(exp_dir: str | Path) -> None:
    for p in checkpoint_root(exp_dir).glob(".step-*.partial"):
        log.warning("removing incomplete checkpoint %s (a save was interrupted)", p)
        shutil.rmtree(p, ignore_errors=True)


def load_rank_states(ckpt: Path, rank: int, per_rank_optimizer: bool) -> dict:
    """{optimizer, rng, trainer} for this rank from a checkpoint dir (weights_only loads)."""
    opt_file = ckpt / (f"optimizer-rank{rank}.pt" if per_rank_optimizer else "optimizer.pt")
    if per_rank_optimizer and not opt_file.is_file():
        have = sorted(p.name for p in ckpt.glob("optimizer*.pt"))
        raise CheckpointError(f"{opt_file} missing (the checkpoint has {have}): resume with the same "
                              "engine and number of ranks it was written with")
    return {"optimizer": load_state(opt_file), "trainer": load_state(ckpt / "trainer.pt"),
            "rng": load_state(ckpt / f"rng-rank{rank}.pt")}


# ---- the final model --------------------------------------------------------------------------------------
def save_final(exp_dir: str | Path, model: torch.nn.Module, cfg, meta: dict, frozen: dict,
               weights: dict[str, torch.Tensor] | None = None) -> Path:
    """EXP/final/ written as a whole: into .final.partial, then renamed (rank 0 only).

    ``weights``: the trainable tensors to write (the engine's float32 ``full_weights``); default
    the model's own. The adapter file takes its tensors from them too.
    """
    exp_dir = Path(exp_dir)
    final, tmp = exp_dir / FINAL, exp_dir / ".final.partial"
    weights = weights if weights is not None else model.trainable_state_dict()
    try:
        return _write_final(exp_dir, final, tmp, model, cfg, meta, frozen, weights)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"writing {final} failed ({e}); the checkpoints are intact: rerun with "
                              "--resume true to write it again") from e


def _write_final(exp_dir: Path, final: Path, tmp: Path, model, cfg, meta: dict, frozen: dict,
                 weights: dict[str, torch.Tensor]) -> Path:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_tensors(weights, tmp / "model.safetensors",
                 {"format": "zlora-trainable", RECORD_KEY: json.dumps(weights_record(cfg))})
    if cfg.adapter is not None:
        from zlora.adapters import save_adapter_file

        encoder_weights = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
        save_adapter_file(model.encoder, tmp / "adapter.safetensors", encoder_weights)
    save_config(cfg, tmp / "config.yaml")
    atomic_write_text(tmp / "frozen.json", json.dumps(frozen, indent=0, sort_keys=True))
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    fsync_dir(tmp)
    old = exp_dir / ".final.old"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(exp_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


# ---- what the weights mean ------------------------------------------------------------------------------
RECORD_KEY = "zlora_record"          # safetensors metadata key of weights_record (JSON)
TOKENIZER = "tokenizer"


def weights_record(cfg) -> dict:
    """What a TrainConfig's trainable tensors mean, stored with them: ``languages`` (order = the
    indices of language-specific weights), the adapter's kind, rank and alpha, LLM-LoRA's rank and
    alpha, and the tokenizer's sha256."""
    from zlora.models.tokenizer import tokenizer_fingerprint

    record = {"languages": list(cfg.languages)}
    if cfg.adapter is not None:
        record.update({"adapter.kind": cfg.adapter.kind, "adapter.rank": cfg.adapter.rank,
                       "adapter.alpha": cfg.adapter.alpha})
    lora = cfg.model.llm_lora
    if lora.enabled:
        record.update({"model.llm_lora.rank": lora.rank, "model.llm_lora.alpha": lora.alpha})
    record[TOKENIZER] = tokenizer_fingerprint(cfg.model.llm)
    return record


def check_weights_record(weights: Path, cfg, cfg_path: "Path | str") -> None:
    """The config must say what the weights were trained as (see the module doc); weights written
    before records existed are not checked."""
    from zlora.models.tokenizer import tokenizer_file

    text = read_metadata(weights).get(RECORD_KEY)
    if text is None:
        return
    recorded, current = json.loads(text), weights_record(cfg)
    for key, was in recorded.items():
        now = current.get(key)
        if key == TOKENIZER:
            if was and now and was != now:
                raise CheckpointError(
                    f"{tokenizer_file(cfg.model.llm)}: the tokenizer changed since {weights} was trained "
                    f"with it (sha256 {short(was)} then, {short(now)} now); restore the one it was "
                    "trained with (a retrained tokenizer maps the same ids to other pieces)")
        elif was != now:
            order = " (its order indexes the language-specific weights)" if key == "languages" else ""
            raise CheckpointError(f"{weights}: trained with {key} {was!r}{order}, but {cfg_path} says "
                                  f"{now!r}; restore the value it was trained with")


def checkpoint_meta(step: int, epoch: int, metrics: dict, cfg, world_size: int, engine: str) -> dict:
    return {"step": step, "epoch": epoch, "world_size": world_size, "engine": engine, "stage": cfg.stage,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), **metrics}
