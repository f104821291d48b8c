"""Helpers for the reliability tests: run a CLI as a user would and capture what they see."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable


def run_cli(main, argv: list[str]) -> tuple[int, str]:
    """``run_main(main, argv)`` in this process, as ``python -m zlora.bin.<verb>`` runs it.

    Returns (exit code, everything written to stderr: log lines and the one-line error).
    """
    from zlora.utils.cli import run_main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            run_main(main, [str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, err.getvalue()


def error_line(stderr: str) -> str:
    """The ``prog: error: ...`` line run_main prints (the last one)."""
    lines = [l for l in stderr.splitlines() if ": error: " in l]
    assert lines, f"no error line in:\n{stderr}"
    return lines[-1]


def run_module(module: str, *args, timeout: float = 120, cwd=None, **env_extra) -> subprocess.CompletedProcess:
    """``python -m <module> args`` in a subprocess (the real exit code and stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", **env_extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ZLORA_DEBUG_KILL"):
        if k not in env_extra:
            env.pop(k, None)
    return subprocess.run([PY, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd or REPO)


def decode_inprocess(monkeypatch, args) -> tuple[int, str]:
    """``zlora.bin.decode`` through run_main, its parts decoded in this process (no spawn)."""
    import zlora.bin.decode as decode_cli

    with monkeypatch.context() as m:
        m.setattr(decode_cli, "run_parts", lambda cfg, parts: [decode_cli.decode_part(cfg, p) for p in parts])
        return run_cli(decode_cli.main, [str(a) for a in args])


def stage2_config(trained, tmp_path, name, **adapter) -> dict:
    """A stage-2 config dict on top of the session's stage-1 run."""
    import copy

    exp1, cfg = trained
    return {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / name), "stage": 2, "init_from": str(exp1),
            "adapter": {"kind": "lora", "rank": 2, "alpha": 4.0, **adapter}}


def stage2_final(trained, tmp_path, name, **adapter) -> Path:
    """EXP/final of an (untrained) stage-2 model: what training would leave, without the steps."""
    from train_testlib import write_config

    from zlora.models.assembly import frozen_fingerprint
    from zlora.train import checkpoint as ck
    from zlora.train.config import load_train_config
    from zlora.train.trained import assemble

    cfg = load_train_config(["--config", str(write_config(tmp_path / f"{name}.yaml",
                                                          stage2_config(trained, tmp_path, name, **adapter)))])
    model = assemble(cfg)
    ck.save_final(cfg.exp_dir, model, cfg, {"step": 0}, frozen_fingerprint(model))
    return tmp_path / name


def rewrite_tensors(path, change) -> None:
    """Apply ``change(dict of tensors)`` to a safetensors file in place, keeping its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=meta)
