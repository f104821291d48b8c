"""Split a data dir's utterances into ``nj`` parts, decode each part once, merge atomically.

Resume semantics (ESPnet ``decode.sh``-style): every part writes ``OUT/split<nj>/<j>/text`` through
a temporary file and then a ``.done`` marker. A rerun skips parts that are done, so a killed job
only redoes its own part, and the merged ``OUT/text`` is written only when every part is complete
(no partial file that looks complete, no duplicates).

Each ``.done`` is a provenance record (zlora.utils.provenance): the hash of the part's utterance
list plus what the caller says produced it (model weights, features, options, language source).
A part or merge made from anything else is not done: it is redone, and the log says which
fingerprint differs. Workers (zlora.utils.procs.run_worker) die with the process that
started them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger
from zlora.utils.procs import run_worker  # noqa: F401  (the decode workers' entry point)
from zlora.utils.provenance import describe, differences, read_record, write_record

log = get_logger("decode")


@dataclass(frozen=True)
class Part:
    index: int          # 1-based, as in Kaldi's split dirs
    utts: tuple[str, ...]
    dir: Path
    # what produced it: {name: fingerprint} (model, feats, options, ...), recorded in .done
    record: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Hash of this part's utterance list: a .done written for other utterances (the data dir
        or nj changed) is not this part's."""
        return hashlib.sha256("\n".join(self.utts).encode("utf-8")).hexdigest()

    @property
    def expected(self) -> dict[str, str]:
        """The record a finished part holds in .done: its utterances and what produced it."""
        return {"utts": self.key, **self.record}

    def stale(self) -> dict:
        """{name: (recorded, expected)} of what differs from its .done ({} when done)."""
        if not (self.dir / "text").is_file():
            return {"text": (None, "present")}
        return differences(read_record(self.dir / ".done"), self.expected)

    @property
    def done(self) -> bool:
        return not self.stale()


def split_utts(utts_with_len: list[tuple[str, int]], nj: int, out: Path,
               record: Mapping[str, str] | None = None) -> list[Part]:
    """Deal utterances round-robin after sorting by length, so parts get equal work.

    The split is a pure function of the utterance list and ``nj``, so a rerun sees the same parts.
    Utterances inside a part stay sorted by length (descending) for efficient batching. ``nj``
    above the number of utterances is lowered to it (a part never starts a worker for nothing).
    ``record``: what produced the parts (see the module doc).
    """
    if nj < 1:
        raise UserError(f"--nj must be >= 1, got {nj}")
    if not utts_with_len:
        raise UserError(f"{out}: no utterances to decode")
    if nj > len(utts_with_len):
        log.info("--nj %d is more than the %d utterances: using %d parts", nj, len(utts_with_len),
                 len(utts_with_len))
        nj = len(utts_with_len)
    order = sorted(utts_with_len, key=lambda x: (-x[1], x[0]))
    buckets: list[list[str]] = [[] for _ in range(nj)]
    for i, (utt, _) in enumerate(order):
        buckets[i % nj].append(utt)
    split_dir = out / f"split{nj}"
    return [Part(j + 1, tuple(b), split_dir / str(j + 1), dict(record or {})) for j, b in enumerate(buckets)]


def write_part(part: Part, hyps: dict[str, str], stats: dict) -> None:
    """Write a finished part: text (atomic), stats.json, then the .done marker last."""
    part.dir.mkdir(parents=True, exist_ok=True)
    missing = [u for u in part.utts if u not in hyps]
    if missing:
        raise RuntimeError(f"part {part.index}: no hypothesis for {len(missing)} utts, e.g. {missing[0]}")
    lines = "".join(f"{u} {hyps[u]}".rstrip() + "\n" for u in sorted(part.utts))
    atomic_write_text(part.dir / "text", lines)
    atomic_write_text(part.dir / "stats.json", json.dumps(stats))
    write_record(part.dir / ".done", part.expected)


def merged_key(parts: list[Part]) -> str:
    return hashlib.sha256("\n".join(p.key for p in parts).encode()).hexdigest()


def merged_record(parts: list[Part]) -> dict[str, str]:
    """The record of ``out/.done``: the parts' utterance lists and what produced them."""
    return {"parts": merged_key(parts), **(parts[0].record if parts else {})}


def merged_is_current(parts: list[Part], out: Path) -> bool:
    """True when ``out/text`` was merged from exactly these (finished) parts, made from the same
    inputs: a rerun is a no-op. A merge made from other inputs (another model, other features or
    options) is stale: its ``.done`` and ``text`` are removed here, so that nothing stale looks
    complete while the parts are redone, and the log says which fingerprints differ."""
    if not (out / ".done").is_file():
        return False
    diffs = differences(read_record(out / ".done"), merged_record(parts))
    if not diffs and (out / "text").is_file() and all(p.done for p in parts):
        return True
    if diffs:
        log.info("%s was decoded from other inputs (%s): redoing it", out / "text", describe(diffs))
        for p in parts:
            part_diffs = {k: v for k, v in p.stale().items() if k in diffs}
            if part_diffs:
                log.info("part %d: redoing it (%s)", p.index, describe(part_diffs))
    for name in (".done", "text"):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    return False


def merge_parts(parts: list[Part], out: Path) -> dict:
    """Concatenate finished parts into ``out/text`` (sorted) and ``out/rtf.json``; returns the RTF summary."""
    not_done = [p.index for p in parts if not p.done]
    if not_done:
        raise RuntimeError(f"cannot merge: parts {not_done} are not finished")
    lines: dict[str, str] = {}
    decode_s = audio_s = 0.0
    n_utts = 0
    for p in parts:
        for line in (p.dir / "text").read_text(encoding="utf-8").splitlines():
            utt = line.split(maxsplit=1)[0]
            if utt in lines:
                raise RuntimeError(f"duplicate hypothesis for {utt} in part {p.index}")
            lines[utt] = line
        st = json.loads((p.dir / "stats.json").read_text())
        decode_s += st["decode_seconds"]
        audio_s += st["audio_seconds"]
        n_utts += st["utts"]
    atomic_write_text(out / "text", "".join(lines[u] + "\n" for u in sorted(lines)))
    summary = {
        "utts": n_utts, "audio_seconds": round(audio_s, 3), "decode_seconds": round(decode_s, 3),
        "rtf": round(decode_s / audio_s, 5) if audio_s > 0 else None, "parts": len(parts),
    }
    atomic_write_text(out / "rtf.json", json.dumps(summary, indent=2) + "\n")
    write_record(out / ".done", merged_record(parts))
    return summary


def part_device(index: int) -> str:
    """Job j uses GPU (j-1) mod n_gpu when GPUs exist (multi-GPU decoding), else the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{(index - 1) % torch.cuda.device_count()}"
    return "cpu"


def threads_per_job(nj: int) -> int:
    """This process's torch threads (OMP_NUM_THREADS, or what zlora.bin.chain gave it, else the
    cores) shared by ``nj`` jobs."""
    import torch

    return max(1, torch.get_num_threads() // max(1, nj))

