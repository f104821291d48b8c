"""Extract Whisper LID embeddings (§IV-E) for the router, and their cosine heatmap (Fig. 7).

Usage: python -m zlora.bin.extract_lid --whisper_dir DIR --languages en,fr,de OUT.safetensors
           [--center] [--heatmap PNG]

OUT holds one (d_model,) float32 tensor per language, keyed by its code, with the language order,
centring and source dir in the metadata. --center subtracts the mean over all of Whisper's language
tokens (see zlora.models.lid). Outputs are written atomically. The metadata's ``provenance`` record
(the sha256 of the Whisper files, the languages, the centring; zlora.utils.provenance) lets a rerun
keep an up-to-date OUT and redo one made from other weights or options.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from zlora.models.lid import cosine_matrix, lid_embeddings, plot_cosine_heatmap
from zlora.models.whisper_files import provenance_files
from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import CheckpointError, atomic_save_file, check_outputs_apart, load_tensors, read_metadata
from zlora.utils.log import get_logger, setup_logging
from zlora.utils.provenance import describe, differences, files_sha256

log = get_logger("extract_lid")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser("extract_lid", description=__doc__.splitlines()[0])
    parser.add_argument("--whisper_dir", required=True, help="local Hugging Face Whisper dir (single model.safetensors or shards + index)")
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


def lid_record(args: argparse.Namespace) -> dict:
    """What the embeddings are made from: the Whisper files' content, the languages (in order), the
    centring."""
    whisper = Path(args.whisper_dir)
    files = provenance_files(whisper) if whisper.is_dir() else []
    return {"whisper": files_sha256(files), "languages": list(args.languages), "center": bool(args.center)}


def up_to_date(out: str, record: dict) -> bool:
    """True when ``out`` was written from the same inputs (its metadata's provenance record)."""
    if not Path(out).is_file():
        return False
    try:
        recorded = json.loads(read_metadata(Path(out)).get("provenance", "null"))
    except (CheckpointError, ValueError):
        recorded = None
    diffs = differences(recorded, record)
    if diffs:
        log.info("%s was made from other inputs (%s): redoing it", out, describe(diffs))
    return not diffs


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_outputs_apart({"OUT": args.out}, {"--whisper_dir": args.whisper_dir})
    setup_logging()
    record = lid_record(args)
    if up_to_date(args.out, record):
        log.info("%s is up to date (same Whisper weights, languages and centring); nothing to do", args.out)
        if not args.heatmap or Path(args.heatmap).is_file():
            return 0
        emb = load_tensors(Path(args.out), "LID embeddings")
    else:
        emb = lid_embeddings(args.whisper_dir, args.languages, center=args.center)
        meta = {"languages": json.dumps(args.languages), "center": str(args.center).lower(),
                "whisper": str(args.whisper_dir), "provenance": json.dumps(record),
                "source": "decoder token embeddings of <|lang|> (zlora.models.lid)"}
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
