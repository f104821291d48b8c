"""Cache the output of a frozen Whisper encoder's bottom layers (input of ``cached_layers: N``).

    python -m zlora.bin.dump_encoder --whisper_dir DIR --feats dump/train/feats.scp --layers N [M ...] \
        --out dump/train/enc_N [dump/train/enc_M ...] [--encoder_state EXP/final/model.safetensors]

Several ``--layers`` (with one ``--out`` each) are written in ONE pass over the encoder: the
states after N layers are carried on to M layers, so a demo that needs both a stage-1 cache (all
layers) and a stage-2 cache (bottom layers) pays for the encoder once.

Writes OUT/feats.scp + OUT/feats.ark (kaldiio, one float32 (T_enc, d) matrix per utterance:
hidden states after N layers, before the final LayerNorm, 50 frames per second),
OUT/utt2num_frames, OUT/meta.yaml and, last, OUT/.done. A finished OUT (same settings, and the
same --feats dump and the same weights: meta.yaml records a fingerprint of feats.scp and its arks
and the sha256 of the Whisper and --encoder_state files) is kept; a re-dumped --feats, or other
weights behind the same paths, make it stale, and it is redone. Training and decoding check a
cache's meta.yaml against the model (zlora.data.feature_source).
--nj N encodes in N forked worker processes (each a 1/N share of the utterances and of the
torch threads; OUT/feats.K.ark per worker). On this project's 2-core CPU, 2 one-thread processes
encode ~1.2x faster than one two-thread process (see BENCHMARKS.md).
--encoder_state overlays encoder weights from a stage-1 checkpoint (keys ``encoder.*``), so a
cache can follow an encoder that stage 1 trained; meta.yaml records a fingerprint of the weights.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from zlora.utils.cli import ArgumentParser, UserError, run_main
from zlora.utils.io import atomic_write_text, check_outputs_apart, table_fingerprint
from zlora.utils.provenance import describe, differences, files_sha256
from zlora.utils.log import get_logger, setup_logging
from zlora.utils.procs import map_forked

log = get_logger("dump_encoder")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser("dump_encoder", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--whisper_dir", required=True, help="local Hugging Face Whisper checkpoint dir")
    p.add_argument("--feats", required=True, help="feats.scp of (T, n_mels) log-mel matrices")
    p.add_argument("--layers", type=int, nargs="+", required=True,
                   help="number(s) of bottom layers to cache")
    p.add_argument("--out", nargs="+", required=True, help="output dir, one per --layers value")
    p.add_argument("--encoder_state", default=None, help="safetensors with encoder.* weights")
    p.add_argument("--batch_size", type=int, default=16, help="utterances per encoder forward")
    p.add_argument("--nj", type=int, default=1, help="worker processes (default 1: this process)")
    p.add_argument("--bf16", action="store_true",
                   help="compute under bfloat16 autocast, store float32. Only for CPUs with native bf16 (AVX512-BF16/AMX) or GPUs: on an AVX2-only CPU (this project's 2-core box) it measured ~5x SLOWER (235 vs 42 ms/utt)")
    p.add_alias("--whisper", "--whisper_dir")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if len(args.layers) != len(args.out) or len(set(args.layers)) != len(args.layers):
        raise UserError(f"--layers {args.layers} and --out {args.out}: give one output dir per "
                        "distinct layer count")
    if args.nj < 1:
        raise UserError(f"--nj must be >= 1, got {args.nj}")
    for out in args.out:
        check_outputs_apart({"--out": out}, {"--feats": args.feats, "--whisper_dir": args.whisper_dir,
                                             "--encoder_state": args.encoder_state})
    setup_logging()
    source = table_fingerprint(args.feats)   # once, before the dump: what the outputs are made from
    todo = {}
    for n, out in sorted(zip(args.layers, map(Path, args.out))):
        if is_done(out, expected_meta(args, n, source)):
            log.info("%s is complete (.done, same settings); nothing to do", out)
        else:
            todo[n] = out
    if not todo:
        return 0
    check_whisper(args)
    count, info = dump(args, todo)
    for n, out in todo.items():
        meta = expected_meta(args, n, source)
        meta.update(fingerprint=info["fingerprints"][n], d_model=info["d_model"], utterances=count)
        atomic_write_text(out / "meta.yaml", yaml.safe_dump(meta, sort_keys=False))
        atomic_write_text(out / ".done", "")
        log.info("wrote %d utterances to %s", count, out / "feats.scp")
    return 0


def expected_meta(args: argparse.Namespace, n_layers: int, source: str) -> dict:
    """The provenance record of a cache of ``n_layers`` (meta.yaml; zlora.utils.provenance):
    the paths, the feats' fingerprint (``source``) and the sha256 of the weight files' content."""
    return {"whisper": os.path.abspath(args.whisper_dir), "feats": os.path.abspath(args.feats),
            "layers": n_layers, "encoder_state": args.encoder_state and os.path.abspath(args.encoder_state),
            "frames_per_second": 50, "dtype": "float32", "compute": "bf16" if args.bf16 else "fp32",
            "source": source, "weights": weights_sha256(args)}


def weights_sha256(args: argparse.Namespace) -> str:
    """sha256 over the content of the Whisper weight files and of --encoder_state: the same paths
    holding other weights must not pass for a finished cache."""
    files = sorted(Path(args.whisper_dir).glob("*.safetensors")) if os.path.isdir(args.whisper_dir) else []
    return files_sha256([*files, *([args.encoder_state] if args.encoder_state else [])])


def is_done(out: Path, meta: dict) -> bool:
    if not (out / ".done").is_file() or not (out / "meta.yaml").is_file():
        return False
    try:
        old = yaml.safe_load((out / "meta.yaml").read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        old = {}
    diffs = differences(old if isinstance(old, dict) else {}, meta)
    if diffs:
        log.info("%s was made from other inputs (%s): redoing it", out, describe(diffs))
    return not diffs


def check_whisper(args: argparse.Namespace) -> dict:
    """Whisper's config.json, checked against --layers and --encoder_state, without loading any
    weights (the workers load them)."""
    from zlora.models.encoder import require_local_dir

    path = require_local_dir(args.whisper_dir, "--whisper_dir", "python -m zlora.bin.convert_whisper OUT_DIR")
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json (not a Hugging Face Whisper checkpoint dir)")
    config = json.loads((path / "config.json").read_text())
    n_layers = config["encoder_layers"]
    if not all(0 < n <= n_layers for n in args.layers):
        raise UserError(f"--layers must be in 1..{n_layers}, got {args.layers}")
    if args.encoder_state and not os.path.isfile(args.encoder_state):
        raise UserError(f"--encoder_state {args.encoder_state}: file not found")
    if args.encoder_state:
        from zlora.utils.io import read_metadata

        read_metadata(Path(args.encoder_state))      # a pickle or a truncated file: named, before any work
    return config


def load_encoder(args: argparse.Namespace):
    from zlora.config import from_dict
    from zlora.models.config import EncoderConfig
    from zlora.models.encoder import WhisperSpeechEncoder

    n_mels = check_whisper(args)["num_mel_bins"]
    enc = WhisperSpeechEncoder(from_dict(EncoderConfig, {"whisper_dir": args.whisper_dir, "n_mels": n_mels},
                                         "--whisper_dir"))
    if args.encoder_state:
        overlay_encoder_state(enc, args.encoder_state)
    return enc.eval()


def overlay_encoder_state(enc, path: str) -> None:
    from zlora.utils.io import load_tensors

    if not os.path.isfile(path):
        raise UserError(f"--encoder_state {path}: file not found")
    tensors = load_tensors(Path(path), "--encoder_state weights")
    sd = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if not sd:
        raise UserError(f"--encoder_state {path}: no encoder.* tensors (was the encoder trained?)")
    known = enc.state_dict()
    unknown = sorted(set(sd) - set(known))
    if unknown:
        raise UserError(f"--encoder_state {path}: tensors not in a plain Whisper encoder, e.g. "
                        f"{unknown[0]} (adapter weights cannot be cached)")
    enc.load_state_dict(sd, strict=False)
    log.info("overlaid %d encoder tensors from %s", len(sd), path)


def fingerprint(encoder, n_layers: int) -> str:
    from zlora.models.encoder import encoder_fingerprint

    return encoder_fingerprint(encoder, n_layers)


def dump(args: argparse.Namespace, todo: dict[int, Path]) -> tuple[int, dict]:
    """Encode every utterance of --feats (batched by length) into each OUT of ``todo``
    ({n_layers: out_dir}) in one pass, in --nj workers; returns the utterance count and
    {"fingerprints": {n: sha256}, "d_model": d}."""
    import kaldiio
    import torch

    if not os.path.isfile(args.feats):
        raise UserError(f"--feats {args.feats}: file not found")
    for out in todo.values():
        out.mkdir(parents=True, exist_ok=True)
        (out / ".done").unlink(missing_ok=True)
        for old in out.glob("feats*.ark"):        # a redo may use another --nj
            old.unlink()
    order = length_sorted(list(kaldiio.load_scp(args.feats)), Path(args.feats).parent / "utt2num_frames")
    nj = min(args.nj, max(1, len(order)))
    parts = [order[k::nj] for k in range(nj)]      # round robin: every part spans all lengths
    # Forked before this process runs any tensor op; each worker loads the encoder itself and
    # gets its share of the threads (nj == 1: this process, its threads, OUT/feats.ark).
    threads = max(1, torch.get_num_threads() // nj) if nj > 1 else 0
    results = map_forked(encode_part, [(args, todo, part, f".{k + 1}" if nj > 1 else "", threads, k == 0)
                                       for k, part in enumerate(parts)], nj)
    for n, out in todo.items():
        lines = sorted(line for r in results for line in r["scp"][n])
        n_frames = {u: k for r in results for u, k in r["n_frames"].items()}
        atomic_write_text(out / "utt2num_frames", "".join(f"{u} {n_frames[u]}\n" for u in sorted(n_frames)))
        atomic_write_text(out / "feats.scp", "\n".join(lines) + "\n")
    return len(order), results[0]["info"]


def encode_part(args: argparse.Namespace, todo: dict[int, Path], utts: list[str], suffix: str,
                threads: int, first: bool = True) -> dict:
    """Encode ``utts`` into OUT/feats{suffix}.ark of every OUT; returns their scp lines per layer
    count, the frame counts and (``first`` part only: it logs progress too) the encoder's
    fingerprints (run in a worker when --nj > 1)."""
    import contextlib

    import kaldiio
    import torch

    from zlora.models.encoder import encode_bottom

    if threads:
        torch.set_num_threads(threads)
    encoder = load_encoder(args)
    feats = kaldiio.load_scp(args.feats)
    layers = sorted(todo)
    max_frames = 2 * encoder.embed_positions.num_embeddings    # mel frames: the conv stride is 2
    n_frames: dict[str, int] = {}
    tmp = {n: todo[n] / f".feats{suffix}.scp.tmp" for n in layers}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    with torch.inference_mode(), autocast, contextlib.ExitStack() as stack:
        writers = {n: stack.enter_context(kaldiio.WriteHelper(
            f"ark,scp:{todo[n] / f'feats{suffix}.ark'},{tmp[n]}")) for n in layers}
        for start in range(0, len(utts), args.batch_size):
            batch = utts[start:start + args.batch_size]
            mats = [read_matrix(feats, u, args.feats, encoder.conv1.in_channels, max_frames) for u in batch]
            lens = torch.tensor([m.shape[0] for m in mats])
            x = torch.nn.utils.rnn.pad_sequence(mats, batch_first=True)
            hidden, enc_lens = encode_bottom(encoder, x, lens, layers[0])
            done_layers = layers[0]
            for n in layers:
                if n > done_layers:
                    hidden, enc_lens = encoder.run_layers(hidden, enc_lens, done_layers, n, final_norm=False)
                    done_layers = n
                for u, h, k in zip(batch, hidden, enc_lens.tolist()):
                    writers[n](u, h[:k].float().numpy())
                    n_frames[u] = k
            if first and (start // args.batch_size) % 50 == 0:
                log.info("%d / %d utterances%s", start + len(batch), len(utts),
                         f" (worker 1 of {args.nj})" if suffix else "")
    scp = {}
    for n in layers:
        scp[n] = tmp[n].read_text(encoding="utf-8").splitlines()
        tmp[n].unlink()
    info = {"fingerprints": {n: fingerprint(encoder, n) for n in layers}, "d_model": encoder.d_model} if first else None
    return {"scp": scp, "n_frames": n_frames, "info": info}


def length_sorted(utts: list[str], utt2num_frames: Path) -> list[str]:
    """Utterances shortest first (less padding per batch) when dump_feats' utt2num_frames is
    there; scp order otherwise."""
    if not utt2num_frames.is_file():
        return utts
    lengths = {}
    for line in utt2num_frames.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            lengths[parts[0]] = int(parts[1])
    return sorted(utts, key=lambda u: lengths.get(u, 0))


def read_matrix(feats, utt: str, scp: str, n_mels: int, max_frames: int | None = None):
    """One utterance's log-mel matrix, checked: shape, and at most the frames Whisper's full-context
    window takes (a cache cannot be chunked, so a longer utterance is an error naming it)."""
    import torch

    m = feats[utt]
    if m.ndim != 2 or m.shape[1] != n_mels or m.shape[0] == 0:
        raise UserError(f"{scp}: utterance {utt} has a matrix of shape {m.shape}; expected (T>0, {n_mels}) "
                        "log-mel frames (time-major)")
    if max_frames is not None and m.shape[0] > max_frames:
        raise UserError(f"{scp}: utterance {utt} has {m.shape[0]} frames ({m.shape[0] / 100:g} s); the Whisper "
                        f"encoder takes at most {max_frames} ({max_frames / 100:g} s) at once and an encoder "
                        "cache cannot be chunked: cut the recording into shorter segments, or train and "
                        "decode it from log-mel features with a chunked encoder")
    return torch.tensor(m, dtype=torch.float32)


if __name__ == "__main__":
    run_main(main)
