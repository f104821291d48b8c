"""Print a run's per-method averages beside a reference's (both RESULTS.md files of zlora.bin.report).

    python -m zlora.bin.compare_results --reference RESULTS.md exp/RESULTS.md

A recipe writes its run's tables to ``exp/RESULTS.md`` and never over its committed reference
(``RESULTS.md``); this prints, per test set, each method's group averages (WER/CER %) in this
run and in the reference, and their difference (zlora/scoring/compare.py). Read-only.
"""
from __future__ import annotations

import argparse

from zlora.scoring.compare import compare, read_results_md
from zlora.utils.cli import ArgumentParser, run_main


def main(argv: list[str]) -> int:
    p = ArgumentParser("compare_results", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="the reference RESULTS.md (e.g. the committed one)")
    p.add_argument("results", help="this run's RESULTS.md")
    args = p.parse_args(argv)
    this, ref = read_results_md(args.results), read_results_md(args.reference)
    print(f"Averages (WER/CER %) of {args.results} beside the reference {args.reference} "
          "(Δ = this run - reference, in points):\n")
    print(compare(this, ref), end="")
    return 0


if __name__ == "__main__":
    run_main(main)
