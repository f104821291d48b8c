"""A trained model back from its exp dir, through the same assembly steps as training
(zlora.models.assembly), for decoding, KD teachers and analysis tools.

    from zlora.train.trained import load_model_for_inference
    model, cfg = load_model_for_inference("exp/zipper_soft")
"""
from __future__ import annotations

from pathlib import Path

from zlora.models import assembly
from zlora.train.checkpoint import check_weights_record
from zlora.train.config import TrainConfig, read_train_config
from zlora.utils.io import CheckpointError, load_tensors


def assemble(cfg: TrainConfig):
    """The untrained-but-initialised model of a training config: build (seeded as stage 1 was),
    stage-1 weights, adapters, trainable policy -- what ``zlora.bin.train`` does before training."""
    init = assembly.resolve_init_from(cfg.init_from) if cfg.stage == 2 else None
    model = assembly.build(cfg.model, cfg.languages, build_seed(cfg, init))
    if init is not None:
        assembly.load_stage1(model, init)
        assembly.insert_adapters(model, cfg.adapter)
    assembly.set_trainable(model, cfg.stage)
    return model


def build_seed(cfg: TrainConfig, init: "assembly.InitSource | None") -> int:
    """The seed the frozen weights were first built with: stage 1's for a stage-2 run."""
    return read_train_config(init.config).seed if init is not None else cfg.seed


def load_model_for_inference(exp_dir: str | Path, checkpoint: str | Path | None = None):
    """(SpeechLLM in eval mode, TrainConfig) from EXP/final (or a checkpoint dir of the run)."""
    exp_dir = Path(exp_dir)
    src = Path(checkpoint) if checkpoint is not None else exp_dir / assembly.FINAL
    cfg_path = src / "config.yaml" if (src / "config.yaml").is_file() else exp_dir / "config.yaml"
    if not (src / "model.safetensors").is_file():
        raise CheckpointError(f"{src / 'model.safetensors'} does not exist: has training of {exp_dir} "
                              "finished?")
    cfg = read_train_config(cfg_path)
    check_weights_record(src / "model.safetensors", cfg, cfg_path)   # languages, ranks, tokenizer
    model = assemble(cfg)
    try:
        model.load_trainable_state_dict(load_tensors(src / "model.safetensors"), strict=True)
    except ValueError as e:
        raise CheckpointError(f"{src / 'model.safetensors'}: does not fit the model of {cfg_path}: {e}") from e
    assembly.check_fingerprint(model, src / "frozen.json")
    model.eval()
    return model, cfg
