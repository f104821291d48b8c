"""Gather scored runs into a recipe RESULTS.md in the paper's table layout (§VI).

    python -m zlora.bin.report --out exp/RESULTS.md \
        --high de,es,fr,ru,vi,it,en,th --low ar,ja,ko,pt --baseline Vanilla-LoRA \
        [--figures exp/figures] [--lid_from_decodes] exp/*/decode_test/score

Each argument is a score dir with result.json and meta.json (see zlora/scoring/report.py), or
NAME=DIR to label a dir without meta.json. Rows: one per method (seeds: mean ± std); columns:
languages of each group + Avg; chunked and non-chunked runs in separate sections; relative
change against --baseline; the commands, config and git revision of every row.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zlora.scoring.report import ReportOptions, Run, baseline_label, load_lid, load_run, write_results_md
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.log import get_logger, setup_logging

log = get_logger("report")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("report", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="RESULTS.md to write")
    p.add_argument("--high", default="", help="comma-separated high-resource languages (table order)")
    p.add_argument("--low", default="", help="comma-separated low-resource languages (table order)")
    p.add_argument("--baseline", default="Vanilla-LoRA", help="row label of the relative change's baseline, or a training exp dir standing for "
                        "its label ('' for none)")
    p.add_argument("--title", default="Results", help="heading of RESULTS.md")
    p.add_argument("--figures", help="also write Fig. 5/6 PNGs into this dir and link them")
    p.add_argument("--lid", action="append", default=[], metavar="LABEL=LID_JSON",
                   help="add a LID-accuracy row from a language-agnostic decode's lid.json (repeatable)")
    p.add_argument("--lid_from_decodes", action="store_true",
                   help="add a LID-accuracy row, labelled 'METHOD (TEST SET)', for every run whose decode "
                        "dir (the score dir's parent) holds a lid.json, after the --lid rows")
    p.add_argument("runs", nargs="+", help="score dirs (or NAME=DIR)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup_logging()
    groups = {title: [x for x in langs.split(",") if x]
              for title, langs in (("High-resource languages", args.high), ("Low-resource languages", args.low))}
    groups = {k: v for k, v in groups.items() if v}
    overlap = set(groups.get("High-resource languages", [])) & set(groups.get("Low-resource languages", []))
    if overlap:
        raise UserError(f"--high and --low share {sorted(overlap)}")
    runs = [load_run(arg) for arg in args.runs]
    lid = [load_lid(a) for a in args.lid] + (lid_rows(runs) if args.lid_from_decodes else [])
    opts = ReportOptions(groups=groups, baseline=baseline_label(args.baseline) or None, title=args.title,
                         figures_dir=args.figures, lid=lid)
    write_results_md(runs, opts, args.out)
    log.info("wrote %s from %d runs", args.out, len(runs))
    return 0


def lid_rows(runs: list[Run]) -> list[tuple[str, dict]]:
    """(label, lid.json) of every language-agnostic decode among ``runs``, in their order."""
    rows = []
    for run in runs:
        path = Path(run.path).parent / "lid.json"
        if path.is_file():
            rows.append(load_lid(f"{run.meta.method} ({run.meta.test_set})={path}"))
    return rows


if __name__ == "__main__":
    run_main(main)
