"""Typed configuration: YAML sections loaded into dataclasses, with dotted CLI overrides.

Every ``python -m zlora.bin.<verb>`` takes ``--config conf/x.yaml`` plus ``--key value`` and
``--section.key value`` overrides. YAML is read with ``yaml.safe_load`` only. Unknown, misspelled or
missing keys fail with a :class:`ConfigError` that names the key (and the file it came from), and
values are type-checked against the dataclass annotations, so a typo never silently falls back to
a default. A key given twice in one YAML mapping is an error naming both lines (YAML keeps the last
one, silently dropping the first block); an unquoted ``no``/``yes``/``on``/``off`` where a string
is expected gets a hint (YAML 1.1 reads them as booleans); an override given on the command line
is blamed on the command line, not on the file (:func:`check_overrides`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")
_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class ConfigError(ValueError):
    """A configuration problem; the message names the key and where it came from."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert the few safe cases (int->float, list->tuple)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:               # Optional[X]: X's own error names the inner key
            return _coerce(value, options[0], where)
        for arg in options:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        if args:
            return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            # PyYAML (YAML 1.1) reads "2e-3" as a string: it wants "2.0e-3". Accept the number.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {str(value).lower()}: YAML 1.1 reads an "
                              f"unquoted {'yes, on, y or true' if value else 'no, off, n or false'} as a "
                              "boolean; quote it (e.g. the language code 'no')")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown/missing keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    migrate = getattr(cls, "migrate_config", None)
    if migrate is not None:      # a class that renamed keys maps old spellings itself
        data = migrate(data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from e


def to_dict(cfg: Any) -> Any:
    """Dataclass -> plain YAML-friendly structure (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


BASE_KEY = "_base_"


def read_yaml(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """``yaml.safe_load`` a file into a dict; errors name the file.

    A top-level ``_base_: other.yaml`` (or a list of files), relative to this file, is loaded first
    and this file's keys are deep-merged over it. Per-experiment configs then state only what
    differs from a shared base, instead of copies that drift apart.
    """
    path = Path(path)
    data = _read_one_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names")
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if base_path in _seen:
            raise ConfigError(f"{path}: {BASE_KEY} cycle through {base_path}")
        merged = deep_merge(merged, read_yaml(base_path, _seen + (path.resolve(),)))
    return deep_merge(merged, data)


def _read_one_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        check_duplicate_keys(text, path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def check_duplicate_keys(text: str, where: str | os.PathLike) -> None:
    """A key given twice in one mapping is an error naming both lines. yaml.safe_load keeps the
    last value, so a config with ``adapter:`` twice silently lost its first block. The text is
    composed into nodes only (no Python objects are constructed), with the safe loader."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    todo = [root] if root is not None else []
    while todo:
        node = todo.pop()
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key, value in node.value:
                todo.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    raise ConfigError(f"{where}:{line}: duplicate key {key.value!r} (first at line "
                                      f"{first[key.value]}): YAML keeps only the last one, so the first "
                                      "would be silently lost; merge them or delete one")
                first[key.value] = line


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``set_dotted(d, "a.b.c", v)`` sets ``d["a"]["b"]["c"] = v``, creating sections."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--{dotted}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


HELP_FLAGS = ("-h", "--help")


def parse_overrides(argv: Sequence[str], cls: type | None = None,
                    description: str | None = None) -> tuple[str | None, dict]:
    """Split ``--config FILE --a.b VALUE ...`` into (config path, nested override dict).

    Values are parsed as YAML scalars/flow collections (``3``, ``true``, ``[1, 2]``, ``null``);
    ``--key=value`` works too. ``--local_rank`` (added by the deepspeed launcher) is ignored.
    ``-h``/``--help`` anywhere prints every key of dataclass ``cls`` (type, default, meaning; see
    zlora.config_help) under ``description`` (default: the verb's docstring) and exits 0: this is
    the one place every typed-config verb passes its argv through.
    """
    if any(a in HELP_FLAGS for a in argv):
        from zlora.config_help import print_config_help

        print_config_help(cls, description)
    config_path, overrides = None, {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; options are --key value")
        key, eq, val = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"option --{key} needs a value")
            val = args[i + 1]
            i += 1
        i += 1
        key = key.replace("-", "_")
        if key == "local_rank":
            continue
        if key == "config":
            config_path = val
            continue
        try:
            parsed = yaml.safe_load(val) if val != "" else ""
        except yaml.YAMLError:
            parsed = val
        set_dotted(overrides, key, parsed)
    return config_path, overrides


CLI = "command line"


def check_overrides(cls: type, overrides: dict, prefix: str = "") -> None:
    """Unknown keys and mistyped values among the command-line overrides of dataclass ``cls``,
    blamed on the command line (``command line: --optim.lrr: unknown key``): checked on their
    own before they are merged into the file's keys, whose errors name the file."""
    migrate = getattr(cls, "migrate_config", None)
    if migrate is not None:
        try:                    # its deprecation lines are printed once, by the full check
            with contextlib.redirect_stderr(io.StringIO()):
                overrides = migrate(dict(overrides), CLI)
        except ConfigError:
            return              # reported by the full check, with its context
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for key, value in overrides.items():
        where = f"{CLI}: --{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} for {cls.__name__}; valid keys: "
                              f"{', '.join(sorted(fields))}")
        section = _section_class(hints[key])
        if isinstance(value, dict) and section is not None:
            check_overrides(section, value, f"{prefix}{key}.")
        elif not isinstance(value, dict):
            _coerce(value, hints[key], where)


def _section_class(tp: Any) -> type | None:
    """The dataclass of a section-typed field (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if _is_optional(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Parse ``--config file.yaml`` plus dotted overrides from ``argv`` into dataclass ``cls``
    (``--help``: the keys of ``cls`` under ``description``, see :func:`parse_overrides`)."""
    argv = sys.argv[1:] if argv is None else argv
    path, overrides = parse_overrides(argv, cls, description)
    check_overrides(cls, overrides)
    data = read_yaml(path) if path else {}
    where = str(path) if path else "config"
    return from_dict(cls, deep_merge(data, overrides), where)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the fully resolved config as YAML, atomically."""
    from zlora.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
