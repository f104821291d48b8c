"""The experiment dir at start-up: refuse to clobber a run, check a resumed run's config, write the
resolved config, set up EXP/train.log."""
from __future__ import annotations

from pathlib import Path

from zlora.config import read_yaml, save_config, to_dict
from zlora.train import checkpoint as ckpt_io
from zlora.train.config import TrainConfig
from zlora.train.distributed import DistInfo, barrier
from zlora.utils.cli import UserError
from zlora.utils.log import get_logger, setup_logging

log = get_logger("train")

# Keys a resumed run may change: they do not alter what the next steps compute (max_steps and
# epochs do change the LR schedule; the trainer warns about that).
RESUME_MAY_CHANGE = ("resume", "optim.max_steps", "optim.epochs", "checkpoint.", "log_every",
                     "progress_bar", "tensorboard", "debug.", "engine.timeout_s", "data.num_workers",
                     "data.valid", "data.valid_feats", "data.token_cache")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_resume_config(cfg: TrainConfig, saved: Path) -> None:
    changed = config_changes(read_yaml(saved), to_dict(cfg))
    blocking = [k for k in changed if not any(k == p or k.startswith(p) for p in RESUME_MAY_CHANGE)]
    if blocking:
        raise UserError(f"--resume: the config differs from {saved} in {', '.join(blocking)}; a resumed "
                        "run must train the same model on the same data (start a new exp_dir instead)")
    allowed = [k for k in changed if k != "resume"]
    if allowed:
        log.warning("--resume: config changed in %s", ", ".join(allowed))


def prepare_exp_dir(cfg: TrainConfig, dist: DistInfo) -> Path | None:
    """Returns the checkpoint to resume from (None: start fresh). Collective."""
    exp = Path(cfg.exp_dir)
    if dist.is_main:
        exp.mkdir(parents=True, exist_ok=True)
    barrier()
    setup_logging(exp / "train.log")
    latest = ckpt_io.read_latest(exp)
    if not cfg.resume and (latest is not None or (exp / ckpt_io.FINAL).exists()):
        raise UserError(f"{exp} already holds a run ({latest or exp / ckpt_io.FINAL}); pass --resume true "
                        "to continue it, or choose another exp_dir")
    if cfg.resume and latest is None:
        log.warning("--resume: no checkpoint in %s; starting from scratch", ckpt_io.checkpoint_root(exp))
    if latest is not None and (exp / "config.yaml").is_file():
        check_resume_config(cfg, exp / "config.yaml")     # every rank: all fail together
    if dist.is_main:
        ckpt_io.remove_partials(exp)
        save_config(cfg, exp / "config.yaml")
    barrier()
    return latest
