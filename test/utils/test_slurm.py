"""zlora.bin.chain --cmd slurm against a fake sbatch on PATH (no cluster): one job array, per-task
logs and completion markers, failures named with their log tail, re-runs resubmit only what failed."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_SBATCH = r"""#!/usr/bin/env bash
# Fake sbatch: records its arguments, runs every array task in order (SLURM_ARRAY_TASK_ID), and
# like `sbatch --wait` exits with the highest task exit status.
echo "$*" >> "$FAKE_LOG"
script="${@: -1}"
range=$(printf '%s\n' "$@" | sed -n 's/^--array=1-\([0-9]*\).*/\1/p')
worst=0
for i in $(seq 1 "$range"); do
  SLURM_ARRAY_TASK_ID=$i bash "$script"; rc=$?
  [ "$rc" -gt "$worst" ] && worst=$rc
done
echo 4242
exit "$worst"
"""


def setup_dirs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d, lang in ((good, "en"), (bad, "xx!")):
        d.mkdir()
        (d / "text").write_text("u1 hello\n")
        (d / "utt2spk").write_text("u1 s1\n")
        (d / "spk2utt").write_text("s1 u1\n")
        (d / "utt2lang").write_text(f"u1 {lang}\n")
        (d / "wav.scp").write_text("u1 /not/read.wav\n")          # --no_audio_check
    return bin_dir, good, bad


def chain(tmp_path, bin_dir, *args):
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "sbatch.log"),
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "zlora.bin.chain", "--cmd", "slurm", "--nj", "2",
                           "--log_dir", str(tmp_path / "log"), "--sbatch_opts", "--partition cpu", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_array_logs_markers_failures_and_resubmission(tmp_path):
    bin_dir, good, bad = setup_dirs(tmp_path)
    cmds = ["zlora.bin.validate_data_dir", str(good), "--no_audio_check", "---",
            "zlora.bin.validate_data_dir", str(bad), "--no_audio_check"]
    res = chain(tmp_path, bin_dir, *cmds)
    assert res.returncode == 1
    assert "2/2 failed: python -m zlora.bin.validate_data_dir" in res.stderr and "last lines of" in res.stderr
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert len(calls) == 1 and "--array=1-2%2" in calls[0] and "--partition cpu" in calls[0] and "--wait" in calls[0]
    log = tmp_path / "log"
    assert (log / "slurm" / "01.done").is_file() and not (log / "slurm" / "02.done").exists()
    assert (log / "01.validate_data_dir.log").is_file() and (log / "02.validate_data_dir.log").is_file()
    # fix the data, re-run: only the failed command is resubmitted
    (bad / "utt2lang").write_text("u1 en\n")
    res = chain(tmp_path, bin_dir, *cmds)
    assert res.returncode == 0, res.stderr
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert len(calls) == 2 and "--array=1-1%2" in calls[1]
    assert "1/2 done earlier, not resubmitted" in res.stderr
    # everything done: nothing to submit; --force submits all
    assert chain(tmp_path, bin_dir, *cmds).returncode == 0
    assert len((tmp_path / "sbatch.log").read_text().splitlines()) == 2
    assert chain(tmp_path, bin_dir, "--force", *cmds).returncode == 0
    assert "--array=1-2%2" in (tmp_path / "sbatch.log").read_text().splitlines()[-1]


def test_slurm_needs_sbatch_and_a_log_dir(tmp_path):
    env = dict(os.environ, PATH="/usr/bin:/bin", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "zlora.bin.chain", "--cmd", "slurm", "--log_dir", str(tmp_path),
                          "zlora.bin.validate_data_dir", str(tmp_path)], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "sbatch is not on PATH" in res.stderr
    res = subprocess.run([sys.executable, "-m", "zlora.bin.chain", "--cmd", "slurm",
                          "zlora.bin.validate_data_dir", str(tmp_path)], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "--cmd slurm needs --log_dir" in res.stderr
