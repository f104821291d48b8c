"""Fault injection for the reliability tests, driven by environment variables (never set in
normal runs, so they cannot leak into a resolved config):

- ``ZLORA_DEBUG_KILL=<point>:<step>``: SIGKILL this process when it reaches ``point`` at optimizer
  step ``step``. Points: ``after_step`` (the step and any checkpoint due at it are done) and
  ``checkpoint_write`` (inside the checkpoint of that step, after its first file is written and
  before the directory is renamed into place).
"""
from __future__ import annotations

import os
import signal


def _parse(var: str) -> tuple[str, int] | None:
    value = os.environ.get(var)
    if not value:
        return None
    name, _, step = value.rpartition(":")
    return name, int(step)


def maybe_kill(point: str, step: int) -> None:
    spec = _parse("ZLORA_DEBUG_KILL")
    if spec is not None and spec == (point, step):
        os.kill(os.getpid(), signal.SIGKILL)

