"""``--help`` of typed-config verbs: every key of the config dataclass, with type, default and meaning.

Keys are listed with their dotted names (``optim.lr``, ``model.encoder.chunked``), exactly as they
are given on the command line (``--optim.lr 1e-4``) or nested in the YAML file. The meaning of a
key is read from the dataclass source, so it cannot drift from the code: the comment lines right
above the field, the trailing ``# comment`` on its line (with the comment lines that continue it,
indented deeper), and a bullet of the class docstring that names it (``- ``key``: ...``).
"""
from __future__ import annotations

import ast
import dataclasses
import fnmatch
import inspect
import io
import os
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

WIDTH = 100
SYNTAX = ("Every key can be set in the --config YAML file or on the command line as --KEY VALUE "
          "(or --KEY=VALUE), a nested key as --SECTION.KEY VALUE; VALUE is read as YAML: 3, 2.0e-5, "
          "true, null, [en, fr]. Later options win over earlier ones and over the file.")


@dataclass
class KeyDoc:
    """One line of the help: a key (or a section) with its type, default and meaning."""
    name: str
    type: str
    default: str | None          # None: required; "" for a section whose keys carry the defaults
    meaning: str
    section: bool = False


# ---- meanings, from the dataclass source ------------------------------------------------------------
def _comment_rows(source: str) -> dict[int, tuple[int, int, str, bool]]:
    """row -> (column of '#', column where the text starts, text, trailing code before it?)."""
    lines = source.splitlines()
    rows = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            body = tok.string[1:]
            text_col = col + 1 + len(body) - len(body.lstrip())
            rows[row] = (col, text_col, body.strip(), bool(lines[row - 1][:col].strip()))
    return rows


def _parse_class(cls: type) -> tuple[dict[int, ast.AnnAssign], dict, int] | None:
    """(fields by first row, :func:`_comment_rows`, number of rows) of ``cls``'s source, or None
    when it cannot be read (a class built at run time, a REPL)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        klass = ast.parse(source).body[0]
        comments = _comment_rows(source)
    except (OSError, TypeError, SyntaxError, IndexError, tokenize.TokenError):
        return None
    fields = {node.lineno: node for node in getattr(klass, "body", [])
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    return fields, comments, len(source.splitlines())


def field_comments(cls: type) -> dict[str, str]:
    """{field: comment text} from ``cls``'s source; {} when the source cannot be read.

    A field gets the comment lines directly above it (no blank line between), its trailing comment
    and the comment-only lines after it that continue the trailing one (their '#' or text indented
    deeper than a leading comment of the next field would be).
    """
    parsed = _parse_class(cls)
    if parsed is None:
        return {}
    fields, comments, n_rows = parsed
    out: dict[str, list[str]] = {}
    pending: list[str] = []      # comment lines waiting for the field below them
    last = None                  # (field, its indent, column of its trailing '#') while continuable
    row = 1
    while row <= n_rows:
        if row in fields:
            node = fields[row]
            trailing = [comments[r] for r in range(row, node.end_lineno + 1) if r in comments and comments[r][3]]
            out[node.target.id] = [_join(" ".join(pending), " ".join(c[2] for c in trailing), ": ")]
            last = (node.target.id, node.col_offset, trailing[-1][0]) if trailing else None
            pending, row = [], node.end_lineno + 1
            continue
        comment = comments.get(row)
        if comment and not comment[3] and last and (comment[0] > last[1] or comment[1] >= last[2]):
            out[last[0]].append(comment[2])
        elif comment and not comment[3]:
            pending.append(comment[2])
            last = None
        else:                    # a blank line or other code ends a comment block
            pending, last = [], None
        row += 1
    return {name: " ".join(t for t in texts if t) for name, texts in out.items()}


def _join(first: str, second: str, sep: str = ". ") -> str:
    """``first`` + ``sep`` + ``second``; a plain space after a sentence end or when one is empty."""
    if not first or not second:
        return first or second
    return first + (" " if first.endswith((".", ":", ";")) else sep) + second


def docstring_entries(cls: type) -> dict[str, str]:
    """{pattern: text} of the class docstring's bullets that start with a ``key`` (or ``glob_*``)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    entries, current, indent = {}, None, 0
    for line in doc.splitlines():
        stripped = line.strip()
        body = stripped[2:] if stripped.startswith("- ") else stripped
        if body.startswith("``") and "``" in body[2:]:
            key = body[2:body.index("``", 2)]
            current, indent = key, len(line) - len(line.lstrip())
            entries[key] = body[len(key) + 4:].lstrip(" :")
        elif current and stripped and len(line) - len(line.lstrip()) > indent:
            entries[current] += " " + stripped
        else:
            current = None
    return entries


def class_summary(cls: type) -> str:
    """The first paragraph of ``cls``'s own docstring, on one line ('' for dataclass's generated one)."""
    doc = cls.__doc__ or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def meanings(cls: type) -> dict[str, str]:
    """{field: meaning}: its comments, then the docstring bullet that names it; a bullet for a
    pattern (``flylora_*``) only documents the fields that have no comment of their own."""
    comments, bullets = field_comments(cls), docstring_entries(cls)
    out = {}
    for f in dataclasses.fields(cls):
        text = _join(comments.get(f.name, ""), bullets.get(f.name, ""))
        if not text:
            text = " ".join(t for p, t in bullets.items() if fnmatch.fnmatchcase(f.name, p))
        out[f.name] = text
    return out


