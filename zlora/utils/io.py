"""Atomic file writes (write to a temporary file in the same directory, fsync, rename) and
safetensors reads/writes that name the file when they fail.

A kill or a full disk mid-write never leaves a partial file under the final name, and never
clobbers the previous version of that file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import torch

from zlora.utils.cli import UserError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file next to ``path``; on clean exit fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask_mode() -> int:
    """0o666 minus the process umask: what open() would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb", encoding=None) as f:
        f.write(data)


def atomic_save_file(save_fn, path: str | os.PathLike) -> None:
    """Call ``save_fn(tmp_path)`` (e.g. safetensors.torch.save_file) then fsync + rename to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _call_writer(save_fn, tmp, path)
        # After the writer, not before: safetensors (and others) delete and recreate the file,
        # which would bring back mkstemp's owner-only 0o600.
        os.chmod(tmp, _umask_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _call_writer(save_fn, tmp: str, path: Path) -> None:
    """``save_fn(tmp)``; a writer's own error type for a failed write becomes an OSError naming
    ``path``, so that every caller's disk-full handling sees it. torch.save raises RuntimeError
    ("unexpected pos ...") when the disk fills up, safetensors a SafetensorError."""
    try:
        save_fn(tmp)
    except RuntimeError as e:
        raise OSError(errno.EIO, f"writing failed ({e}); is the disk full?", str(path)) from e
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise OSError(errno.EIO, f"writing failed ({e}); is the disk full?", str(path)) from e


def check_outputs_apart(outputs: dict[str, str | os.PathLike | None],
                        inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output path that is, or contains, one of the inputs: ``--out`` equal to the data
    dir would overwrite the reference ``text`` with hypotheses. Keys are the option names shown
    in the message; None values are skipped."""
    for out_name, out in outputs.items():
        if out is None:
            continue
        o = os.path.realpath(out)
        for in_name, src in inputs.items():
            if src is None:
                continue
            i = os.path.realpath(src)
            if i == o or i.startswith(o.rstrip(os.sep) + os.sep):
                what = "is" if i == o else "contains"
                raise UserError(f"{out_name} {out} {what} the input {in_name} {src}: the outputs would "
                                f"overwrite or mix with the inputs; choose another {out_name}")


def table_fingerprint(*tables: str | os.PathLike) -> str:
    """sha256 over Kaldi tables (wav.scp, segments, feats.scp) and the size and mtime of every file
    they point to. An output derived from them records it, so that a rerun can tell it went stale:
    re-synthesised audio behind an unchanged wav.scp, a re-dumped ark behind an unchanged
    feats.scp. Pipe entries ("cmd |") count by their text only; ark offsets ("x.ark:123") by the
    ark file. Missing tables count as empty."""
    h = hashlib.sha256()
    seen: set[str] = set()
    for table in tables:
        text = Path(table).read_bytes() if os.path.isfile(table) else b""
        h.update(f"{os.path.basename(table)}\0{len(text)}\0".encode() + text)
        for line in text.decode("utf-8", "replace").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) < 2 or parts[1].rstrip().endswith("|"):
                continue
            path = parts[1].strip()
            if not os.path.isfile(path):
                path = path.rsplit(":", 1)[0]
            if path in seen or not os.path.isfile(path):
                continue
            seen.add(path)
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ---- tensors on disk (safetensors only) -----------------------------------------------------------
class CheckpointError(UserError):
    """A weights or checkpoint file could not be written or read; the message names the file."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    seen, out = set(), {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        if ptr in seen:     # safetensors refuses shared storage (e.g. tied weights)
            v = v.clone()
        seen.add(ptr)
        out[k] = v.contiguous()
    atomic_save_file(lambda tmp: save_file(out, tmp, metadata=metadata), path)


def load_tensors(path: Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, checked finite. Errors name the file (``what`` says what
    it should hold, e.g. "LID embeddings")."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: {what} file does not exist")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own types for truncated / corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    check_finite_tensors(tensors, path)
    return tensors


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} when it has none); errors name the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e


def check_finite_tensors(tensors: dict[str, torch.Tensor], path) -> None:
    """NaN or Inf in a weight is an error naming the tensor and the file: a model with one decodes
    to empty hypotheses without a warning."""
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(torch.isinf(t).sum())
            raise CheckpointError(f"{path}: tensor {name} holds {n_nan} NaN and {n_inf} Inf value(s) of "
                                  f"{t.numel()}: the weights are broken (a diverged run?); use an "
                                  "earlier checkpoint")
