"""A small static checker for unsafe loading and shell evaluation (issue 10, "Security").

Python files are parsed (``ast``), so calls are found wherever they are and however imported
(``import torch as t; t.load(f)``), while the same words inside strings and comments are ignored:

- any import of pickle-style deserialisers (pickle, cPickle, _pickle, dill, shelve, marshal, joblib);
- ``torch.load(...)`` without the literal keyword ``weights_only=True``;
- ``yaml.load``/``load_all``/``unsafe_load``/``full_load`` (only ``safe_load`` is allowed) and any use
  of yaml's ``Loader``/``UnsafeLoader``/``FullLoader``;
- ``numpy.load(..., allow_pickle=True)``;
- the builtins ``eval(...)`` and ``exec(...)``.

Shell files (``*.sh`` and files with a sh/bash shebang) are checked line by line, comments and quoted
text aside, for ``eval``, ``bash -c``/``sh -c`` of a variable, and ``source``/``.`` of a variable
(except the one place Kaldi's conventions make a user file shell code: ``--config`` in
utils/parse_options.sh).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib"}
YAML_UNSAFE = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".eggs", "build", "dist"}
# (file relative to the repo, exact stripped line): documented exceptions.
SHELL_ALLOWED = {("utils/parse_options.sh", '. "$__po_cfg"')}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin from the file's imports (``np`` -> ``numpy``, ``load`` -> ``torch.load``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _kw_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def scan_python(source: str, where: str = "<string>") -> list[str]:
    """Violations in Python source, each as ``where:line: what``."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [f"{where}:{e.lineno}: cannot parse: {e.msg}"]
    aliases = _aliases(tree)
    found = []

    def bad(node, what):
        found.append(f"{where}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in PICKLE_MODULES:
                    bad(node, f"imports {m} (pickle-style deserialisation)")
        elif isinstance(node, ast.Attribute) and _dotted(node, aliases) in {f"yaml.{n}" for n in YAML_LOADERS}:
            bad(node, f"uses {_dotted(node, aliases)} (only yaml.safe_load is allowed)")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func, aliases) or ""
            if name in ("torch.load", "torch.serialization.load") and not _kw_is(node, "weights_only", True):
                bad(node, "torch.load without weights_only=True")
            elif name.startswith("yaml.") and name.split(".", 1)[1] in YAML_UNSAFE:
                bad(node, f"{name} (use yaml.safe_load)")
            elif name in ("numpy.load", "np.load") and _kw_is(node, "allow_pickle", True):
                bad(node, "numpy.load with allow_pickle=True")
            elif name in ("eval", "exec") and isinstance(node.func, ast.Name):
                bad(node, f"builtin {name}()")
    return found


def _strip_shell_comment(line: str) -> str:
    """The line without its comment and with quoted text blanked out (quotes kept)."""
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and (quote == "'" or line[i - 1] != "\\"):
                quote = None
                out.append(ch)
            else:
                out.append(ch if quote == '"' and ch == "$" else " ")
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out)


_CMD = r"(?:^|[;&|(){}!`]|\bthen|\bdo|\belse|\bexec|\bcommand|\bbuiltin)\s*"
SHELL_RULES = [
    (re.compile(_CMD + r"eval\b"), "eval"),
    (re.compile(_CMD + r"(?:ba|z|da)?sh\s+(?:-\w+\s+)*-c\s+\"?\$"), "shell -c of a variable"),
    (re.compile(_CMD + r"(?:source|\.)\s+\"?[^\s\"]*\$"), "source of a variable path"),
]


def scan_shell(source: str, where: str = "<string>") -> list[str]:
    """Violations in shell source, each as ``where:line: what``."""
    found = []
    for lineno, line in enumerate(source.splitlines(), 1):
        if (where, line.strip()) in SHELL_ALLOWED:
            continue
        code = _strip_shell_comment(line)
        for pattern, what in SHELL_RULES:
            if pattern.search(code):
                found.append(f"{where}:{lineno}: {what}: {line.strip()}")
    return found


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and re.search(rb"\b(ba|da|z)?sh\b", first) is not None


def source_files(root: Path, subdirs: list[str]) -> list[Path]:
    """Files under ``root/<subdir>`` that are part of the project: what git tracks or would track
    (generated data/dump/exp dirs are ignored); every file when ``root`` is not a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z", "--", *subdirs],
                             capture_output=True, check=True).stdout.decode()
        return sorted(root / f for f in out.split("\0") if f)
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for sub in subdirs for p in (root / sub).rglob("*")
                      if not any(part in SKIP_DIRS for part in p.relative_to(root).parts))


def scan_tree(root: Path, subdirs: list[str]) -> list[str]:
    """Scan every Python and shell file of the project under ``root/<subdir>`` (symlinks skipped)."""
    found = []
    for path in source_files(root, subdirs):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix == ".py":
            found += scan_python(path.read_text(encoding="utf-8"), rel)
        elif is_shell_script(path):
            found += scan_shell(path.read_text(encoding="utf-8", errors="replace"), rel)
    return found
