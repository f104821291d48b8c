"""Draw the paper's figures as PNGs (input formats: zlora/scoring/plots.py).

    python -m zlora.bin.plot radar     --out fig5.png [--langs en,fr,...] SCORE_DIR|NAME=DIR ...
    python -m zlora.bin.plot relchange --out fig6.png [--baseline Vanilla-LoRA] SCORE_DIR ...
    python -m zlora.bin.plot lid       --out fig7.png [--center] lid.safetensors
    python -m zlora.bin.plot tsne      --out fig8.png --utt2lang data/test/utt2lang \
                                       NAME=emb.safetensors NAME2=emb2.safetensors
    python -m zlora.bin.plot confusion --out lid_confusion.png [--languages en,fr,...] NAME=DECODE_DIR/lid.json ...
    python -m zlora.bin.plot router    --out router_p.png router_p.json
    python -m zlora.bin.plot loss      --out loss.png [--key loss] [--logy] NAME=EXP/metrics.jsonl ...

Score dirs of several seeds of a method are averaged; pass --regime/--test_set when the dirs
mix encoder regimes or test sets.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from zlora.scoring import plots
from zlora.scoring.report import baseline_label, group_runs, load_run, mean_rates
from zlora.scoring.textio import read_utt2lang
from zlora.utils.cli import ArgumentParser, UserError, run_main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("plot", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="figure", required=True, help="the figure to draw")
    for name, helptext in (("radar", "Fig. 5: 1 - WER/CER per language"),
                           ("relchange", "Fig. 6: relative change vs a baseline")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--languages", default="", help="comma-separated language order (default: sorted)")
        s.add_argument("--regime", choices=["chunked", "full", "unspecified"],
                       help="only runs of this encoder regime (default: all)")
        s.add_argument("--test_set", help="only runs scored on this test set (default: all)")
        s.add_argument("--baseline", default="Vanilla-LoRA",
                       help="row label the relative change is against, or a training exp dir standing for its label")
        s.add_argument("runs", nargs="+", help="score dirs (with meta.json) or NAME=DIR")
        s.add_alias("--langs", "--languages")
    s = sub.add_parser("lid", help="Fig. 7: LID-embedding cosine heatmap")
    s.add_argument("--center", action="store_true", help="subtract the mean over languages first")
    s.add_argument("vectors", help="safetensors/npz {lang: vector}")
    s = sub.add_parser("tsne", help="Fig. 8: t-SNE of utterance embeddings, one panel per method")
    s.add_argument("--utt2lang", action="append", required=True,
                   help="one utt2lang for all panels, or one per panel in order")
    s.add_argument("--seed", type=int, default=0, help="seeds t-SNE")
    s.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    s.add_argument("embeddings", nargs="+", help="NAME=FILE (safetensors/npz {utt: vector})")
    s = sub.add_parser("confusion", help="LID confusion matrix per language-agnostic decode")
    s.add_argument("--languages", default="", help="comma-separated row order (default: sorted)")
    s.add_argument("lids", nargs="+", help="NAME=lid.json of a decode dir (or a path), one panel each")
    s = sub.add_parser("router", help="router p heatmap, language x layer")
    s.add_argument("p_json", help="JSON {layer: {lang: [p_1..p_r]}}")
    s = sub.add_parser("loss", help="training-loss curves")
    s.add_argument("--key", default="loss", help="metric to plot (a key of metrics.jsonl)")
    s.add_argument("--logy", action="store_true", help="logarithmic y axis")
    s.add_argument("logs", nargs="+", help="NAME=metrics.jsonl|train.log (or a path: its name is used)")
    for s in sub.choices.values():
        s.add_argument("--out", required=True, help="PNG to write")
        s.add_argument("--title", help="figure title")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    draw = {"radar": draw_scores, "relchange": draw_scores, "lid": draw_lid, "confusion": draw_confusion, "tsne": draw_tsne,
            "router": draw_router, "loss": draw_loss}[args.figure]
    draw(args)
    print(args.out)
    return 0


def draw_scores(args: argparse.Namespace) -> None:
    runs = [load_run(a) for a in args.runs]
    runs = [r for r in runs if (args.regime is None or r.meta.regime == args.regime)
            and (args.test_set is None or r.meta.test_set == args.test_set)]
    grouped = group_runs(runs)
    if len(grouped) != 1:
        raise UserError(f"the runs span {sorted(grouped) or 'no'} (test set, regime) pairs; "
                        "select one with --test_set/--regime")
    means = mean_rates(next(iter(grouped.values())))
    langs = [x for x in args.languages.split(",") if x] or sorted({lang for m in means.values() for lang in m})
    if args.figure == "radar":
        plots.radar_chart(means, langs, args.out, title=args.title)
    else:
        plots.relative_change_bars(means, baseline_label(args.baseline), langs, args.out, title=args.title)


def draw_lid(args: argparse.Namespace) -> None:
    plots.cosine_heatmap(plots.load_vectors(args.vectors), args.out, center=args.center, title=args.title)


def draw_confusion(args: argparse.Namespace) -> None:
    panels = []
    for name, path in map(_split_named, args.lids):
        try:
            panels.append((name, json.loads(Path(path).read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: cannot read a lid.json ({e})") from e
    langs = [x for x in args.languages.split(",") if x] or None
    plots.confusion_panels(panels, args.out, langs, title=args.title)


def draw_tsne(args: argparse.Namespace) -> None:
    named = [_split_named(a) for a in args.embeddings]
    if len(args.utt2lang) not in (1, len(named)):
        raise UserError(f"give one --utt2lang or one per embedding file ({len(named)}), got {len(args.utt2lang)}")
    maps = [read_utt2lang(p) for p in args.utt2lang]
    panels = [(name, plots.load_vectors(path), maps[i if len(maps) > 1 else 0])
              for i, (name, path) in enumerate(named)]
    plots.tsne_panels(panels, args.out, seed=args.seed, perplexity=args.perplexity)


def draw_router(args: argparse.Namespace) -> None:
    plots.router_heatmap(plots.load_router_json(args.p_json), args.out, title=args.title)


def draw_loss(args: argparse.Namespace) -> None:
    curves = {name: plots.read_metrics(path, args.key) for name, path in map(_split_named, args.logs)}
    plots.loss_curves(curves, args.out, key=args.key, log_y=args.logy, title=args.title)


def _split_named(arg: str) -> tuple[str, str]:
    """``NAME=PATH``, or a bare PATH labelled by its directory (e.g. the exp dir of a train.log)."""
    name, sep, path = arg.partition("=")
    if sep:
        return name, path
    p = Path(arg)
    return (p.parent.name or p.name), arg


if __name__ == "__main__":
    run_main(main)
