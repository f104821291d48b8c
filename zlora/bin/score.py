"""Score decoded hypotheses against references: WER/CER per language (paper §V-B).

    python -m zlora.bin.score --ref data/test/text --hyp exp/x/decode_test/text \
        --utt2lang data/test/utt2lang --out exp/x/decode_test/score \
        [--preserve_marks th,ar] \
        [--method Zipper-LoRA-Soft --regime chunked --seed 0 --test_set test \
         --exp exp/x --command "python -m zlora.bin.train ..." --command "..."]

Writes OUT/errs-<lang>.txt (per-utterance alignments), OUT/summary.md, and last
OUT/result.json ({lang: {metric, errors, ref_units, rate, sub, del, ins, utts}}); prints the
table. With --method, OUT/meta.json records the run for zlora.bin.report (method, regime,
seed, test set, exp, config, the commands given plus this one, and the git revision).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zlora.scoring.report import RunMeta, command_line, exp_config, git_revision, write_meta
from zlora.scoring.score import format_table, score_files, write_outputs
from zlora.utils.cli import ArgumentParser, run_main
from zlora.utils.io import check_outputs_apart
from zlora.utils.log import get_logger, setup_logging

log = get_logger("score")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("score", description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="reference Kaldi text")
    p.add_argument("--hyp", required=True, help="hypothesis Kaldi text (from zlora.bin.decode)")
    p.add_argument("--utt2lang", required=True, help="utt -> language code")
    p.add_argument("--out", required=True, help="output dir (result.json, summary.md, errs-<lang>.txt)")
    p.add_argument("--strict", action="store_true", help="a reference utterance without a hypothesis is "
                   "an error (default: scored as all deletions and marked in result.json and RESULTS.md)")
    p.add_argument("--preserve_marks", default="", help="comma-separated languages whose combining "
                   "marks are kept (default: none, as Whisper's basic normaliser)")
    meta = p.add_argument_group("run description for the report (meta.json, written if --method is given)")
    meta.add_argument("--method", help="row label, e.g. Vanilla-LoRA")
    meta.add_argument("--regime", choices=["chunked", "full"], help="encoder regime")
    meta.add_argument("--seed", type=int, help="training seed of the run (default: the seed in "
                      "--exp's config.yaml)")
    meta.add_argument("--test_set", default="test", help="name of the scored test set")
    meta.add_argument("--exp", help="experiment dir (its config.yaml is recorded)")
    meta.add_argument("--command", action="append", default=[], help="a command that produced the "
                      "hypotheses (repeatable, in order)")
    p.add_alias("--outdir", "--out")
    args = p.parse_args(argv)
    if args.method and not args.regime:
        p.error("--method needs --regime chunked|full")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_outputs_apart({"--out": args.out}, {"--ref": args.ref, "--hyp": args.hyp, "--utt2lang": args.utt2lang})
    setup_logging()
    marks = [x for x in args.preserve_marks.split(",") if x]
    report = score_files(args.ref, args.hyp, args.utt2lang, marks, strict=args.strict)
    sources = {"reference": args.ref, "hypothesis": args.hyp, "utt2lang": args.utt2lang}
    if args.method:
        write_meta(args.out, run_meta(args, argv))
    result = write_outputs(report, args.out, sources, marks)
    print(format_table(result))
    log.info("wrote %s", Path(args.out) / "result.json")
    return 0


def run_meta(args: argparse.Namespace, argv: list[str]) -> RunMeta:
    config, seed = None, args.seed
    if args.exp and (Path(args.exp) / "config.yaml").is_file():
        config = str(Path(args.exp) / "config.yaml")
        if seed is None:        # the run's own seed: two seeds of one method must not collide
            recorded = exp_config(args.exp).get("seed")
            seed = recorded if isinstance(recorded, int) else None
    return RunMeta(method=args.method, regime=args.regime, seed=seed, test_set=args.test_set,
                   exp=args.exp, config=config, git=git_revision(Path(__file__).parent),
                   commands=[*args.command, command_line(argv, "python -m zlora.bin.score")])


if __name__ == "__main__":
    run_main(main)
