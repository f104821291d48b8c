"""Run one function over several argument tuples in forked worker processes."""
from __future__ import annotations

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
    with ProcessPoolExecutor(min(nj, len(calls)), mp_context=get_context(method)) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]
