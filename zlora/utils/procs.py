"""Worker processes: run one function over several argument tuples in forked workers; tie a
worker's life to the process that started it."""
from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from typing import Any, Callable


def map_forked(fn: Callable[..., Any], calls: list[tuple], nj: int) -> list:
    """``[fn(*args) for args in calls]``, in up to ``nj`` worker processes; results in call order,
    and a worker's exception is raised here. nj == 1 (or a single call) runs in this process.

    Workers are forked, as torch's DataLoader workers are: spawn would re-import torch in each,
    seconds of start-up per worker on a small machine (spawn only where fork does not exist). Fork
    before this process runs tensor operations: a forked OpenMP pool is not safe to reuse."""
    if nj <= 1 or len(calls) <= 1:
        return [fn(*args) for args in calls]
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(min(nj, len(calls)), mp_context=get_context(method),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the process that started it dies (PR_SET_PDEATHSIG),
    so that a killed command leaves no worker running; elsewhere a no-op. If ``parent`` is already
    gone (it died before this call), exit now."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)        # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def run_worker(parent: int, target: Callable, *args) -> None:
    """A worker process's entry point: tied to ``parent`` (:func:`die_with_parent`), then ``target``."""
    die_with_parent(parent)
    target(*args)
