"""tools/gpu_check.sh on this CPU: the CUDA parts are skipped, the rest runs the same code the GPU
run will (tiny DeepSpeed bf16 steps for every kind, a 1-layer real-width training step)."""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_gpu_check_runs_on_cpu_with_cuda_parts_skipped(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    res = subprocess.run(["bash", "tools/gpu_check.sh", str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    assert json.loads((tmp_path / "env.json").read_text())["cuda"] is False
    kinds = [json.loads(line) for line in (tmp_path / "kinds.jsonl").read_text().splitlines()]
    assert {(k["kind"], k["regime"]) for k in kinds} == {
        (kind, regime) for kind in ("lora", "independent", "flylora", "zipper-static", "zipper-hard",
                                    "zipper-soft", "mole") for regime in ("chunked", "full")}
    assert all(k["ok"] and k["device"] == "cpu" for k in kinds), kinds
    (step,) = [json.loads(line) for line in (tmp_path / "real_shapes.jsonl").read_text().splitlines()]
    assert step["enc_layers"] == 1 and step["llm_layers"] == 1 and step["tokens_per_s"] > 0
    assert 0.9 <= step["enc_padding_efficiency"] <= 1.0
    assert "real-shape steps skipped" in res.stderr
