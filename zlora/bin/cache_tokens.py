"""Tokenise the transcripts of data dirs once, in data prep, for every later training run.

Usage: python -m zlora.bin.cache_tokens (--llm_dir DIR | --tokenizer X.model) DATA [DATA ...]

Writes DATA/.tokens/<key>.npz (zlora.data.tokens): the token ids of every line of DATA/text and
whether it has a letter or digit. The key covers the text file and the tokenizer's files, so
training (``data.token_cache: true``, the default) reads it on every rank instead of tokenising,
and an edited transcript or another tokenizer simply gets a new file. A current cache is kept.
"""
from __future__ import annotations

from zlora.data.kaldi import FIELD_COUNTS, DataDir, read_table
from zlora.data.tokens import cache_dir_for, transcript_tokens
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.log import setup_logging


def main(argv: list[str]) -> int:
    p = ArgumentParser("cache_tokens", description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="Kaldi data dirs (their text files are tokenised)")
    p.add_argument("--llm_dir", default=None, help="local Hugging Face LLM dir: its tokenizer "
                   "(model.llm.model_dir of the training config)")
    p.add_argument("--tokenizer", default=None, help="sentencepiece .model (model.llm.tokenizer of a "
                   "from-scratch LLM config)")
    args = p.parse_args(argv)
    if (args.llm_dir is None) == (args.tokenizer is None):
        raise UserError("give exactly one of --llm_dir (a Hugging Face LLM dir) or --tokenizer (a sentencepiece model)")
    setup_logging()
    from zlora.models.tokenizer import HFTokenizer, SentencePieceTokenizer

    tok = HFTokenizer(args.llm_dir) if args.llm_dir else SentencePieceTokenizer(args.tokenizer)
    for data in args.data:
        path = DataDir(data).path / "text"
        _, texts = read_table(path, FIELD_COUNTS["text"])
        ids, _ = transcript_tokens(path, texts, tok, cache_dir_for(data))
        print(f"cache_tokens: {path}: {len(texts)} transcripts, {len(ids.flat)} tokens, in {cache_dir_for(data)}")
    return 0


if __name__ == "__main__":
    run_main(main)
