"""Repair a Kaldi data dir in place: sort, drop bad lines, keep the intersection of ids.

Usage: python -m zlora.bin.fix_data_dir [--langs en,fr] DIR
(``utils/fix_data_dir.sh`` wraps this.) Drops, and reports with the reason:
non-UTF-8 or malformed lines, repeated ids (the first line is kept), utterances missing from any
per-utterance file (text, utt2spk, utt2lang, utt2dur, feats.scp, utt2num_frames, segments/wav.scp),
empty transcripts, unknown language codes, segments whose recording is not in wav.scp.
Recordings and speakers left without utterances are dropped; spk2utt is rebuilt from utt2spk.
The original files are kept in DIR/.backup/. Audio is not decoded (validate_data_dir does that).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from zlora.data.kaldi import (ALL_FILES, KNOWN_LANGS, PER_UTT_FILES, DataDirError, filter_tables,
                              read_lenient, write_tables)
from zlora.utils.cli import ArgumentParser, run_main


def read_dir(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    tables, problems = {}, []
    for name in ALL_FILES:
        if (path / name).is_file():
            tables[name], p = read_lenient(path / name)
            problems += p
    for name in ("utt2spk", "wav.scp"):
        if name not in tables:
            raise DataDirError(f"{path}: required file {name} does not exist; cannot fix")
    return tables, problems


def drop_reasons(tables: dict[str, dict[str, str]], known_langs: set[str]) -> dict[str, list[str]]:
    """utt -> reasons it must go, over the union of ids of all per-utterance files."""
    utt_files = [n for n in PER_UTT_FILES if n in tables]
    utt_files.append("segments" if "segments" in tables else "wav.scp")
    all_ids = set().union(*(tables[n] for n in utt_files))
    reasons: dict[str, list[str]] = {}
    for utt in sorted(all_ids):
        r = [f"not in {n}" for n in utt_files if utt not in tables[n]]
        if utt in tables.get("text", {}) and not tables["text"][utt].strip():
            r.append("empty transcript")
        lang = tables.get("utt2lang", {}).get(utt)
        if lang is not None and lang not in known_langs:
            r.append(f"unknown language code '{lang}'")
        seg = tables.get("segments", {}).get(utt)
        if seg is not None and seg.split()[0] not in tables["wav.scp"]:
            r.append(f"recording '{seg.split()[0]}' not in wav.scp")
        if r:
            reasons[utt] = r
    return reasons


def report(path: Path, n_total: int, reasons: dict[str, list[str]], problems: list[str]) -> None:
    for p in problems:
        print(f"fix_data_dir: {p}")
    by_reason: dict[str, list[str]] = {}
    for utt, rs in reasons.items():
        by_reason.setdefault("; ".join(rs), []).append(utt)
    for why, utts in sorted(by_reason.items()):
        shown = " ".join(utts[:10]) + (f" ... (+{len(utts) - 10})" if len(utts) > 10 else "")
        print(f"fix_data_dir: dropped {len(utts)} utterance(s): {why}: {shown}")
    print(f"fix_data_dir: {path}: kept {n_total - len(reasons)} of {n_total} utterances "
          f"(dropped {len(reasons)}); originals in {path / '.backup'}")


def main(argv: list[str]) -> int:
    p = ArgumentParser("fix_data_dir", prog="fix_data_dir.sh", description=__doc__.splitlines()[0])
    p.add_argument("data", help="the data directory (fixed in place)")
    p.add_argument("--languages", default=None,
                   help="comma-separated language codes allowed in utt2lang (default: Whisper's)")
    p.add_alias("--langs", "--languages")
    args = p.parse_args(argv)
    path = Path(args.data)
    if not path.is_dir():
        raise DataDirError(f"{path}: data directory does not exist")
    tables, problems = read_dir(path)
    known = set(args.languages.split(",")) if args.languages else set(KNOWN_LANGS)
    reasons = drop_reasons(tables, known)
    keep = [u for u in tables["utt2spk"] if u not in reasons]
    n_total = len(keep) + len(reasons)  # every id of any per-utterance file is kept or dropped
    if not keep:
        raise DataDirError(f"{path}: no utterance survives fixing; reasons: "
                           + "; ".join(f"{u}: {', '.join(r)}" for u, r in list(reasons.items())[:5]))
    backup = path / ".backup"
    backup.mkdir(exist_ok=True)
    for name in tables:
        shutil.copy2(path / name, backup / name)
    fixed = filter_tables(tables, keep)
    write_tables(path, fixed)
    n_recs = len(tables["wav.scp"]) - len(fixed["wav.scp"])
    if "segments" in tables and n_recs:
        problems.append(f"dropped {n_recs} recording(s) of wav.scp that no kept segment uses")
    report(path, n_total, reasons, problems)
    return 0


if __name__ == "__main__":
    run_main(main)
