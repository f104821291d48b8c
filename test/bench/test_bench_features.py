"""Smoke test of python -m zlora.bin.bench_features (quick arguments): valid JSON lines whose outputs
agree with WhisperFeatureExtractor within 1e-4 (the exactness test is test/data/test_features.py)."""
import json
import subprocess
import sys

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_features_quick():
    out = subprocess.run([sys.executable, "-m", "zlora.bin.bench_features", "--seconds", "1", "--n_mels", "80",
                          "--reps", "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.strip()]
    assert len(rows) == 1 and rows[0]["bench"] == "features" and rows[0]["frames"] == 100
    assert rows[0]["max_abs_diff"] < 1e-4 and rows[0]["ours_ms"] > 0 and rows[0]["hf_ms"] > 0
