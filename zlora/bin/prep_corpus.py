"""Convert one corpus split from its official layout into a Kaldi data dir (with utt2lang).

    python -m zlora.bin.prep_corpus librispeech --split test-clean ROOT --out OUT
    python -m zlora.bin.prep_corpus mls --lang de --split train [--release auto|flac|opus] ROOT --out OUT
    python -m zlora.bin.prep_corpus commonvoice --lang zh --locale zh-CN --split test ROOT --out OUT
    python -m zlora.bin.prep_corpus msr86k --lang en --split dev ROOT --out OUT
    python -m zlora.bin.prep_corpus wenetspeech --split TEST_NET [--min_confidence 0] ROOT --out OUT
    python -m zlora.bin.prep_corpus map-ids --data DIR LIST --out OUT

One subcommand per registered corpus (zlora.data.prep.CORPORA), with that corpus's own options as
flags; layouts are described in zlora/data/prep/<corpus>.py. Every command takes
``--skip_missing`` (utterances whose audio file is missing are skipped and counted instead of
failing). OUT gets wav.scp, text, utt2spk, spk2utt, utt2lang (+ segments, utt2dur for WenetSpeech
and segmented MSR-86K), utt2corpusid and prep.yaml. ``map-ids`` turns a list of corpus ids (e.g.
the paper authors' ``common_voice_ar_24042033`` lists) into the utterance ids of DIR, for
``utils/subset_data_dir.sh --utt-list``. OUT given as a last positional argument (the older form)
still works, with a deprecation warning.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing

from zlora.data.prep import CORPORA, CorpusSpec, map_corpus_ids, prepare, read_id_list
from zlora.utils.cli import run_main
from zlora.utils.io import atomic_write_text
from zlora.utils.log import setup_logging

PROG = "zlora.bin.prep_corpus"


def parse_bool(v: str) -> bool:
    if v.lower() not in ("true", "false"):
        raise ValueError(v)
    return v.lower() == "true"


def option_flag(p: argparse.ArgumentParser, f: dataclasses.Field, tp) -> None:
    """``--<field>`` for one field of a corpus's options dataclass (choices for a Literal)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]                                          # Optional[X] -> X
    # dest prefixed: an option may not shadow --lang, --out or the namespace's own attributes
    kw: dict = {"dest": f"option_{f.name}", "help": f.metadata.get("help"),
                "default": None if f.default is dataclasses.MISSING else f.default}
    if typing.get_origin(tp) is typing.Literal:
        kw["choices"] = list(typing.get_args(tp))
    else:
        kw["metavar"] = f.name.upper()
        kw["type"] = parse_bool if tp is bool else tp if tp in (int, float, str) else None
    p.add_argument(f"--{f.name}", **kw)


def add_corpus(sub, spec: CorpusSpec) -> None:
    p = sub.add_parser(spec.name, help=f"convert {spec.name} (ROOT: {spec.layout})",
                       description=f"Convert one {spec.name} split. ROOT: {spec.layout}.")
    p.add_argument("--lang", default=spec.default_lang, required=spec.default_lang is None,
                   help="ISO 639-1 language code written to utt2lang"
                   + (f" (default {spec.default_lang})" if spec.default_lang else ""))
    p.add_argument("--split", required=True, help="corpus split (WenetSpeech: subset, e.g. L, TEST_NET)")
    p.add_argument("--skip_missing", action="store_true", help="skip utterances whose audio is missing")
    hints = spec.option_types()
    for f in spec.option_fields():
        option_flag(p, f, hints[f.name])
    p.add_argument("root", help=f"corpus root: {spec.layout}")
    add_out(p, "output Kaldi data dir (replaced atomically)")
    p.set_defaults(option_names=[f.name for f in spec.option_fields()])


def add_out(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--out", help=f"{help} (required)")
    p.add_argument("out_positional", nargs="?", help=argparse.SUPPRESS)   # deprecated form


def resolve_out(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """--out, or the deprecated positional OUT (with a warning); exactly one of them."""
    if args.out_positional is not None:
        if args.out is not None:
            p.error("give the output once: --out OUT (a positional OUT is the deprecated form)")
        print(f"{PROG}: positional OUT is deprecated; use --out OUT", file=sys.stderr)
        return args.out_positional
    if args.out is None:
        p.error("the following arguments are required: --out")
    return args.out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in CORPORA.names():
        add_corpus(sub, CORPORA.get(name))
    m = sub.add_parser("map-ids", help="map corpus ids (or utterance ids) to DIR's utterance ids")
    m.add_argument("--data", required=True, help="prepared data dir (with utt2corpusid)")
    m.add_argument("list", help="file: one id per line (first field)")
    add_out(m, "output file: utterance ids, sorted")
    args = p.parse_args(argv)
    args.out = resolve_out(sub.choices[args.command], args)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup_logging()
    if args.command == "map-ids":
        utts = map_corpus_ids(args.data, read_id_list(args.list), args.list)
        atomic_write_text(args.out, "".join(f"{u}\n" for u in utts))
        print(f"prep_corpus map-ids: {args.out}: {len(utts)} utterance ids")
        return 0
    # options with no value (e.g. commonvoice's locale unless given) are left out, as before:
    # prep.yaml and the plan's prepared-dir names record the options as given
    options = {k: getattr(args, f"option_{k}") for k in args.option_names
               if getattr(args, f"option_{k}") is not None}
    counts = prepare(args.command, args.root, args.lang, args.split, args.out,
                     skip_missing=args.skip_missing, **options)
    print(f"prep_corpus: {args.out}: {counts['utterances']} utterances, {counts['speakers']} speakers"
          + (f", skipped {counts['skipped']}" if counts["skipped"] else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
