"""Run several zlora commands, in order or a few at a time, paying Python's imports once.

    python -m zlora.bin.chain zlora.bin.train --config a.yaml --- zlora.bin.train --config b.yaml
    python -m zlora.bin.chain --nj 2 --log_dir exp/logs MODULE ARGS... --- MODULE ARGS... --- ...

Each command is a module of this package and its arguments, exactly what ``python -m MODULE
ARGS...`` would take; ``---`` separates the commands. They start in the order given. The first
that fails stops the chain: no later command starts, those already running finish, and the chain
exits with the failed command's status (as ``set -e`` would in a recipe, so a later stage never
starts on a missing input).

``--cmd slurm`` submits the commands as one SLURM job array instead (``--nj`` tasks at a time,
``--sbatch_opts`` passed to sbatch; each task's log in ``--log_dir`` and a completion marker, and a
re-run resubmits only the failed or missing commands: zlora.utils.slurm).

``--nj N`` runs up to N commands at once, each with 1/N of the torch threads (``--threads``), and
writes each command's output to ``--log_dir``/NN.MODULE.log, as Kaldi's ``run.pl`` does; a failed
command's log tail is printed. Only independent commands belong in one such chain. Why: on this
project's 2-core CPU one thread runs a mini12 training step at 0.63x the speed of two threads
(stage 1: 0.66 vs 0.42 s; stage 2: 0.89 vs 0.56 s), so two one-thread runs side by side finish
~1.25x sooner than the same runs one after the other.

Why one process: every ``python -m`` pays its imports again, ~2.7 s for torch and ~7.5 s for torch
with ``transformers``' Whisper and Qwen3 models here, more than a mini12 decoding job costs itself.
The parent imports those modules once (``PRELOAD``, plus ``--preload``) and forks one child per
command, so each command starts warm yet runs in its own process: its own ``sys.argv``, logging,
threads, memory and exit status, as if started from the shell. The parent never runs a tensor
operation, so no thread pool exists at the fork. ``--no_fork`` (and platforms without
``os.fork``) start each command with ``python -m`` instead: the same results, without the saving.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import runpy
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from zlora.utils.cli import ArgumentParser, UserError, canonical_option, run_main
from zlora.utils.log import get_logger, setup_logging

log = get_logger("chain")

SEPARATOR = "---"
VALUE_OPTIONS = ("--nj", "--threads", "--log_dir", "--preload", "--cmd", "--sbatch_opts")
# What most zlora commands import; a module that fails to import here is left to the child,
# which then reports the error itself.
PRELOAD = ("numpy", "torch", "kaldiio", "sentencepiece", "safetensors.torch", "yaml", "tqdm",
           "transformers.models.whisper.modeling_whisper", "transformers.models.qwen3.modeling_qwen3",
           "zlora.models", "zlora.train.trainer", "zlora.data.dataset")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[list[str]]]:
    head = []                 # the chain's own options: everything before the first command
    while argv and argv[0].startswith("-") and argv[0] != SEPARATOR:
        head.append(argv.pop(0))
        if canonical_option(head[-1]) in VALUE_OPTIONS and argv:     # --log-dir too
            head.append(argv.pop(0))
    p = ArgumentParser("chain", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, default=1, help="commands running at once (default 1: in order)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per command when --nj > 1 (default: cores / nj)")
    p.add_argument("--log_dir", default=None,
                   help="each command's output goes to LOG_DIR/NN.MODULE.log (needed with --nj > 1)")
    p.add_argument("--no_fork", action="store_true", help="start every command with python -m")
    p.add_argument("--preload", default="", help="comma-separated modules to import once, besides "
                   f"the defaults ({', '.join(PRELOAD)})")
    p.add_argument("--cmd", choices=("local", "slurm"), default="local",
                   help="local: run here (forked); slurm: one sbatch job array, --nj tasks at a time, "
                        "each with its log and completion marker (zlora.utils.slurm)")
    p.add_argument("--sbatch_opts", default="", help="--cmd slurm: extra sbatch options, one string "
                   "(e.g. \"--partition gpu --gres gpu:1 --time 4:00:00\")")
    p.add_argument("--force", action="store_true",
                   help="--cmd slurm: resubmit commands that finished earlier too")
    args = p.parse_args(head)
    if args.nj < 1 or (args.threads is not None and args.threads < 1):
        raise UserError(f"--nj and --threads must be >= 1, got {args.nj} and {args.threads}")
    if args.nj > 1 and not args.log_dir:
        raise UserError("--nj > 1 needs --log_dir: the outputs of commands running at once would mix")
    if args.cmd == "slurm" and not args.log_dir:
        raise UserError("--cmd slurm needs --log_dir: each job writes its log and marker there")
    return args, split_commands(argv)


def split_commands(argv: list[str]) -> list[list[str]]:
    """['m1', 'a', '---', 'm2', 'b'] -> [['m1', 'a'], ['m2', 'b']]; empty commands are dropped, so a
    recipe may start every command with the separator."""
    commands, cur = [], []
    for a in argv + [SEPARATOR]:
        if a == SEPARATOR:
            if cur:
                commands.append(cur)
            cur = []
        else:
            cur.append(a)
    for cmd in commands:
        if not cmd[0].startswith("zlora."):
            raise UserError(f"{shlex.join(cmd)}: a command starts with a zlora module "
                            f"(e.g. zlora.bin.train), commands are separated by {SEPARATOR}")
    return commands


@dataclass
class Job:
    index: int
    cmd: list[str]
    log_file: Path | None
    t0: float = field(default_factory=time.perf_counter)
    pid: int | None = None                      # forked child
    proc: subprocess.Popen | None = None        # --no_fork

    def poll(self) -> int | None:
        """Exit status (128 + N if killed by signal N), or None while it runs."""
        if self.proc is not None:
            return self.proc.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main(argv: list[str]) -> int:
    args, commands = parse_args(list(argv))
    if not commands:
        raise UserError(f"no command given (MODULE ARGS... [{SEPARATOR} MODULE ARGS...])")
    setup_logging()
    for cmd in commands:              # every module exists, before anything runs
        if importlib.util.find_spec(cmd[0]) is None:
            raise UserError(f"{shlex.join(cmd)}: no module {cmd[0]}")
    if args.cmd == "slurm":
        from zlora.utils import slurm

        return slurm.run(commands, args.log_dir, args.nj, args.sbatch_opts, args.force)
    fork = hasattr(os, "fork") and not args.no_fork
    if fork:
        preload(PRELOAD + tuple(m for m in args.preload.split(",") if m))
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    at_once = min(args.nj, len(commands))
    threads = None if at_once == 1 else args.threads or max(1, cpu_threads() // at_once)
    return schedule(commands, args, fork, threads)


def schedule(commands: list[list[str]], args: argparse.Namespace, fork: bool, threads: int | None) -> int:
    """Start the commands in order, at most --nj at a time; the first failure stops new starts."""
    n, pending, running, failed = len(commands), list(enumerate(commands, 1)), [], 0
    while pending or running:
        try:
            while pending and len(running) < args.nj and not failed:
                i, cmd = pending.pop(0)
                running.append(start(i, cmd, n, args, fork, threads))
            for job in list(running):
                rc = job.poll()
                if rc is None:
                    continue
                running.remove(job)
                if rc == 0:
                    log.info("%d/%d done in %.1f s", job.index, n, time.perf_counter() - job.t0)
                else:                # every failure is reported; the first one's status is returned
                    report_failure(job, rc, n, len(pending))
                    failed = failed or rc
            if failed and not running:
                break
            time.sleep(0.05)
        except KeyboardInterrupt:    # Ctrl-C reaches the children too; let them finish
            failed, pending = failed or 130, []
    return failed


def start(i: int, cmd: list[str], n: int, args: argparse.Namespace, fork: bool, threads: int | None) -> Job:
    log_file = Path(args.log_dir) / f"{i:02d}.{cmd[0].rsplit('.', 1)[-1]}.log" if args.log_dir else None
    log.info("%d/%d: python -m %s%s", i, n, shlex.join(cmd), f"  (log: {log_file})" if log_file else "")
    job = Job(i, cmd, log_file)
    if fork:
        sys.stdout.flush()
        sys.stderr.flush()
        job.pid = os.fork()
        if job.pid == 0:
            os._exit(child(cmd, log_file, threads))
    else:
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        out = open(log_file, "w", encoding="utf-8") if log_file else None   # noqa: SIM115 -- the child owns it
        job.proc = subprocess.Popen([sys.executable, "-m", *cmd], env=env, stdout=out,
                                    stderr=subprocess.STDOUT if out else None)
        if out:
            out.close()
    return job


def report_failure(job: Job, rc: int, n: int, not_started: int) -> None:
    tail = ""
    if job.log_file and job.log_file.is_file():
        lines = re.split(r"[\r\n]+", job.log_file.read_text(encoding="utf-8", errors="replace").strip())
        tail = "\n".join(lines[-20:]) + "\n"
        print(f"--- last lines of {job.log_file} ---\n{tail}---", file=sys.stderr)
    log.error("%d/%d failed (exit status %d): python -m %s%s%s", job.index, n, rc, shlex.join(job.cmd),
              f"; see {job.log_file}" if job.log_file else "",
              f"; {not_started} later command(s) not run" if not_started else "")


def cpu_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def preload(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:     # noqa: BLE001 -- the child imports it again and reports the error
            pass


def child(cmd: list[str], log_file: Path | None, threads: int | None) -> int:
    """In the forked child: run the module as __main__ with its own argv (output to ``log_file``
    if given, ``threads`` torch threads if given); returns the exit status for os._exit."""
    code = 0
    if log_file is not None:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    sys.argv = list(cmd)
    try:
        runpy.run_module(cmd[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:     # noqa: BLE001 -- what `python -m` would print
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


if __name__ == "__main__":
    run_main(main)
