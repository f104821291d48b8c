"""Shared entry-point wrapper: turn expected errors into one clear line and a non-zero exit."""
from __future__ import annotations

import sys
from typing import Callable

from zlora.config import ConfigError


class UserError(RuntimeError):
    """An error caused by the user's input (data, config, paths): printed without a traceback."""


def run_main(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    prog = sys.argv[0].rsplit("/", 1)[-1]
    try:
        rc = main(sys.argv[1:] if argv is None else argv)
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rc or 0)
