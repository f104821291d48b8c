"""Smoke test of python -m zlora.bin.bench_loader (tiny sizes): valid JSON lines, storage figures
consistent with their definitions, a start-up that reaches its first batch with the token cache."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench(*args, tmp):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "zlora.bin.bench_loader", *args, "--out", str(tmp)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(ln) for ln in out.stdout.splitlines() if ln.strip()]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the storage benchmark speaks with espeak-ng")
def test_storage_and_read_rates(tmp_path):
    rows = bench("storage", "--utts", "12", "--reps", "1", tmp=tmp_path)
    size = rows[0]
    assert size["bench"] == "loader_storage" and size["utts"] == 12
    assert abs(size["feats_f32_128_mb_per_h"] - 184.3) < 1.0          # 128 x 100 x 4 B x 3600 + headers
    assert 0 < size["flac_shards_mb_per_h"] < size["pcm16_mb_per_h"] < size["feats_f32_128_mb_per_h"]
    reads = rows[1:]
    assert {(r["case"], r["cache"]) for r in reads} == {(c, k) for c in (
        "dumped_feats_random", "flac_files_random", "flac_shards_random", "flac_shards_sequential")
        for k in ("cold", "warm")}
    assert all(r["utts_per_s"] > 0 and r["io_only_mb_per_s"] > 0 for r in reads)


def test_startup_reaches_the_first_batch_and_the_cache_is_used(tmp_path):
    rows = bench("startup", "--utts", "3000", "--seconds", "1", "--workers", "1", "--epoch_walk", tmp=tmp_path)
    runs = [r for r in rows if r["bench"] == "loader_startup"]
    assert [r["token_cache"] for r in runs] == ["cold", "warm"]
    assert all(r["utts"] == 3000 and r["packs"] > 0 and r["startup_s"] > 0 for r in runs)
    assert len(runs[0]["workers_at_first_batch"]) == 1
    walk = runs[1]["epoch_walk_uss_mb"]
    assert [w[0] for w in walk] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert walk[-1][1] - walk[0][1] < 2.0                 # a worker's private memory stays flat
    assert list((tmp_path / "data" / ".tokens").glob("*.npz"))
