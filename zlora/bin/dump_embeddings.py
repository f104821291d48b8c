"""Utterance-level encoder outputs of a trained model (mean over frames), for Fig. 8's t-SNE.

    python -m zlora.bin.dump_embeddings --exp EXP --data data/test --feats dump/test/enc4/feats.scp \
        --out EXP/embeddings_test.safetensors

Each utterance is encoded with its language from utt2lang (adapters route as in decoding), and
the encoder output (before the projector) is averaged over its valid frames: {utt: (d,) float32}.
"""
from __future__ import annotations

import argparse

from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import atomic_save_file


def main(argv: list[str]) -> int:
    p = ArgumentParser("dump_embeddings", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="training exp dir (uses EXP/final)")
    p.add_argument("--data", required=True, help="Kaldi data dir (utt2lang)")
    p.add_argument("--feats", required=True, help="features the model reads (mel or encoder cache)")
    p.add_argument("--out", required=True, help=".safetensors to write")
    p.add_argument("--batch_size", type=int, default=32, help="utterances per forward")
    args = p.parse_args(argv)
    vectors = embed(args)
    from safetensors.torch import save_file

    atomic_save_file(lambda tmp: save_file(vectors, tmp), args.out)
    print(f"wrote {len(vectors)} utterance embeddings to {args.out}")
    return 0


def embed(args: argparse.Namespace) -> dict:
    import kaldiio
    import torch

    from zlora.decode.batches import lang_of, pad, read_feats
    from zlora.data.kaldi import DataDir
    from zlora.train.trained import load_model_for_inference

    model, _ = load_model_for_inference(args.exp)
    model.eval()
    dd = DataDir(args.data)
    feats = kaldiio.load_scp(args.feats)
    missing = [u for u in dd.utts if u not in feats]
    if missing:
        raise UserError(f"{args.feats}: no features for {missing[0]} ({len(missing)} utterances of {args.data})")
    lang_index = {l: i for i, l in enumerate(model.languages)}
    out = {}
    for i in range(0, len(dd.utts), args.batch_size):
        utts = dd.utts[i:i + args.batch_size]
        x, lens = pad([read_feats(feats, u, args.feats) for u in utts])
        langs = torch.tensor([lang_of(dd, u, lang_index, args.data) for u in utts])
        with torch.inference_mode():
            enc, enc_lens = model.encoder(x, lens, langs)                  # (B, T', d), (B,)
        mask = torch.arange(enc.shape[1])[None, :] < enc_lens[:, None]
        mean = (enc * mask[..., None]).sum(1) / enc_lens[:, None].clamp(min=1)
        out.update({u: v.float().contiguous() for u, v in zip(utts, mean)})
    return out


if __name__ == "__main__":
    run_main(main)
