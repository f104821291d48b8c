"""Convert one corpus split from its official layout into a Kaldi data dir (with utt2lang).

    python -m zlora.bin.prep_corpus librispeech --split test-clean ROOT OUT
    python -m zlora.bin.prep_corpus mls --lang de --split train [--release auto|flac|opus] ROOT OUT
    python -m zlora.bin.prep_corpus commonvoice --lang zh --locale zh-CN --split test ROOT OUT
    python -m zlora.bin.prep_corpus msr86k --lang en --split dev ROOT OUT
    python -m zlora.bin.prep_corpus wenetspeech --split TEST_NET [--min_confidence 0] ROOT OUT
    python -m zlora.bin.prep_corpus map-ids --data DIR LIST OUT

Layouts are described in zlora/data/prep/<corpus>.py. Every command takes ``--skip_missing``
(utterances whose audio file is missing are skipped and counted instead of failing). OUT gets
wav.scp, text, utt2spk, spk2utt, utt2lang (+ segments, utt2dur for WenetSpeech and segmented
MSR-86K), utt2corpusid and prep.yaml. ``map-ids`` turns a list of corpus ids (e.g. the paper
authors' ``common_voice_ar_24042033`` lists) into the utterance ids of DIR, for
``utils/subset_data_dir.sh --utt-list``.
"""
from __future__ import annotations

import argparse

from zlora.data.prep import map_corpus_ids, prepare, read_id_list
from zlora.utils.cli import run_main
from zlora.utils.io import atomic_write_text
from zlora.utils.log import setup_logging

DEFAULT_LANG = {"librispeech": "en", "wenetspeech": "zh"}


def add_common(p: argparse.ArgumentParser, corpus: str) -> None:
    p.add_argument("--lang", default=DEFAULT_LANG.get(corpus), required=corpus not in DEFAULT_LANG,
                   help="ISO 639-1 language code written to utt2lang")
    p.add_argument("--split", required=True, help="corpus split (WenetSpeech: subset, e.g. L, TEST_NET)")
    p.add_argument("--skip_missing", action="store_true", help="skip utterances whose audio is missing")
    p.add_argument("root", help="corpus root (see zlora/data/prep/<corpus>.py)")
    p.add_argument("out", help="output Kaldi data dir (replaced atomically)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zlora.bin.prep_corpus", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for corpus in ("librispeech", "mls", "commonvoice", "msr86k", "wenetspeech"):
        add_common(sub.add_parser(corpus, help=f"convert {corpus}"), corpus)
    sub.choices["mls"].add_argument("--release", default="auto", choices=["auto", "flac", "opus"])
    sub.choices["commonvoice"].add_argument("--locale", help="CV locale dir if not --lang (e.g. zh-CN)")
    sub.choices["wenetspeech"].add_argument("--min_confidence", type=float, default=0.0,
                                            help="drop segments with a lower label confidence")
    m = sub.add_parser("map-ids", help="map corpus ids (or utterance ids) to DIR's utterance ids")
    m.add_argument("--data", required=True, help="prepared data dir (with utt2corpusid)")
    m.add_argument("list", help="file: one id per line (first field)")
    m.add_argument("out", help="output file: utterance ids, sorted")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup_logging()
    if args.command == "map-ids":
        utts = map_corpus_ids(args.data, read_id_list(args.list), args.list)
        atomic_write_text(args.out, "".join(f"{u}\n" for u in utts))
        print(f"prep_corpus map-ids: {args.out}: {len(utts)} utterance ids")
        return 0
    options = {k: getattr(args, k) for k in ("release", "locale", "min_confidence")
               if getattr(args, k, None) is not None}
    counts = prepare(args.command, args.root, args.lang, args.split, args.out,
                     skip_missing=args.skip_missing, **options)
    print(f"prep_corpus: {args.out}: {counts['utterances']} utterances, {counts['speakers']} speakers"
          + (f", skipped {counts['skipped']}" if counts["skipped"] else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
