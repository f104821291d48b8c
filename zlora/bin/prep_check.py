"""Check a recipe's inputs before anything long runs: the pretrained model dirs and the corpora.

    python -m zlora.bin.prep_check --whisper_dir DIR --llm_dir DIR [--n_mels 128] \
        [--plan conf/data/lite_1h.yaml --roots.mls DIR ...]

Whisper: a local Hugging Face dir with config.json (num_mel_bins must equal --n_mels),
safetensors weights (model.safetensors, or shards with model.safetensors.index.json, as
Whisper-large-v3 ships) holding the decoder embeddings, and generation_config.json with the
language tokens (what stage 3's LID embeddings read). LLM: config.json, safetensors weights and a tokenizer. Plan: every corpus
split the plan reads must be where its converter looks (zlora/data/prep/<corpus>.py); other
``--key value`` options override the plan like ``python -m zlora.bin.prep_plan``'s. ``--whisper``
and ``--llm`` (the older spellings) still work, with a deprecation warning.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zlora.config import load_config
from zlora.utils.cli import UserError, run_main

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
PROG = "zlora.bin.prep_check"
RENAMED = {"--whisper": "--whisper_dir", "--llm": "--llm_dir"}   # old spelling -> canonical flag


class DeprecatedFlag(argparse.Action):
    """A hidden old spelling of a renamed flag: sets the new flag's value and warns on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG}: {option_string} is deprecated; use {RENAMED[option_string]}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def read_config_json(path: Path, what: str) -> dict:
    if not path.is_dir():
        raise UserError(f"{what}: {path} is not a directory (a local Hugging Face model dir)")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise UserError(f"{what}: {cfg} does not exist")
    if not any(path.glob("*.safetensors")):
        raise UserError(f"{what}: {path} has no *.safetensors weights (zlora loads only safetensors)")
    return json.loads(cfg.read_text(encoding="utf-8"))


def check_whisper(path: Path, n_mels: int) -> str:
    from zlora.models.whisper_files import check_whisper_dir

    cfg = read_config_json(path, "--whisper_dir")
    if cfg.get("model_type") != "whisper":
        raise UserError(f"--whisper_dir: {path}/config.json has model_type {cfg.get('model_type')!r}, not whisper")
    if cfg.get("num_mel_bins") != n_mels:
        raise UserError(f"--whisper_dir: {path} takes {cfg.get('num_mel_bins')} mel bins, the recipe "
                        f"uses {n_mels} (Whisper-large-v3 has 128)")
    # what training and stage 3 (extract_lid) read: the weights, single or sharded, and the
    # language tokens; checked now rather than after hours of training
    try:
        files = check_whisper_dir(path)
    except UserError as e:
        raise UserError(f"--whisper_dir: {e}") from None
    return (f"whisper: {path}: {cfg.get('encoder_layers')} encoder layers, d_model {cfg.get('d_model')}, "
            f"{n_mels} mels, {files}")


def check_plan_languages(plan, whisper: Path) -> None:
    """Every language of the plan needs a Whisper language token: stage 3 takes its LID embedding."""
    from zlora.models.whisper_files import GENERATION_CONFIG, language_tokens

    known = language_tokens(whisper)
    langs = sorted({src.lang for sources in plan.sets.values() for src in sources})
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        raise UserError(f"--whisper_dir: {whisper / GENERATION_CONFIG} has no language token for "
                        f"{', '.join(unknown)} (the plan's languages: {', '.join(langs)}); stage 3 "
                        "needs one per language for the LID embeddings")


def check_llm(path: Path) -> str:
    cfg = read_config_json(path, "--llm_dir")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"--llm_dir: {path} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
    return (f"llm: {path}: {cfg.get('model_type')}, {cfg.get('num_hidden_layers')} layers, "
            f"hidden {cfg.get('hidden_size')}")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    from zlora.data.prep.registry import roots_help

    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"corpus roots a plan may need:\n{roots_help()}")
    p.add_argument("--whisper_dir", help="local Hugging Face Whisper dir (required)")
    p.add_argument("--llm_dir", help="local Hugging Face LLM dir with its tokenizer (required)")
    for old, new in RENAMED.items():
        p.add_argument(old, dest=new[2:], action=DeprecatedFlag, help=argparse.SUPPRESS)
    p.add_argument("--n_mels", type=int, default=128)
    p.add_argument("--plan", help="data plan yaml (zlora/data/prep/plan.py)")
    args, rest = p.parse_known_args(argv)
    missing = [new for new in RENAMED.values() if getattr(args, new[2:]) is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    return args, rest


def main(argv: list[str]) -> int:
    args, rest = parse_args(argv)
    lines = [check_whisper(Path(args.whisper_dir), args.n_mels), check_llm(Path(args.llm_dir))]
    if args.plan:
        from zlora.data.prep.plan import DataPlan, check_sources

        plan = load_config(DataPlan, ["--config", args.plan, *rest])
        check_plan_languages(plan, Path(args.whisper_dir))
        lines += check_sources(plan)
    elif rest:
        raise UserError(f"unexpected arguments {' '.join(rest)} (plan overrides need --plan)")
    print("\n".join(f"prep_check: {line}" for line in lines))
    print("prep_check: OK")
    return 0


if __name__ == "__main__":
    run_main(main)
