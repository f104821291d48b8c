"""Write the router outputs p(l) (Eq. 18) of a trained Zipper-LoRA model, per layer and language.

    python -m zlora.bin.router_probs --exp EXP --out EXP/router_p.json

The JSON ({layer: {lang: [p_1, ..., p_r]}}) feeds ``python -m zlora.bin.plot router``: the heatmap
of the mean p per language x layer shows where each language leans on its own columns of B
(p -> 1) or on the shared ones (p -> 0).
"""
from __future__ import annotations

import argparse
import json

from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import atomic_write_text


def main(argv: list[str]) -> int:
    p = ArgumentParser("router_probs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="training exp dir (uses EXP/final)")
    p.add_argument("--out", required=True, help="output JSON")
    args = p.parse_args(argv)
    probs = router_probs(args.exp)
    atomic_write_text(args.out, json.dumps(probs, indent=1) + "\n")
    print(f"wrote {args.out}: {len(probs)} router(s)")
    return 0


def router_probs(exp: str) -> dict[str, dict[str, list[float]]]:
    import torch

    from zlora.adapters.router import LIDRouter
    from zlora.train.trained import load_model_for_inference

    model, _ = load_model_for_inference(exp)
    langs = adapter_languages(model)
    out = {}
    with torch.no_grad():
        for name, module in model.encoder.named_modules():
            if isinstance(module, LIDRouter):
                p = module().float()                                      # (L, r)
                out[name.removesuffix(".router") or name] = {l: p[i].tolist() for i, l in enumerate(langs)}
    if not out:
        raise UserError(f"{exp}: the model has no LID router (only zipper-hard/zipper-soft have one)")
    return out


def adapter_languages(model) -> list[str]:
    from zlora.adapters import get_adapter_config

    cfg = get_adapter_config(model.encoder)
    return list(cfg.languages) if cfg is not None and cfg.languages else list(model.languages)


if __name__ == "__main__":
    run_main(main)
