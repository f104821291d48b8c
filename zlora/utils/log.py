"""Logging with timestamps; only rank 0 prints when distributed."""
from __future__ import annotations

import logging
import os
import sys


def get_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Configure the root ``zlora`` logger: stderr (rank 0 only) plus an optional file."""
    logger = logging.getLogger("zlora")
    logger.setLevel(level)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    if get_rank() == 0:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        logger.addHandler(sh)
        if log_file is not None:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            fh = logging.FileHandler(log_file, encoding="utf-8")
            fh.setFormatter(fmt)
            logger.addHandler(fh)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"zlora.{name}" if not name.startswith("zlora") else name)
