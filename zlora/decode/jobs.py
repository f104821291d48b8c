"""Split a data dir's utterances into ``nj`` parts, decode each part once, merge atomically.

Resume semantics (ESPnet ``decode.sh``-style): every part writes ``OUT/split<nj>/<j>/text`` through
a temporary file and then a ``.done`` marker. A rerun skips parts that are done, so a killed job
only redoes its own part, and the merged ``OUT/text`` is written only when every part is complete
(no partial file that looks complete, no duplicates).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from zlora.utils.io import atomic_write_text


@dataclass(frozen=True)
class Part:
    index: int          # 1-based, as in Kaldi's split dirs
    utts: tuple[str, ...]
    dir: Path

    @property
    def key(self) -> str:
        """Hash of this part's utterance list: a .done written for other utterances (the data dir
        or nj changed) is not this part's."""
        return hashlib.sha256("\n".join(self.utts).encode("utf-8")).hexdigest()

    @property
    def done(self) -> bool:
        marker = self.dir / ".done"
        return (marker.is_file() and (self.dir / "text").is_file()
                and marker.read_text(encoding="utf-8").strip() == self.key)


def split_utts(utts_with_len: list[tuple[str, int]], nj: int, out: Path) -> list[Part]:
    """Deal utterances round-robin after sorting by length, so parts get equal work.

    The split is a pure function of the utterance list and ``nj``, so a rerun sees the same parts.
    Utterances inside a part stay sorted by length (descending) for efficient batching.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    order = sorted(utts_with_len, key=lambda x: (-x[1], x[0]))
    buckets: list[list[str]] = [[] for _ in range(nj)]
    for i, (utt, _) in enumerate(order):
        buckets[i % nj].append(utt)
    split_dir = out / f"split{nj}"
    return [Part(j + 1, tuple(b), split_dir / str(j + 1)) for j, b in enumerate(buckets)]


def write_part(part: Part, hyps: dict[str, str], stats: dict) -> None:
    """Write a finished part: text (atomic), stats.json, then the .done marker last."""
    part.dir.mkdir(parents=True, exist_ok=True)
    missing = [u for u in part.utts if u not in hyps]
    if missing:
        raise RuntimeError(f"part {part.index}: no hypothesis for {len(missing)} utts, e.g. {missing[0]}")
    lines = "".join(f"{u} {hyps[u]}".rstrip() + "\n" for u in sorted(part.utts))
    atomic_write_text(part.dir / "text", lines)
    atomic_write_text(part.dir / "stats.json", json.dumps(stats))
    atomic_write_text(part.dir / ".done", part.key + "\n")


def merged_key(parts: list[Part]) -> str:
    return hashlib.sha256("\n".join(p.key for p in parts).encode()).hexdigest()


def merged_is_current(parts: list[Part], out: Path) -> bool:
    """True when ``out/text`` was merged from exactly these (finished) parts: a rerun is a no-op."""
    marker = out / ".done"
    return (marker.is_file() and (out / "text").is_file() and all(p.done for p in parts)
            and marker.read_text(encoding="utf-8").strip() == merged_key(parts))


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
    atomic_write_text(out / ".done", merged_key(parts) + "\n")
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
