"""Check a Kaldi data dir; print a one-line summary or fail naming file, line and utterance.

Usage: python -m zlora.bin.validate_data_dir [--no_text] [--no_audio_check] [--languages en,fr] DIR
(``utils/validate_data_dir.sh`` is a thin wrapper around this.)
"""
from __future__ import annotations

import argparse

from zlora.data.kaldi import validate_data_dir
from zlora.utils.cli import ArgumentParser, run_main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("validate_data_dir", prog="validate_data_dir.sh", description=__doc__.splitlines()[0])
    p.add_argument("data", help="the data directory")
    p.add_argument("--no_text", action="store_true", help="text is optional (e.g. unlabelled audio)")
    p.add_argument("--no_audio_check", action="store_true",
                   help="do not decode the audio (faster; misses missing/corrupt audio)")
    p.add_argument("--languages", default=None,
                   help="comma-separated language codes allowed in utt2lang (default: Whisper's)")
    p.add_alias("--langs", "--languages")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    langs = args.languages.split(",") if args.languages else None
    summary = validate_data_dir(args.data, known_langs=langs, check_audio=not args.no_audio_check,
                                require_text=not args.no_text)
    print(summary.line())
    return 0


if __name__ == "__main__":
    run_main(main)
