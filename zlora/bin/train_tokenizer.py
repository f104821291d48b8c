"""Train the sentencepiece tokenizer of a from-scratch LLM on the recipe's training text.

    python -m zlora.bin.train_tokenizer --text data/train/text [FILE ...] --vocab_size 500 \
        --out data/lang/bpe [--languages en,fr] [--format kaldi|plain] [--model_type unigram]

Every prompt of zlora/resources/prompts.yaml (or only those of --languages) is added to the
corpus, so the prompts tokenize into real pieces. Writes OUT.model and OUT.vocab.
"""
from __future__ import annotations

import argparse

from zlora.utils.cli import ArgumentParser, run_main
from zlora.utils.log import get_logger, setup_logging

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


def main(argv: list[str]) -> int:
    from zlora.models.tokenizer import train_sentencepiece

    args = parse_args(argv)
    setup_logging()
    langs = [x for x in args.languages.split(",") if x] if args.languages else None
    tok = train_sentencepiece(args.text, args.out, args.vocab_size, kaldi_text=args.format == "kaldi",
                              model_type=args.model_type, character_coverage=args.character_coverage,
                              prompts_file=args.prompts_file, languages=langs,
                              prompt_symbols=args.prompt_symbols)
    log.info("wrote %s.model: %d pieces (eos %d, pad %d)", args.out, tok.vocab_size, tok.eos_id, tok.pad_id)
    return 0


if __name__ == "__main__":
    run_main(main)
