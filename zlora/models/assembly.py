"""Model assembly, one step per function (paper §IV-F). ``python -m zlora.bin.train`` calls them in
this order, and so does loading a trained model (zlora.train.trained)::

    model = build(cfg.model, languages, seed)          # encoder + projector + LLM (+ LLM-LoRA)
    load_stage1(model, resolve_init_from(init_from))   # stage 2: the stage-1 trainable weights
    insert_adapters(model, adapter_cfg)                # stage 2: the encoder adapters
    set_trainable(model, stage)                        # requires_grad per the stage policy

A stage-2 model is the stage-1 model (rebuilt from its config, its trainable tensors loaded from
``init_from``) with encoder adapters added. Frozen tensors are never saved: they come from the
pretrained dirs or, for from-scratch parts, from the seeded build, and :func:`frozen_fingerprint`
records their CRC32s so that a rebuild that would silently differ (another pretrained dir, another
seed) is an error (:func:`check_fingerprint`).
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zlora.config import ConfigError
from zlora.models import stages
from zlora.models.config import SpeechLLMConfig
from zlora.models.speech_llm import SpeechLLM, build_speech_llm
from zlora.utils.io import CheckpointError, load_tensors
from zlora.utils.log import get_logger

log = get_logger("models")

FINAL = "final"                 # EXP/final: a finished run's model (zlora.train.checkpoint)
CKPT_DIR = "checkpoints"


# ---- the steps ------------------------------------------------------------------------------------------
def build(cfg: SpeechLLMConfig, languages: list[str], seed: int) -> SpeechLLM:
    """The SpeechLLM of ``cfg``, built under ``seed``: the seed of the run that first built the
    frozen weights (stage 1's for a stage-2 run), so from-scratch frozen parts come out the same."""
    seed_everything(seed)
    return build_speech_llm(cfg, list(languages))


def load_stage1(model: SpeechLLM, init: "InitSource") -> None:
    """Stage 2: load the stage-1 run's trainable tensors (not strictly: a stage-2 config may enable
    parts, e.g. LLM-LoRA, that stage 1 did not have; unknown names and shape mismatches still
    fail) and check the frozen tensors against its frozen.json."""
    stages.set_trainable(model, 1)          # so stage 1's trainable names are the expected ones
    try:
        model.load_trainable_state_dict(load_tensors(init.weights), strict=False)
    except ValueError as e:
        raise CheckpointError(f"init_from {init.weights}: does not fit this model: {e}") from e
    check_fingerprint(model, init.frozen)
    log.info("stage 2: loaded the stage-1 model from %s", init.weights)
    warn_new_languages(model.languages, init)


def warn_new_languages(languages: list[str], init: "InitSource") -> None:
    """A stage-2 language that stage 1 never trained on is allowed (its prompt and speech start
    from what stage 1 learnt for the others) but worth a line in the log."""
    from zlora.config import read_yaml

    stage1 = read_yaml(init.config).get("languages") if init.config.is_file() else None
    new = [lang for lang in languages if isinstance(stage1, list) and lang not in stage1]
    if new:
        log.warning("stage 2 language(s) %s: stage 1 never saw them (init_from %s was trained on %s); "
                    "they start from what stage 1 learnt for the other languages", ", ".join(new),
                    init.weights, ", ".join(map(str, stage1)))


def insert_adapters(model: SpeechLLM, adapter_cfg) -> list[str]:
    """Stage 2: wrap the encoder's linear layers matched by ``adapter_cfg.target_modules``."""
    return stages.insert_encoder_adapters(model, adapter_cfg)


def set_trainable(model: SpeechLLM, stage: int) -> None:
    """requires_grad per the §IV-F policy of ``stage`` (zlora.models.stages)."""
    stages.set_trainable(model, stage)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# ---- where stage 1 comes from ---------------------------------------------------------------------------
@dataclass
class InitSource:
    weights: Path        # stage-1 trainable tensors
    config: Path         # stage-1 resolved config.yaml
    frozen: Path         # stage-1 frozen.json


def resolve_init_from(path: str | None) -> InitSource:
    """``init_from``: a stage-1 exp dir (uses its final/) or a checkpoint dir (step-N)."""
    if not path:
        raise ConfigError("init_from: stage 2 needs the stage-1 exp dir")
    p = Path(path)
    if (p / FINAL / "model.safetensors").is_file():
        d = p / FINAL
        return InitSource(d / "model.safetensors", d / "config.yaml", d / "frozen.json")
    if (p / "model.safetensors").is_file() and (p / "meta.json").is_file():
        exp = p.parent.parent if p.parent.name == CKPT_DIR else p.parent
        return InitSource(p / "model.safetensors", exp / "config.yaml", p / "frozen.json")
    if not p.exists():
        raise ConfigError(f"init_from: {path} does not exist (the stage-1 exp dir is needed for stage 2)")
    raise ConfigError(f"init_from: {path} holds no stage-1 model: expected {p / FINAL / 'model.safetensors'} "
                      "(did stage 1 finish?) or a checkpoint dir with model.safetensors and meta.json")


# ---- frozen-weight fingerprint ----------------------------------------------------------------------------
def frozen_fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """{name: "dtype shape crc32"} of every frozen parameter and buffer not in the checkpoint."""
    trainable_sd = model.trainable_state_dict()
    trainable = set(trainable_sd)
    # Tied weights (e.g. lm_head.weight = embed_tokens.weight) appear under a second name: they
    # change with the trainable tensor they share storage with, so they are not frozen.
    shared = {t.data_ptr() for t in trainable_sd.values() if t.numel()}
    out = {}
    for name, t in model.state_dict().items():
        if name in trainable or (t.numel() and t.data_ptr() in shared):
            continue
        flat = t.detach().cpu().contiguous().reshape(-1)
        crc = zlib.crc32(flat.view(torch.uint8).numpy()) if flat.numel() else 0
        out[name] = f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)} {crc:08x}"
    return out


def check_fingerprint(model: torch.nn.Module, path: Path) -> None:
    """Frozen tensors recorded in ``path`` must be bit-identical in ``model``."""
    if not path.is_file():
        log.warning("%s missing: cannot verify the frozen weights", path)
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    current = frozen_fingerprint(model)
    for name, value in recorded.items():
        if name in current and current[name] != value:
            raise CheckpointError(
                f"{path}: frozen tensor {name} differs from the one this model was trained with "
                f"({current[name]} vs {value}): a different pretrained dir, model config or seed?")
