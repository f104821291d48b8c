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
