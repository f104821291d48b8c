"""Train a linear language-ID probe on mean-pooled frozen encoder states (a LID reference, and a
language source for decoding: ``zlora.bin.decode --lang.mode probe --lang.probe OUT``).

    python -m zlora.bin.train_lid_probe --data data/train_sft --feats dump/train_sft/enc5/feats.scp \
        --languages de,es,fr,... --out exp/lid/probe_enc5.safetensors \
        [--eval_data data/dev --eval_feats dump/dev/enc5/feats.scp] [--steps 300]

Several ``--data`` with one ``--feats`` each are pooled into one training set (e.g. the ASR data
and more labelled audio of the long-tail languages; every ``--feats`` must be the same cache).

``--feats`` is normally an encoder cache (``zlora.bin.dump_encoder``: states after N Whisper
layers, the input of ``cached_layers: N``), so a model that decodes from the same cache gets its
probe posteriors without another encoder pass. Training is class-balanced (zlora.models.lid_probe):
every step sees every language, however long-tailed the data. Writes the probe (safetensors, its
languages, feature width and the cache's layer count in the metadata) and prints train (and eval)
accuracy per language as JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.log import get_logger, setup_logging

log = get_logger("lid_probe")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("train_lid_probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, nargs="+", help="Kaldi data dir(s) with utt2lang")
    p.add_argument("--feats", required=True, nargs="+", help="feats.scp of (T, d) states (an encoder cache), one per --data")
    p.add_argument("--languages", required=True, help="comma-separated language codes (the probe's classes)")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--eval_data", default=None, help="held-out data dir to report accuracy on")
    p.add_argument("--eval_feats", default=None, help="its feats.scp")
    p.add_argument("--steps", type=int, default=300, help="class-balanced training steps")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds the balanced sampling")
    args = p.parse_args(argv)
    args.languages = [c.strip() for c in args.languages.split(",") if c.strip()]
    if len(args.data) != len(args.feats):
        raise UserError(f"{len(args.data)} --data but {len(args.feats)} --feats: give one feats.scp per data dir")
    layers = {f: cache_layers(f) for f in args.feats}
    if len(set(layers.values())) > 1:
        raise UserError(f"--feats are different caches (layers {layers}): the probe reads one kind of state")
    if (args.eval_data is None) != (args.eval_feats is None):
        raise UserError("--eval_data and --eval_feats go together")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    return args


def pooled_states(data: str, feats: str, languages: list[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(utterance ids, (N, d) mean-pooled states, (N,) language indices) of ``data``'s utterances
    in ``languages``; other languages are skipped (counted in the log)."""
    import kaldiio
    import numpy as np

    from zlora.data.kaldi import DataDir

    dd, mats = DataDir(data), kaldiio.load_scp(feats)
    index = {c: i for i, c in enumerate(languages)}
    utts = [u for u in dd.utts if dd.utt2lang.get(u) in index]
    missing = [u for u in utts if u not in mats]
    if missing:
        raise UserError(f"{feats}: no features for {len(missing)} utterances of {data}, e.g. {missing[0]}")
    if len(utts) < len(dd.utts):
        log.info("%s: %d utterances of other languages skipped", data, len(dd.utts) - len(utts))
    pooled = torch.stack([torch.from_numpy(np.array(mats[u], dtype=np.float32)).mean(0) for u in utts])
    return utts, pooled, torch.tensor([index[dd.utt2lang[u]] for u in utts])


def accuracy(pred: torch.Tensor, y: torch.Tensor, languages: list[str]) -> dict:
    per = {languages[c]: round(float((pred[y == c] == c).float().mean()), 4)
           for c in range(len(languages)) if bool((y == c).any())}
    return {"accuracy": round(float((pred == y).float().mean()), 4), "per_language": per}


def main(argv: list[str]) -> int:
    from safetensors.torch import save_file

    from zlora.models.lid_probe import LinearProbe, fit_classifier
    from zlora.utils.io import atomic_save_file

    args = parse_args(argv)
    setup_logging()
    sets = [pooled_states(d, f, args.languages) for d, f in zip(args.data, args.feats)]
    x, y = torch.cat([s[1] for s in sets]), torch.cat([s[2] for s in sets])
    log.info("training on %d utterances: %s", len(y), ", ".join(
        f"{args.languages[c]} {int((y == c).sum())}" for c in range(len(args.languages))))
    probe = LinearProbe(x.shape[1], len(args.languages))
    probe.set_scale(x)
    fit = fit_classifier(probe, x, y, len(args.languages), args.steps, args.lr, seed=args.seed)
    report = {"train": accuracy(probe(x).argmax(-1), y, args.languages), "fit": fit}
    if args.eval_data:
        _, xe, ye = pooled_states(args.eval_data, args.eval_feats, args.languages)
        with torch.no_grad():
            report["eval"] = accuracy(probe(xe).argmax(-1), ye, args.languages)
    meta = {"format": "zlora-lid-probe", "languages": json.dumps(args.languages), "dim": str(x.shape[1]),
            "layers": str(cache_layers(args.feats[0])),
            "trained_on": ",".join(str(Path(f).resolve()) for f in args.feats)}
    atomic_save_file(lambda tmp: save_file({k: v.contiguous() for k, v in probe.state_dict().items()},
                                           tmp, metadata=meta), args.out)
    print(json.dumps({"probe": args.out, **report}))
    return 0


def cache_layers(feats: str) -> int | None:
    """The layer count of an encoder cache (its meta.yaml), or None for other features."""
    import yaml

    meta = Path(feats).parent / "meta.yaml"
    if not meta.is_file():
        return None
    return (yaml.safe_load(meta.read_text(encoding="utf-8")) or {}).get("layers")


def load_probe(path: str) -> tuple["torch.nn.Module", list[str], dict]:
    """(probe in eval mode, its languages, its metadata); errors name the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from zlora.models.lid_probe import LinearProbe

    if not Path(path).is_file():
        raise UserError(f"--lang.probe {path}: no such file (python -m zlora.bin.train_lid_probe writes it)")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "zlora-lid-probe":
        raise UserError(f"--lang.probe {path}: not a zlora LID probe (metadata format={meta.get('format')!r})")
    languages = json.loads(meta["languages"])
    probe = LinearProbe(int(meta["dim"]), len(languages))
    probe.load_state_dict(load_file(path))
    return probe.eval(), languages, meta


if __name__ == "__main__":
    run_main(main)
