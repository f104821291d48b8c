"""Train a Speech-LLM (paper §IV-F): stage 1 (encoder + projector + LLM-LoRA) or stage 2 (encoder
adapters + projector + LLM-LoRA, initialised from stage 1).

    python -m zlora.bin.train --config conf/train_stage1.yaml [--optim.max_steps 100 ...]
    python -m zlora.bin.torchrun --nproc_per_node 4 -m zlora.bin.train --config conf/x.yaml
    python -m zlora.bin.train --config conf/x.yaml --resume true     # continue from the latest checkpoint

Writes EXP/config.yaml (resolved), EXP/train.log, EXP/metrics.jsonl, EXP/tensorboard/,
EXP/checkpoints/step-N/ + latest, and EXP/final/ (see zlora.train.checkpoint). A bad input ends
every rank with one line and exit code 2; plain ``torchrun`` works too, but follows that line
with its agent's ChildFailedError traceback and exits 1 (zlora.bin.torchrun says why).
"""
from __future__ import annotations

from zlora.models import assembly
from zlora.train.checkpoint import check_weights_record, load_tensors
from zlora.train.config import check_config, load_train_config
from zlora.train.data import build_train_data, build_valid_loader
from zlora.train.distill import build_loss_extensions
from zlora.train.distributed import cleanup, init_distributed
from zlora.train.engine import build_engine, compute_dtype
from zlora.train.experiment import prepare_exp_dir
from zlora.train.sanity import check_packing
from zlora.train.trained import build_seed
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
        init = assembly.resolve_init_from(cfg.init_from) if cfg.stage == 2 else None
        model = assembly.build(cfg.model, cfg.languages, build_seed(cfg, init))
        if init is not None:                # stage 2 (§IV-F): the stage-1 model plus adapters
            assembly.load_stage1(model, init)
            assembly.insert_adapters(model, cfg.adapter)
        assembly.set_trainable(model, cfg.stage)
        log.info("model (stage %d):\n%s", cfg.stage, model.parameter_table())
        frozen = assembly.frozen_fingerprint(model) if dist.is_main else None
        train_data = build_train_data(cfg, model, dist)
        valid_loader = build_valid_loader(cfg, model, dist)
        if resume_from is not None:         # weights before the engine: ZeRO copies them at init
            check_weights_record(resume_from / "model.safetensors", cfg, "this run's config")   # e.g. the tokenizer
            model.load_trainable_state_dict(load_tensors(resume_from / "model.safetensors"))
        extensions = build_loss_extensions(cfg, model, dist.device, compute_dtype(cfg.engine, dist.device))
        engine = build_engine(cfg, model, dist, extensions)
        check_packing(engine.model.llm, dist.device, getattr(engine, "autocast", False))
        trainer = Trainer(cfg, engine, dist, train_data, valid_loader, frozen)
        if resume_from is not None:
            trainer.restore(resume_from)
        trainer.fit()
        trainer.finish()                    # extensions' end of training (MoLE's LID phase)
        trainer.save_final()
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    run_main(main)
