"""Draw a random subset of a data dir by total duration, or take a given utterance list.

Usage:
  python -m zlora.bin.subset_data_dir --hours H [--seed S] [--per_lang] SRC DST
  python -m zlora.bin.subset_data_dir --utt_list FILE SRC DST
  python -m zlora.bin.subset_data_dir --lang LANG SRC DST
(``utils/subset_data_dir.sh`` wraps this; Kaldi's ``--per-lang``/``--utt-list`` spellings work too.)
DST/utt_list holds the chosen ids, one per line, so a subset can be published and rebuilt exactly
with ``--utt_list`` (the paper publishes such lists).

Selection by hours: the ids (sorted) are shuffled with ``random.Random`` seeded by the seed (and,
with --per_lang, the language code, so adding a language never changes another's subset); we take
the shortest prefix of the shuffled order whose duration reaches H hours (H per language with
--per_lang): the subset overshoots the budget by less than one utterance. Durations come from
SRC/utt2dur, which is computed and written first when missing (as Kaldi's scripts do). SRC (or a
language of it, with --per_lang) holding less than H hours is an error naming what it holds;
--allow_fewer takes every utterance instead, with a warning.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from zlora.data.audio import utterance_durations
from zlora.data.kaldi import DataDir, DataDirError, copy_subset, write_kv
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import atomic_write_text, check_outputs_apart
from zlora.utils.log import get_logger, setup_logging

log = get_logger("subset_data_dir")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("subset_data_dir", prog="subset_data_dir.sh", description=__doc__.splitlines()[0])
    p.add_argument("src", help="source data dir")
    p.add_argument("dst", help="output data dir")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--hours", type=float, help="total hours to draw (per language with --per_lang)")
    g.add_argument("--utt_list", help="file whose first field per line is an utterance id")
    g.add_argument("--lang", help="every utterance of this language (by utt2lang)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draw by hours")
    p.add_argument("--per_lang", action="store_true", help="draw --hours for each language")
    p.add_argument("--allow_fewer", action="store_true",
                   help="take every utterance when SRC (a language, with --per_lang) holds less than --hours "
                        "(default: an error)")
    args = p.parse_args(argv)
    if args.hours is not None and args.hours <= 0:
        p.error("--hours must be > 0")
    if args.hours is None and (args.per_lang or args.allow_fewer):
        p.error("--per_lang and --allow_fewer only apply to --hours")
    return args


def durations(src: DataDir) -> dict[str, float]:
    if src.utt2dur is not None and set(src.utt2dur) >= set(src.utts):
        return src.utt2dur
    log.info("%s/utt2dur missing or incomplete: computing it", src.path)
    durs = utterance_durations(src)
    write_kv(src.path / "utt2dur", durs)
    return durs


def draw(utts: list[str], durs: dict[str, float], seconds: float, seed: str) -> list[str]:
    """Shortest prefix of a seeded shuffle of ``utts`` whose duration reaches ``seconds``."""
    order = sorted(utts)
    random.Random(seed).shuffle(order)
    chosen, total = [], 0.0
    for u in order:
        if total >= seconds:
            break
        chosen.append(u)
        total += durs[u]
    return chosen


def by_hours(src: DataDir, hours: float, seed: int, per_lang: bool, allow_fewer: bool = False) -> list[str]:
    durs = durations(src)
    if not per_lang:
        groups = {"": src.utts}
    else:
        groups = {}
        for utt in src.utts:
            groups.setdefault(src.utt2lang[utt], []).append(utt)
    chosen = []
    for lang, utts in sorted(groups.items()):
        pick = draw(utts, durs, hours * 3600, f"{seed}:{lang}" if per_lang else str(seed))
        got = sum(durs[u] for u in pick) / 3600
        if got < hours:
            where = f"{src.path}" + (f" [{lang}]" if lang else "")
            if not allow_fewer:
                raise DataDirError(f"{where}: holds only {got:.4g} hours ({len(pick)} utterances), less than "
                                   f"--hours {hours:g}; lower --hours, or pass --allow_fewer to take them all")
            log.warning("%s: only %.4g hours available, taking all %d utterances (--allow_fewer)",
                        where, got, len(pick))
        chosen += pick
    return sorted(chosen)


def from_list(src: DataDir, list_file: str) -> list[str]:
    path = Path(list_file)
    if not path.is_file():
        raise DataDirError(f"{path}: utterance list does not exist")
    ids = []
    for lineno, line in enumerate(path.read_bytes().decode("utf-8", "strict").splitlines(), 1):
        if line.strip():
            ids.append(line.split()[0])
    missing = sorted(set(ids) - set(src.utts))
    if missing:
        raise DataDirError(f"{path}: {len(missing)} id(s) are not in {src.path}: "
                           + " ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if not ids:
        raise DataDirError(f"{path}: utterance list is empty")
    return sorted(set(ids))


def of_language(src: DataDir, lang: str) -> list[str]:
    """Every utterance whose utt2lang is ``lang`` (e.g. one language expert's training data)."""
    utts = [u for u in src.utts if src.utt2lang.get(u) == lang]
    if not utts:
        raise DataDirError(f"{src.path}: no utterance of language {lang!r} in utt2lang "
                           f"(it has {', '.join(sorted(set(src.utt2lang.values()))) or 'none'})")
    return utts


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup_logging()
    src = DataDir(args.src)
    try:
        check_outputs_apart({"dst": args.dst}, {"src": src.path})
    except UserError as e:
        raise DataDirError(f"{args.dst}: destination must differ from the source and not contain it ({e})") from None
    if args.utt_list:
        utts = from_list(src, args.utt_list)
    elif args.lang:
        utts = of_language(src, args.lang)
    else:
        utts = by_hours(src, args.hours, args.seed, args.per_lang, args.allow_fewer)
    tables = copy_subset(src.path, args.dst, utts)
    atomic_write_text(Path(args.dst) / "utt_list", "".join(f"{u}\n" for u in utts))
    hours = sum(float(v) for v in tables["utt2dur"].values()) / 3600 if "utt2dur" in tables else None
    print(f"subset_data_dir: {args.dst}: {len(utts)} of {len(src.utts)} utterances"
          + (f", {hours:.3f} hours" if hours is not None else "") + f"; ids in {args.dst}/utt_list")
    return 0


if __name__ == "__main__":
    run_main(main)
