"""Shared helper of the benchmark smoke tests: run a bench CLI with --quick in a fresh process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run_quick(module: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]      # every line must be one JSON object


@pytest.fixture
def run_quick():
    return _run_quick
