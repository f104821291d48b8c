"""Synthesise the mini12 corpus (12 languages, long-tailed, espeak-ng) into Kaldi data dirs.

    python -m zlora.bin.synth_mini12 --out data [--config conf/synth.yaml] [--counts.train_high 5 ...]

Writes OUT/{foundation,foundation_dev,train_high,train_low_full,dev,test}/ (see
``zlora.data.synth`` for the design), OUT/synth_config.yaml and OUT/synth_stats.json. Splits that
already exist are kept; a different config over an existing OUT is refused.
"""
from __future__ import annotations

from zlora.config import load_config
from zlora.data.synth import SynthConfig, build_corpus
from zlora.data.synth.corpus import format_stats
from zlora.utils.cli import UserError, run_main
from zlora.utils.log import setup_logging

OUT_HELP = "--out DIR (required): where the data dirs go; every other option is a key listed below."


def split_out_arg(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--out DIR`` (or ``--out=DIR``) out of argv; the rest is config overrides."""
    rest, out, i = [], None, 0
    while i < len(argv):
        if argv[i] == "--out" and i + 1 < len(argv):
            out, i = argv[i + 1], i + 2
        elif argv[i].startswith("--out="):
            out, i = argv[i][len("--out="):], i + 1
        else:
            rest.append(argv[i])
            i += 1
    return out, rest


def main(argv: list[str]) -> int:
    setup_logging()
    out, rest = split_out_arg(argv)
    # --help: this docstring, --out, then every key of SynthConfig
    cfg = load_config(SynthConfig, rest, description=f"{__doc__}\n{OUT_HELP}")
    if not out:
        raise UserError("--out DIR is required (where the data dirs go)")
    stats = build_corpus(cfg, out)
    print(format_stats(stats))
    return 0


if __name__ == "__main__":
    run_main(main)
