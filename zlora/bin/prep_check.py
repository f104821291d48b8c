"""Check a recipe's inputs before anything long runs: the pretrained model dirs and the corpora.

    python -m zlora.bin.prep_check --whisper DIR --llm DIR [--n_mels 128] \
        [--plan conf/data/lite_1h.yaml --roots.mls DIR ...]

Whisper: a local Hugging Face dir with config.json (num_mel_bins must equal --n_mels) and
safetensors weights. LLM: config.json, safetensors weights and a tokenizer. Plan: every corpus
split the plan reads must be where its converter looks (zlora/data/prep/<corpus>.py); other
``--key value`` options override the plan like ``python -m zlora.bin.prep_plan``'s.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from zlora.config import load_config
from zlora.utils.cli import UserError, run_main

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


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
    cfg = read_config_json(path, "--whisper")
    if cfg.get("model_type") != "whisper":
        raise UserError(f"--whisper: {path}/config.json has model_type {cfg.get('model_type')!r}, not whisper")
    if cfg.get("num_mel_bins") != n_mels:
        raise UserError(f"--whisper: {path} takes {cfg.get('num_mel_bins')} mel bins, the recipe "
                        f"uses {n_mels} (Whisper-large-v3 has 128)")
    return (f"whisper: {path}: {cfg.get('encoder_layers')} encoder layers, d_model {cfg.get('d_model')}, "
            f"{n_mels} mels")


def check_llm(path: Path) -> str:
    cfg = read_config_json(path, "--llm")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"--llm: {path} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
    return (f"llm: {path}: {cfg.get('model_type')}, {cfg.get('num_hidden_layers')} layers, "
            f"hidden {cfg.get('hidden_size')}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m zlora.bin.prep_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--whisper", required=True)
    p.add_argument("--llm", required=True)
    p.add_argument("--n_mels", type=int, default=128)
    p.add_argument("--plan", help="data plan yaml (zlora/data/prep/plan.py)")
    args, rest = p.parse_known_args(argv)
    lines = [check_whisper(Path(args.whisper), args.n_mels), check_llm(Path(args.llm))]
    if args.plan:
        from zlora.data.prep.plan import DataPlan, check_sources

        lines += check_sources(load_config(DataPlan, ["--config", args.plan, *rest]))
    elif rest:
        raise UserError(f"unexpected arguments {' '.join(rest)} (plan overrides need --plan)")
    print("\n".join(f"prep_check: {line}" for line in lines))
    print("prep_check: OK")
    return 0


if __name__ == "__main__":
    run_main(main)
