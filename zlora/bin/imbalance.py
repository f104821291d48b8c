"""Print the hours per language of a Kaldi data dir and its high:low-resource imbalance.

    python -m zlora.bin.imbalance --low ar,ja,ko,pt data/train_sft

Every language not in ``--low`` counts as high-resource; the ratio is the smallest high-resource
language's total duration over the largest low-resource one's (the paper's is 1000 h : 1 h, §V-A).
Durations come from utt2dur (measured from the audio if it is missing). Read-only.
"""
from __future__ import annotations

import argparse

from zlora.data.kaldi import DataDir
from zlora.data.stats import imbalance, seconds_per_language
from zlora.utils.cli import ArgumentParser, run_main


def main(argv: list[str]) -> int:
    p = ArgumentParser("imbalance", description=__doc__.split("\n\n")[0])
    p.add_argument("--low", required=True, help="comma-separated low-resource languages")
    p.add_argument("data", help="Kaldi data dir with utt2lang (and utt2dur)")
    args = p.parse_args(argv)
    low = [x for x in args.low.split(",") if x]
    seconds = seconds_per_language(DataDir(args.data))
    for lang, s in seconds.items():
        kind = "low" if lang in low else "high"
        print(f"{args.data}: {lang} ({kind}-resource) {s / 3600:.4f} h ({s:.1f} s)")
    print(f"{args.data}: {imbalance(seconds, low, args.data).line()}")
    return 0


if __name__ == "__main__":
    run_main(main)
