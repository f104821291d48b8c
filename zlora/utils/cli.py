"""Shared entry-point helpers: one clear line and a non-zero exit for expected errors, and the
argparse parser every ``zlora.bin`` verb uses, so options behave alike across tools."""
from __future__ import annotations

import argparse
import errno
import functools
import sys
from typing import Callable, Sequence

from zlora.config import ConfigError


class UserError(RuntimeError):
    """An error caused by the user's input (data, config, paths): printed without a traceback."""


def run_main(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run a verb's ``main``; an input problem (ConfigError, UserError) or the file system refusing
    (a missing file, a read-only dir, a full disk: OSError) ends with one line and exit code 2."""
    prog = sys.argv[0].rsplit("/", 1)[-1]
    try:
        rc = main(sys.argv[1:] if argv is None else argv)
    except (ConfigError, UserError, OSError) as e:
        message = os_error_message(e) if isinstance(e, OSError) else str(e)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rc or 0)


# What to do about the file system errors a user can fix.
OS_ERROR_HINTS = {
    errno.EACCES: "check the permissions, or choose another output path",
    errno.EPERM: "check the permissions, or choose another output path",
    errno.EROFS: "the file system is read-only: choose another output path",
    errno.ENOSPC: "the disk is full: free some space and rerun (finished work is kept)",
    errno.EDQUOT: "the disk quota is exhausted: free some space and rerun (finished work is kept)",
}


def os_error_message(e: OSError) -> str:
    """``path: reason; what to do`` for an OSError (str(e) when it names no file)."""
    if e.filename is None or e.strerror is None:
        return str(e)
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    hint = OS_ERROR_HINTS.get(e.errno)
    return f"{where}: {e.strerror}" + (f"; {hint}" if hint else "")


def canonical_option(arg: str) -> str:
    """``--no-audio-check`` -> ``--no_audio_check``: '-' and '_' in a long option name are the same
    (as for typed-config verbs, see zlora.config.parse_overrides)."""
    return "--" + arg[2:].replace("-", "_") if arg.startswith("--") else arg


class ArgumentParser(argparse.ArgumentParser):
    """argparse with zlora's conventions, for every argparse verb of ``zlora.bin``.

    - ``prog`` is ``python -m zlora.bin.VERB`` unless given (the Kaldi-style data-dir tools name
      their ``utils/*.sh`` wrapper instead);
    - '-' and '_' in long option names are interchangeable: ``--no-audio-check`` is
      ``--no_audio_check``, as ``--max-tokens`` is ``--max_tokens`` for typed-config verbs;
    - :meth:`add_alias` keeps a renamed option's old spelling working, hidden from ``--help``,
      with one deprecation line on stderr. The rewrite happens on argv before argparse parses it,
      so a required option given by its old name counts as given.
    """

    def __init__(self, verb: str, **kwargs):
        kwargs.setdefault("prog", f"python -m zlora.bin.{verb}")
        super().__init__(**kwargs)
        self.verb = verb
        self.aliases: dict[str, str] = {}        # canonical old spelling -> new option string

    def add_alias(self, old: str, new: str) -> None:
        """Accept deprecated option ``old`` as ``new`` (an option already added to this parser)."""
        if new not in self._option_string_actions:
            raise ValueError(f"{self.prog}: alias {old} names an unknown option {new}")
        self.aliases[canonical_option(old)] = new

    def add_subparsers(self, **kwargs):
        # Sub-commands are parsers of this class too (with this verb, for the deprecation line).
        kwargs.setdefault("parser_class", functools.partial(type(self), self.verb))
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self.rewrite(args), namespace)

    def rewrite(self, args: list[str]) -> list[str]:
        """Deprecated aliases -> their new names (warning once each); ``-``/``_`` spellings -> the
        registered one. Stops at ``--`` (what follows is positional)."""
        known = {canonical_option(s): s for s in self._option_string_actions if s.startswith("--")}
        out, warned = [], set()
        for i, arg in enumerate(args):
            if arg == "--":
                return out + args[i:]
            name, eq, value = arg.partition("=")
            key = canonical_option(name) if name.startswith("--") else None
            if key in self.aliases:
                new = self.aliases[key]
                if key not in warned:
                    print(f"zlora.bin.{self.verb}: {name} is deprecated; use {new}", file=sys.stderr)
                    warned.add(key)
                arg = new + eq + value
            elif key in known:
                arg = known[key] + eq + value
            out.append(arg)
        return out
