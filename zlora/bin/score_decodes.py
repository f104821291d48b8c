"""Score decode dirs, each labelled from the configs it was made with (one process for all).

    python -m zlora.bin.score_decodes [--regime full] EXP/decode_SET [EXP2/decode_SET2_wlid ...]

A decode dir written by ``zlora.bin.decode`` holds ``decode.yaml``: the model (``exp``), the data
dir and the language mode. For each dir this runs exactly ``python -m zlora.bin.score --ref
DATA/text --hyp DIR/text --utt2lang DATA/utt2lang --out DIR/score --method LABEL --regime
REGIME --seed SEED --test_set SET --exp EXP`` (that command is what ``meta.json`` records), where

* LABEL is ``zlora.scoring.report.decode_label`` of EXP/config.yaml and the decode's language
  mode: "Foundation (stage 1)", "Zipper-LoRA-Soft + initial-B", "LoRA-KD (LID: Whisper)", ...;
* SEED is the training run's ``seed``; SET is the name of the data dir (``data/test`` -> test).

Why one verb: the labels come from the resolved configs (no method -> label table in a recipe),
and the adapter registry they need costs ~1.6 s of torch imports, paid once instead of per dir.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zlora.bin import score
from zlora.scoring.report import decode_label, exp_config, read_yaml_dict
from zlora.utils.cli import ArgumentParser, UserError, run_main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("score_decodes", description=__doc__.split("\n\n")[0])
    p.add_argument("--regime", choices=["chunked", "full"], default="full",
                   help="encoder regime recorded for the report (default full)")
    p.add_argument("decode_dirs", nargs="+", help="decode dirs of zlora.bin.decode (with decode.yaml and text)")
    return p.parse_args(argv)


def score_argv(decode_dir: str, regime: str) -> list[str]:
    """The zlora.bin.score arguments for one decode dir (see the module docstring)."""
    dec = read_yaml_dict(Path(decode_dir) / "decode.yaml", "decoding config (run zlora.bin.decode first)")
    for key in ("exp", "data"):
        if not isinstance(dec.get(key), str):
            raise UserError(f"{decode_dir}/decode.yaml: '{key}' must be one path, got {dec.get(key)!r}")
    cfg = exp_config(dec["exp"])
    lang = dec.get("lang") or {"mode": dec.get("lang_mode", "known"),          # decode.yaml before lang.*
                               "router_input": dec.get("router_input", "hard")}
    label = decode_label(cfg, lang.get("mode", "known"), lang.get("router_input", "hard"))
    data = dec["data"].rstrip("/")
    return ["--ref", f"{data}/text", "--hyp", f"{decode_dir}/text", "--utt2lang", f"{data}/utt2lang",
            "--out", f"{decode_dir}/score", "--method", label, "--regime", regime,
            "--seed", str(cfg.get("seed", 0)), "--test_set", Path(data).name, "--exp", dec["exp"]]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Every dir's arguments first: a bad dir fails before any score is (re)written.
    jobs = [score_argv(d.rstrip("/"), args.regime) for d in args.decode_dirs]
    for job in jobs:
        score.main(job)
    return 0


if __name__ == "__main__":
    run_main(main)
