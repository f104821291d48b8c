"""Tokenizers behind one small protocol: ``encode``, ``decode``, ``eos_id``, ``pad_id``, ``vocab_size``.

- :class:`HFTokenizer` wraps the tokenizer shipped in a pretrained LLM's local directory.
- :class:`SentencePieceTokenizer` serves from-scratch LLMs; :func:`train_sentencepiece` builds its
  model from the recipe's training text plus every prompt of prompts.yaml (so the prompts never
  fall apart into byte pieces or unknowns).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Protocol

from zlora.config import ConfigError
from zlora.models.prompts import load_prompts, prompts_for
from zlora.utils.cli import UserError


class Tokenizer(Protocol):
    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class SentencePieceTokenizer:
    """A sentencepiece model; ids 0 pad, 1 unk, 2 eos when trained by :func:`train_sentencepiece`."""

    def __init__(self, model_file: str | os.PathLike):
        import sentencepiece as spm

        if not Path(model_file).is_file():
            raise ConfigError(f"{model_file}: sentencepiece model not found "
                              "(train one with python -m zlora.bin.train_tokenizer)")
        self.model_file = str(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_file)
        self.eos_id = self.sp.eos_id()
        if self.eos_id < 0:
            raise ConfigError(f"{model_file}: the sentencepiece model has no eos piece")
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]`` in one call (sentencepiece's C++ loop)."""
        return self.sp.encode(texts, out_type=int)

    def fingerprint(self) -> str:
        """sha256 of the model file: what decides the ids (zlora.data.tokens caches by it)."""
        return _files_sha256([Path(self.model_file)])

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (self.eos_id, self.pad_id)])


class HFTokenizer:
    """The tokenizer of a local Hugging Face LLM directory (special tokens are never added)."""

    def __init__(self, model_dir: str | os.PathLike):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.eos_id = self.tok.eos_token_id
        if self.eos_id is None:
            raise ConfigError(f"{model_dir}: the tokenizer defines no eos token")
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_id
        self.vocab_size = len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]`` in one call (a fast tokenizer batches in Rust)."""
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def fingerprint(self) -> str:
        """sha256 of the directory's tokenizer files (tokenizer*.json, vocab, merges, special and
        added tokens, sentencepiece models): what decides the ids."""
        names = ("vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "vocab.txt")
        files = [p for p in sorted(self.model_dir.iterdir()) if p.is_file() and (
            p.name.startswith("tokenizer") or p.name in names or p.suffix == ".model")]
        return _files_sha256(files)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


# The files a Hugging Face tokenizer is read from (those a model dir has).
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "merges.txt",
                      "special_tokens_map.json", "added_tokens.json")


def tokenizer_file(llm_cfg) -> Path:
    """Where an LLM config's tokenizer lives: the sentencepiece model, or the HF model dir."""
    return Path(llm_cfg.tokenizer) if llm_cfg.tokenizer else Path(llm_cfg.model_dir)


def tokenizer_fingerprint(llm_cfg) -> str | None:
    """sha256 of the tokenizer's files (None when they are missing): a model records the one it
    was trained with, and loading it with another (retrained, same path) is an error."""
    from zlora.utils.provenance import file_sha256, files_sha256

    path = tokenizer_file(llm_cfg)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return files_sha256(path / name for name in HF_TOKENIZER_FILES)
    return None


def _files_sha256(files: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def read_training_text(text_files: Iterable[str | os.PathLike], kaldi_text: bool = True) -> list[str]:
    """Transcripts from Kaldi ``text`` files (``utt transcript``) or plain one-sentence lines."""
    lines = []
    for path in text_files:
        try:
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    line = line.rstrip("\n")
                    if kaldi_text:
                        parts = line.split(maxsplit=1)
                        if not parts:
                            raise UserError(f"{path}:{n}: empty line in a Kaldi text file")
                        line = parts[1] if len(parts) > 1 else ""
                    if line.strip():
                        lines.append(line.strip())
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 ({e})") from e
    if not lines:
        raise UserError(f"no training text in {', '.join(map(str, text_files))}")
    return lines


def train_sentencepiece(text_files: list[str | os.PathLike], out_prefix: str | os.PathLike,
                        vocab_size: int, kaldi_text: bool = True, model_type: str = "unigram",
                        character_coverage: float = 1.0, byte_fallback: bool = False,
                        prompts_file: str | None = None,
                        languages: list[str] | None = None,
                        prompt_symbols: bool = False) -> SentencePieceTokenizer:
    """Train ``out_prefix.model``/``.vocab`` on the transcripts plus the prompts of ``languages``
    (default: every prompt in the prompts file); returns it.

    Ids: 0 pad, 1 unk, 2 eos, no bos (the LLM input starts with the prompt). Normalisation is
    ``identity`` so decode(encode(x)) == x and scoring sees exactly what the model wrote (NFKC
    would silently rewrite e.g. full-width digits). ``vocab_size`` is a soft limit: a tiny corpus
    gets a smaller vocabulary instead of an error.

    ``prompt_symbols``: every prompt becomes one piece (a sentencepiece user-defined symbol), for
    tag prompts such as ``<|de|>``; prompts containing whitespace are refused, since sentencepiece
    splits at whitespace before matching symbols.
    """
    import sentencepiece as spm

    prompts = load_prompts(prompts_file) if languages is None else prompts_for(languages, prompts_file)
    symbols = _prompt_symbols(prompts, prompts_file) if prompt_symbols else []
    lines = read_training_text(text_files, kaldi_text) + list(prompts.values())
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_prefix.parent) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(Path(tmp) / "sp"), vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage,
                byte_fallback=byte_fallback, normalization_rule_name="identity",
                pad_id=0, unk_id=1, eos_id=2, bos_id=-1, hard_vocab_limit=False,
                user_defined_symbols=symbols, minloglevel=2, num_threads=1)
        except RuntimeError as e:
            raise UserError(f"sentencepiece training for {out_prefix} failed: {e}") from e
        for ext in (".vocab", ".model"):  # .model last: its presence means the pair is complete
            os.replace(Path(tmp) / f"sp{ext}", f"{out_prefix}{ext}")
    return SentencePieceTokenizer(f"{out_prefix}.model")


def _prompt_symbols(prompts: dict[str, str], prompts_file: str | None) -> list[str]:
    """The prompts as user-defined symbols; a prompt with whitespace is an error naming it."""
    for lang, text in prompts.items():
        if text != text.strip() or any(c.isspace() for c in text):
            raise UserError(f"{prompts_file or 'the packaged prompts file'}: prompt for {lang!r} "
                            f"({text!r}) contains whitespace, so it cannot be one tokenizer piece; "
                            "use single-token tags such as '<|de|>' with prompt symbols")
    return list(dict.fromkeys(prompts.values()))
