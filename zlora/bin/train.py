"""Train a Speech-LLM (paper §IV-F): stage 1 (encoder + projector + LLM-LoRA) or stage 2 (encoder
adapters + projector + LLM-LoRA, initialised from stage 1).

    python -m zlora.bin.train --config conf/train_stage1.yaml [--optim.max_steps 100 ...]
    torchrun --nproc_per_node 4 -m zlora.bin.train --config conf/x.yaml
    python -m zlora.bin.train --config conf/x.yaml --resume true     # continue from the latest checkpoint

Writes EXP/config.yaml (resolved), EXP/train.log, EXP/metrics.jsonl, EXP/tensorboard/,
EXP/checkpoints/step-N/ + latest, and EXP/final/ (see zlora.train.checkpoint).
"""
from __future__ import annotations

from zlora.train import checkpoint as ckpt_io
from zlora.train.config import check_config, load_train_config
from zlora.train.data import build_train_data, build_valid_loader
from zlora.train.distributed import cleanup, init_distributed
from zlora.train.engine import build_engine
from zlora.train.experiment import prepare_exp_dir
from zlora.train.sanity import check_packing
from zlora.train.trainer import Trainer
from zlora.utils.cli import run_main
from zlora.utils.log import get_logger

log = get_logger("train")


def main(argv: list[str]) -> int:
    cfg = load_train_config(argv)
    check_config(cfg)                       # unknown kinds/languages, missing files: before anything runs
    dist = init_distributed(cfg.engine.backend, cfg.engine.timeout_s)
    try:
        resume_from = prepare_exp_dir(cfg, dist)
        model = ckpt_io.build_model(cfg)
        log.info("model (stage %d):\n%s", cfg.stage, model.parameter_table())
        frozen = ckpt_io.frozen_fingerprint(model) if dist.is_main else None
        train_data = build_train_data(cfg, model, dist)
        valid_loader = build_valid_loader(cfg, model, dist)
        if resume_from is not None:         # weights before the engine: ZeRO copies them at init
            model.load_trainable_state_dict(ckpt_io.load_tensors(resume_from / "model.safetensors"))
        engine = build_engine(cfg, model, dist)
        check_packing(engine.model.llm, dist.device, getattr(engine, "autocast", False))
        trainer = Trainer(cfg, engine, dist, train_data, valid_loader, frozen)
        if resume_from is not None:
            trainer.restore(resume_from)
        trainer.fit()
        trainer.save_final()
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    run_main(main)
