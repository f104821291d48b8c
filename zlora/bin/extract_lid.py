"""Extract Whisper LID embeddings (§IV-E) for the router, and their cosine heatmap (Fig. 7).

Usage: python -m zlora.bin.extract_lid --whisper_dir DIR --languages en,fr,de OUT.safetensors
           [--center] [--heatmap PNG]

OUT holds one (d_model,) float32 tensor per language, keyed by its code, with the language order,
centring and source dir in the metadata. --center subtracts the mean over all of Whisper's language
tokens (see zlora.models.lid). Outputs are written atomically.
"""
from __future__ import annotations

import argparse
import json

from safetensors.torch import save_file

from zlora.models.lid import cosine_matrix, lid_embeddings, plot_cosine_heatmap
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import atomic_save_file
from zlora.utils.log import get_logger, setup_logging

log = get_logger("extract_lid")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser("extract_lid", description=__doc__.splitlines()[0])
    parser.add_argument("--whisper_dir", required=True, help="converted Whisper dir (zlora.bin.convert_whisper)")
    parser.add_argument("--languages", required=True, help="comma-separated Whisper language codes, e.g. en,fr,de")
    parser.add_argument("--center", action="store_true", help="subtract the mean over all language tokens")
    parser.add_argument("--heatmap", default=None, help="also write a cosine-similarity heatmap PNG here")
    parser.add_argument("out", help="output .safetensors file")
    parser.add_alias("--whisper", "--whisper_dir")
    parser.add_alias("--langs", "--languages")
    args = parser.parse_args(argv)
    args.languages = [x.strip() for x in args.languages.split(",") if x.strip()]
    if not args.languages:
        raise UserError("--languages is empty")
    return args


def format_matrix(langs: list[str], matrix) -> str:
    rows = ["      " + " ".join(f"{lang:>6}" for lang in langs)]
    rows += [f"{a:>5} " + " ".join(f"{float(v):6.2f}" for v in matrix[i]) for i, a in enumerate(langs)]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup_logging()
    emb = lid_embeddings(args.whisper_dir, args.languages, center=args.center)
    meta = {"languages": json.dumps(args.languages), "center": str(args.center).lower(),
            "whisper": str(args.whisper_dir), "source": "decoder token embeddings of <|lang|> (zlora.models.lid)"}
    atomic_save_file(lambda tmp: save_file(emb, tmp, metadata=meta), args.out)
    sims = cosine_matrix(emb, args.languages)
    log.info("wrote %d x %d LID embeddings to %s; cosine similarities:\n%s",
             len(args.languages), next(iter(emb.values())).numel(), args.out, format_matrix(args.languages, sims))
    if args.heatmap:
        title = f"Whisper LID embeddings{' (centred)' if args.center else ''}: cosine similarity"
        plot_cosine_heatmap(args.languages, sims, args.heatmap, title=title)
        log.info("wrote heatmap %s", args.heatmap)
    return 0


if __name__ == "__main__":
    run_main(main)
