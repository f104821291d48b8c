"""Combine Kaldi text files (e.g. per-language decodes) into one, sorted by utterance id.

    python -m zlora.bin.combine_text --out exp/lre/experts/decode_test/text \
        exp/lre/expert_de/decode_test/text exp/lre/expert_en/decode_test/text ...

Lines are kept verbatim; an utterance id in two inputs is an error naming both files (one
decode per utterance). The output is written under a temporary name and renamed, so a combined
file never looks complete while it is not.
"""
from __future__ import annotations

import argparse

from zlora.scoring.textio import read_transcripts
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import atomic_write_text, check_outputs_apart


def combine(paths: list[str]) -> str:
    """The inputs' lines, sorted by utterance id (checked with read_transcripts: no blank or
    duplicate lines, valid UTF-8)."""
    lines: dict[str, tuple[str, str]] = {}
    for path in paths:
        read_transcripts(path, "text")       # validates the file, with line numbers in errors
        with open(path, encoding="utf-8") as f:
            for line in f:
                utt = line.split(maxsplit=1)[0]
                if utt in lines:
                    raise UserError(f"utterance {utt!r} is in both {lines[utt][0]} and {path}")
                lines[utt] = (path, line.rstrip("\n"))
    return "".join(f"{lines[u][1]}\n" for u in sorted(lines))


def main(argv: list[str]) -> int:
    p = ArgumentParser("combine_text", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="combined text file to write")
    p.add_argument("texts", nargs="+", help="Kaldi text files")
    args = p.parse_args(argv)
    text = combine(args.texts)
    check_outputs_apart({"--out": args.out}, {f"input {t}": t for t in args.texts})
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}: {text.count(chr(10))} utterances from {len(args.texts)} files")
    return 0


if __name__ == "__main__":
    run_main(main)