# ---- types and defaults -------------------------------------------------------------------------
def type_text(tp: Any) -> str:
    """A short, readable form of a field annotation: ``str | null``, ``{cosine,constant}``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return "section"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def value_text(value: Any) -> str:
    """A default as it would be written in YAML (``null``, ``true``, ``[0.9, 0.999]``)."""
    from zlora.config import to_dict

    text = yaml.safe_dump([to_dict(value)], default_flow_style=True, width=10**6, allow_unicode=True)
    return text.strip()[1:-1].strip()


def _section_class(tp: Any) -> type | None:
    """The dataclass of a section field (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _item_class(tp: Any) -> tuple[str, type] | None:
    """For ``list[X]``, ``dict[str, X]``, ``dict[str, list[X]]`` of a dataclass X: (path suffix, X)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and args:
        inner = _item_class(args[0]) if not dataclasses.is_dataclass(args[0]) else ("", args[0])
        return ("[]" + inner[0], inner[1]) if inner else None
    if origin is dict and len(args) == 2:
        inner = _item_class(args[1]) if not dataclasses.is_dataclass(args[1]) else ("", args[1])
        return (".NAME" + inner[0], inner[1]) if inner else None
    return None


def _default(f: dataclasses.Field) -> tuple[bool, Any]:
    """(has a default, its value); a failing default_factory counts as none."""
    if f.default is not dataclasses.MISSING:
        return True, f.default
    if f.default_factory is not dataclasses.MISSING:
        try:
            return True, f.default_factory()
        except Exception:        # noqa: BLE001 -- help must not fail on a factory's own checks
            return False, None
    return False, None


def config_keys(cls: type, prefix: str = "", instance: Any = None) -> list[KeyDoc]:
    """Every key of dataclass ``cls`` (sections first named, then their keys), depth first.

    Defaults inside a section come from the section's own default (e.g. ``optim`` defaulting to
    ``OptimConfig(max_steps=1000)`` makes ``optim.max_steps`` default to 1000).
    """
    hints = typing.get_type_hints(cls)
    about = meanings(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name, tp = prefix + f.name, hints[f.name]
        has_default, default = (True, getattr(instance, f.name)) if instance is not None else _default(f)
        section = _section_class(tp)
        if section is not None:
            keys += _section_keys(name, section, has_default, default, about[f.name])
            continue
        keys.append(KeyDoc(name, type_text(tp), value_text(default) if has_default else None, about[f.name]))
        item = _item_class(tp)
        if item is not None:
            keys += config_keys(item[1], f"{name}{item[0]}.")
    return keys


def _section_keys(name: str, section: type, has_default: bool, default: Any, meaning: str) -> list[KeyDoc]:
    """A section's own line (required, optional = default null, or defaulted) and then its keys."""
    optional = has_default and default is None
    kind = f"optional section {section.__name__}" if optional else f"section {section.__name__}"
    head = KeyDoc(name, kind, ("null" if optional else "") if has_default else None,
                  _join(meaning, class_summary(section)), section=True)
    return [head] + config_keys(section, name + ".", default if dataclasses.is_dataclass(default) else None)


# ---- the help text ---------------------------------------------------------------------------------
def _running_verb() -> types.ModuleType | None:
    """The ``zlora.bin`` module running as ``__main__`` (``python -m`` or zlora.bin.chain), if any."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return main if spec is not None and spec.name.startswith("zlora.bin.") else None


def _prog_and_doc(cls: type, description: str | None) -> tuple[str, str]:
    verb = _running_verb()
    home = sys.modules.get(cls.__module__)
    if verb is not None:
        prog = f"python -m {verb.__spec__.name}"
    elif cls.__module__.startswith("zlora.bin."):
        prog = f"python -m {cls.__module__}"
    else:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "zlora"
    if description is None:
        description = getattr(verb or home, "__doc__", None) or ""
    return prog, inspect.cleandoc(description)


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * indent) or []


def format_key(key: KeyDoc) -> list[str]:
    """``  --optim.lr  float, default 2e-05`` then the meaning, wrapped and indented."""
    default = "required" if key.default is None else f"default {key.default}"
    if key.section:             # a section's defaults are those of its keys, listed next
        head = f"  {key.name}.*  {key.type}" + (f", {default}" if key.default != "" else "")
    elif "[]" in key.name:      # inside a list: only the YAML file can set it
        head = f"  {key.name}  {key.type}, {default} (YAML only)"
    else:
        head = f"  --{key.name}  {key.type}, {default}"
    return [head] + _wrap(key.meaning, 6)


def config_help(cls: type | None, description: str | None = None) -> str:
    """The full ``--help`` text of a typed-config verb whose config dataclass is ``cls``."""
    prog, doc = _prog_and_doc(cls, description) if cls is not None else ("zlora", description or "")
    lines = [f"usage: {prog} [--config FILE.yaml] [--KEY VALUE ...] [--SECTION.KEY VALUE ...]", ""]
    if doc:
        lines += [doc, ""]
    lines += _wrap(SYNTAX, 0) + [""]
    lines += ["options:", "  -h, --help  show this help message and exit", "  --config FILE.yaml"]
    lines += _wrap("YAML file with the keys below; a top-level _base_: FILE in it is loaded first and "
                   "this file's keys are merged over it", 6)
    if cls is not None:
        lines += ["", f"keys of {cls.__name__}:"]
        for key in config_keys(cls):
            lines += format_key(key)
    return "\n".join(lines) + "\n"


def print_config_help(cls: type | None, description: str | None = None) -> None:
    """Print :func:`config_help` and exit 0, as argparse's ``--help`` does."""
    sys.stdout.write(config_help(cls, description))
    sys.stdout.flush()
    raise SystemExit(0)
