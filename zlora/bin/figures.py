"""A recipe's figures from its finished runs, in one process: the paper's Fig. 5-8, loss, router p.

    python -m zlora.bin.figures --out exp/figures --languages de,es,...,pt --lid exp/lid/lid.safetensors \
        --loss exp/stage1/metrics.jsonl --data data/test --feats dump/test/enc5/feats.scp EXP...

EXP...: stage-2 exp dirs (one seed each), decoded and scored on --data (EXP/decode_<set>/score).
Writes into OUT:

* fig5_radar.png (1 - WER/CER per language) and fig6_relchange.png (relative change against
  --baseline) over every EXP;
* fig7_lid.png (cosines of the LID embeddings --lid) and loss.png (the --loss metrics.jsonl);
* router_p.png, when a run is Zipper-LoRA-Soft: its router's p per language and layer, where each
  language leans on its own ranks (EXP/router_p.json, zlora.bin.router_probs);
* fig8_tsne.png, when the runs include Vanilla-LoRA and Zipper-LoRA-Soft: t-SNE of their
  utterance embeddings on --data (EXP/embeddings_<set>.safetensors, zlora.bin.dump_embeddings).

Runs are recognised by their row label (``zlora.scoring.report.method_label`` of EXP/config.yaml),
never by directory names. Each figure is exactly what the named ``zlora.bin`` verb draws.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zlora.bin import dump_embeddings, plot, router_probs
from zlora.scoring.report import exp_config, method_label
from zlora.utils.cli import ArgumentParser, UserError, run_main

ROUTER_RUN = "Zipper-LoRA-Soft"                 # router_p.png
TSNE_RUNS = ("Vanilla-LoRA", "Zipper-LoRA-Soft")   # Fig. 8's two panels


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for the PNGs")
    p.add_argument("--languages", default="", help="comma-separated language order of the radar chart")
    p.add_alias("--langs", "--languages")
    p.add_argument("--baseline", default="Vanilla-LoRA", help="row label of Fig. 6's baseline")
    p.add_argument("--lid", required=True, help="LID embeddings (zlora.bin.extract_lid)")
    p.add_argument("--loss", required=True, help="metrics.jsonl of the run whose loss curve is drawn")
    p.add_argument("--data", required=True, help="the scored Kaldi data dir (its name is the set)")
    p.add_argument("--feats", required=True, help="features the stage-2 models read for --data (Fig. 8)")
    p.add_argument("exps", nargs="+", help="stage-2 exp dirs")
    return p.parse_args(argv)


def labelled(exps: list[str]) -> dict[str, str]:
    """{row label: exp dir}; two runs with one label (e.g. two seeds) are an error."""
    out: dict[str, str] = {}
    for exp in exps:
        label = method_label(exp_config(exp))
        if label in out:
            raise UserError(f"{out[label]} and {exp} are both {label}: give one run per method")
        out[label] = exp
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out, test_set = Path(args.out), Path(args.data).name
    runs = labelled([e.rstrip("/") for e in args.exps])
    out.mkdir(parents=True, exist_ok=True)
    scores = [f"{exp}/decode_{test_set}/score" for exp in runs.values()]
    plot.main(["radar", "--out", str(out / "fig5_radar.png"), "--languages", args.languages, *scores])
    plot.main(["relchange", "--out", str(out / "fig6_relchange.png"), "--baseline", args.baseline, *scores])
    plot.main(["lid", "--out", str(out / "fig7_lid.png"), args.lid])
    plot.main(["loss", "--out", str(out / "loss.png"), args.loss])
    if ROUTER_RUN in runs:
        p_json = f"{runs[ROUTER_RUN]}/router_p.json"
        router_probs.main(["--exp", runs[ROUTER_RUN], "--out", p_json])
        plot.main(["router", "--out", str(out / "router_p.png"), p_json])
    if all(label in runs for label in TSNE_RUNS):
        panels = []
        for label in TSNE_RUNS:
            emb = f"{runs[label]}/embeddings_{test_set}.safetensors"
            dump_embeddings.main(["--exp", runs[label], "--data", args.data, "--feats", args.feats, "--out", emb])
            panels.append(f"{label}={emb}")
        plot.main(["tsne", "--out", str(out / "fig8_tsne.png"), "--utt2lang", f"{args.data}/utt2lang", *panels])
    return 0


if __name__ == "__main__":
    run_main(main)
