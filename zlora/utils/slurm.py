"""Independent zlora commands as one SLURM job array (``python -m zlora.bin.chain --cmd slurm``).

Plain ``sbatch`` with ``--array`` and ``--wait`` -- no scheduler of our own, no extra dependency.
Each command becomes a task script that runs ``python -m MODULE ARGS...`` in the submitting
directory and environment, writes its output to ``LOG_DIR/NN.MODULE.log`` (as the local backend
does) and, only when the command exits 0, a completion marker ``LOG_DIR/slurm/NN.done`` holding a
hash of the command line. ``sbatch --wait`` blocks until every task has ended; then a task without
its marker has failed and is reported by name with its log tail. A re-run submits only the commands
whose marker is missing or belongs to another command line (``--force`` submits all): the commands
that had finished are not repeated, and each zlora command checks its own inputs anyway.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger("chain")


def command_key(cmd: list[str]) -> str:
    """What identifies a command's completion: its module, arguments and working directory."""
    return hashlib.sha256(f"{os.getcwd()}\0{shlex.join(cmd)}".encode()).hexdigest()


def task_script(cmd: list[str], log_file: Path, marker: Path, key: str) -> str:
    """bash for one task: run the command, then (on success only) write its marker atomically."""
    env = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(os.environ.items())
                  if k in ("PYTHONPATH", "OMP_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PATH"))
    tmp = marker.with_name(marker.name + ".tmp")
    return (f"#!/usr/bin/env bash\nset -uo pipefail\ncd {shlex.quote(os.getcwd())}\n{env}"
            f"{shlex.quote(sys.executable)} -m {shlex.join(cmd)} > {shlex.quote(str(log_file))} 2>&1 || exit $?\n"
            f"printf '%s\\n' {key} > {shlex.quote(str(tmp))} && mv {shlex.quote(str(tmp))} {shlex.quote(str(marker))}\n")


def run(commands: list[list[str]], log_dir: str, nj: int, sbatch_opts: str = "", force: bool = False) -> int:
    """Submit ``commands`` as one array (at most ``nj`` tasks at once), wait, report; returns 0 or
    the exit status of the first failed command's task (1 if it left none)."""
    root = Path(log_dir) / "slurm"
    root.mkdir(parents=True, exist_ok=True)
    todo = []
    for i, cmd in enumerate(commands, 1):
        key, marker = command_key(cmd), root / f"{i:02d}.done"
        if not force and marker.is_file() and marker.read_text().strip() == key:
            log.info("%d/%d done earlier, not resubmitted: python -m %s", i, len(commands), shlex.join(cmd))
            continue
        marker.unlink(missing_ok=True)
        log_file = Path(log_dir) / f"{i:02d}.{cmd[0].rsplit('.', 1)[-1]}.log"
        atomic_write_text(root / f"{i:02d}.sh", task_script(cmd, log_file.resolve(), marker.resolve(), key))
        todo.append((i, cmd, marker, log_file))
    if not todo:
        return 0
    submit(root, [t[0] for t in todo], nj, sbatch_opts)
    failed = [t for t in todo if not t[2].is_file()]
    for i, cmd, _, log_file in failed:
        report(i, len(commands), cmd, log_file)
    return 1 if failed else 0


def submit(root: Path, indices: list[int], nj: int, sbatch_opts: str) -> None:
    """One ``sbatch --wait --array`` over the task scripts ``indices`` (array ids map through
    tasks.txt, so a re-run's array is dense: 1..M)."""
    atomic_write_text(root / "tasks.txt", "".join(f"{(root / f'{i:02d}.sh').resolve()}\n" for i in indices))
    array = root / "array.sh"
    atomic_write_text(array, "#!/usr/bin/env bash\n"
                             f'exec bash "$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(str((root / "tasks.txt").resolve()))})"\n')
    cmd = ["sbatch", "--parsable", "--wait", f"--array=1-{len(indices)}%{nj}", "--job-name=zlora",
           f"--output={root.resolve()}/array-%a.out", *shlex.split(sbatch_opts), str(array.resolve())]
    log.info("submitting %d task(s): %s", len(indices), shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise UserError("--cmd slurm: sbatch is not on PATH (run on a SLURM login node, or use --cmd local)") from e
    if proc.returncode and "error" in proc.stderr.lower() and not (root / "array-1.out").exists():
        raise UserError(f"--cmd slurm: sbatch failed: {proc.stderr.strip()[:300]}")


def report(i: int, n: int, cmd: list[str], log_file: Path) -> None:
    tail = ""
    if log_file.is_file():
        tail = "\n".join(log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-20:])
        print(f"--- last lines of {log_file} ---\n{tail}\n---", file=sys.stderr)
    log.error("%d/%d failed: python -m %s; see %s (re-run to resubmit only the failed and missing jobs)",
              i, n, shlex.join(cmd), log_file)
