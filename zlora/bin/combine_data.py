"""Combine several data dirs into one, like Kaldi's utils/combine_data.sh.

Usage: python -m zlora.bin.combine_data DST SRC1 SRC2 ...
(``utils/combine_data.sh`` wraps this.) Utterance, recording and speaker ids must not clash between
sources (an id in two sources with different contents is an error naming both). If only some
sources have ``segments``, the others get whole-recording segments (``rec 0 -1``). Optional files
(utt2dur, feats.scp, ...) are kept only when every source has them; otherwise they are left out and
the log says so. spk2utt is rebuilt.
"""
from __future__ import annotations

from pathlib import Path

from zlora.data.kaldi import PER_UTT_FILES, DataDirError, load_tables, write_tables
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import check_outputs_apart
from zlora.utils.log import get_logger, setup_logging

log = get_logger("combine_data")


def with_segments(tables: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Give a dir without segments whole-recording segments (utt = recording id)."""
    if "segments" in tables:
        return tables
    out = dict(tables)
    out["segments"] = {utt: f"{utt} 0 -1" for utt in tables["wav.scp"]}
    return out


def merge_into(merged: dict[str, dict[str, str]], origin: dict[tuple[str, str], Path],
               tables: dict[str, dict[str, str]], src: Path) -> None:
    for name, table in tables.items():
        if name == "spk2utt":
            continue  # rebuilt from utt2spk
        dst = merged.setdefault(name, {})
        for key, value in table.items():
            if key in dst and dst[key] != value:
                raise DataDirError(f"id '{key}' of {name} is in both {origin[(name, key)]} and {src} "
                                   f"with different contents ({dst[key]!r} vs {value!r})")
            if key in dst and name in (*PER_UTT_FILES, "segments"):
                raise DataDirError(f"utterance '{key}' is in both {origin[(name, key)]} and {src}; "
                                   f"utterance ids must be unique across sources")
            dst[key] = value
            origin[(name, key)] = src


def main(argv: list[str]) -> int:
    p = ArgumentParser("combine_data", prog="combine_data.sh", description=__doc__.splitlines()[0])
    p.add_argument("dst", help="output data dir (must not be one of the sources)")
    p.add_argument("srcs", nargs="+", help="source data dirs (utterance ids unique across them)")
    args = p.parse_args(argv)
    setup_logging()
    srcs = [Path(s) for s in args.srcs]
    try:                          # the destination may neither be nor contain a source
        check_outputs_apart({"dst": args.dst}, {f"src {s}": s for s in srcs})
    except UserError as e:
        raise DataDirError(f"{args.dst}: destination must not be or contain a source ({e})") from None
    all_tables = [load_tables(s) for s in srcs]
    for s, t in zip(srcs, all_tables):
        if "utt2spk" not in t or "wav.scp" not in t:
            raise DataDirError(f"{s}: not a data dir (needs utt2spk and wav.scp)")
    if any("segments" in t for t in all_tables) and not all("segments" in t for t in all_tables):
        all_tables = [with_segments(t) for t in all_tables]
    common = set.intersection(*(set(t) for t in all_tables))
    for name in sorted(set().union(*(set(t) for t in all_tables)) - common):
        log.warning("not every source has %s: leaving it out of %s", name, args.dst)
    merged: dict[str, dict[str, str]] = {}
    origin: dict[tuple[str, str], Path] = {}
    for s, t in zip(srcs, all_tables):
        merge_into(merged, origin, {n: v for n, v in t.items() if n in common}, s)
    write_tables(args.dst, merged)
    n_utts = len(merged["utt2spk"])
    print(f"combine_data: {args.dst}: {n_utts} utterances from {len(srcs)} sources")
    return 0


if __name__ == "__main__":
    run_main(main)
