"""Train the sentencepiece tokenizer of a from-scratch LLM on the recipe's training text.

    python -m zlora.bin.train_tokenizer --text data/train/text [FILE ...] --vocab_size 500 \
        --out data/lang/bpe [--languages en,fr] [--format kaldi|plain] [--model_type unigram]

Every prompt of zlora/resources/prompts.yaml (or only those of --languages) is added to the
corpus, so the prompts tokenize into real pieces. Writes OUT.model, OUT.vocab and, last,
OUT.provenance.json (the sha256 of the text files and the prompts file, and the options;
zlora.utils.provenance): a rerun with the same inputs keeps the tokenizer, so a model trained with
it stays loadable (EXP/final records the tokenizer's sha256 and refuses another); other inputs
retrain it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zlora.utils.cli import ArgumentParser, run_main
from zlora.utils.io import check_outputs_apart
from zlora.utils.log import get_logger, setup_logging
from zlora.utils.provenance import (describe, differences, file_sha256, files_sha256, read_record, value_sha256,
                                    write_record)

log = get_logger("train_tokenizer")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("train_tokenizer", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", nargs="+", required=True, help="Kaldi text files (or plain, see --format)")
    p.add_argument("--vocab_size", type=int, required=True, help="target size (a soft limit)")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.model and OUT.vocab")
    p.add_argument("--format", choices=["kaldi", "plain"], default="kaldi",
                   help="kaldi: 'utt transcript' lines; plain: one sentence per line")
    p.add_argument("--languages", default=None, help="comma-separated prompt languages (default all)")
    p.add_argument("--model_type", choices=["unigram", "bpe", "char"], default="unigram",
                   help="sentencepiece model type")
    p.add_argument("--character_coverage", type=float, default=1.0,
                   help="share of characters the vocabulary covers (sentencepiece)")
    p.add_argument("--prompts_file", default=None, help="prompts yaml (default: the packaged one), "
                   "as model.prompts_file of the training config")
    p.add_argument("--prompt_symbols", action="store_true",
                   help="make every prompt a single piece (tag prompts like '<|de|>', no whitespace)")
    p.add_alias("--prompts", "--prompts_file")
    return p.parse_args(argv)


def tokenizer_record(args: argparse.Namespace) -> dict:
    """What the tokenizer is made from: the text files' and prompts file's content, the options."""
    from zlora.models.prompts import DEFAULT_PROMPTS_FILE

    options = {k: getattr(args, k) for k in ("vocab_size", "format", "languages", "model_type",
                                             "character_coverage", "prompt_symbols")}
    return {"text": files_sha256(args.text), "prompts": file_sha256(args.prompts_file or DEFAULT_PROMPTS_FILE),
            "options": value_sha256(options)}


def up_to_date(out: str, record: dict) -> bool:
    """True when OUT.model and OUT.vocab were trained from the same inputs (OUT.provenance.json)."""
    if not (Path(f"{out}.model").is_file() and Path(f"{out}.vocab").is_file()):
        return False
    diffs = differences(read_record(f"{out}.provenance.json"), record)
    if diffs:
        log.info("%s.model was trained from other inputs (%s): retraining it", out, describe(diffs))
    return not diffs


def main(argv: list[str]) -> int:
    from zlora.models.tokenizer import train_sentencepiece

    args = parse_args(argv)
    inputs = {f"--text {t}": t for t in args.text} | {"--prompts_file": args.prompts_file}
    for ext in (".model", ".vocab"):
        check_outputs_apart({"--out": f"{args.out}{ext}"}, inputs)
    setup_logging()
    record = tokenizer_record(args)
    if up_to_date(args.out, record):
        log.info("%s.model is up to date (same text, prompts and options); nothing to do", args.out)
        return 0
    langs = [x for x in args.languages.split(",") if x] if args.languages else None
    tok = train_sentencepiece(args.text, args.out, args.vocab_size, kaldi_text=args.format == "kaldi",
                              model_type=args.model_type, character_coverage=args.character_coverage,
                              prompts_file=args.prompts_file, languages=langs,
                              prompt_symbols=args.prompt_symbols)
    write_record(f"{args.out}.provenance.json", record)     # last: marks the pair complete
    log.info("wrote %s.model: %d pieces (eos %d, pad %d)", args.out, tok.vocab_size, tok.eos_id, tok.pad_id)
    return 0


if __name__ == "__main__":
    run_main(main)
