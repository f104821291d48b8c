"""zlora.utils.procs.map_forked: results in call order, work in other processes, errors raised."""
import os

import pytest

from zlora.utils.procs import map_forked


def pid_and_square(x):
    return os.getpid(), x * x


def fail_on_two(x):
    if x == 2:
        raise ValueError(f"bad input {x}")
    return x


def test_results_keep_call_order_and_run_in_workers():
    out = map_forked(pid_and_square, [(k,) for k in range(5)], nj=2)
    assert [sq for _, sq in out] == [0, 1, 4, 9, 16]
    assert os.getpid() not in {pid for pid, _ in out}
    assert {pid for pid, _ in map_forked(pid_and_square, [(1,), (2,)], nj=1)} == {os.getpid()}


def test_a_worker_error_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="bad input 2"):
        map_forked(fail_on_two, [(1,), (2,), (3,)], nj=2)
