"""egs/mini12/lre1 stage 0: links asr1's outputs (absolute, idempotent), refuses to shadow a real
dir, and names what is missing when asr1 has not run. Fast: no training, only the links."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINKED = ["data", "dump", "exp/stage1", "exp/stage2", "exp/lid"]


@pytest.fixture
def recipes(tmp_path):
    root = tmp_path / "mini 12"                       # a space in the path, on purpose
    lre1 = root / "lre1"
    shutil.copytree(REPO / "egs/mini12/lre1", lre1, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == REPO / "egs/mini12/lre1"
                                             and n in ("data", "dump", "exp", "utils")])
    (lre1 / "utils").symlink_to(REPO / "utils")
    asr1 = root / "asr1"
    for p in LINKED:
        (asr1 / p).mkdir(parents=True)
    return asr1, lre1


def stage0(lre1: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZLORA_ROOT=str(REPO))
    return subprocess.run(["bash", "run.sh", "--stage", "0", "--stop_stage", "0", *args], cwd=lre1, env=env,
                          capture_output=True, text=True, timeout=60)


def test_links_asr1s_outputs_and_reruns(recipes):
    asr1, lre1 = recipes
    for _ in range(2):                                  # a rerun replaces the links in place
        r = stage0(lre1)
        assert r.returncode == 0, r.stderr
        for p in LINKED:
            assert (lre1 / p).is_symlink() and os.readlink(lre1 / p) == str(asr1.resolve() / p), p
    assert not (asr1 / "data" / "data").exists()       # never a link inside the target


def test_missing_asr1_output_or_a_real_dir_fails(recipes):
    asr1, lre1 = recipes
    shutil.rmtree(asr1 / "exp" / "lid")
    r = stage0(lre1)
    assert r.returncode != 0 and "../asr1/exp/lid is missing: run ../asr1/run.sh first" in r.stderr
    assert not any((lre1 / p).is_symlink() for p in LINKED)      # nothing half-linked
    (asr1 / "exp" / "lid").mkdir()
    (lre1 / "dump").mkdir()
    r = stage0(lre1)
    assert r.returncode != 0 and "dump exists and is not a link" in r.stderr
    assert not (lre1 / "dump").is_symlink()
    r = stage0(lre1, "--asr1", str(lre1.parent / "nowhere"))
    assert r.returncode != 0
