"""Dump Whisper log-mel features of a data dir to a Kaldi ark/scp.

Usage: python -m zlora.bin.dump_feats --data DIR --out DUMPDIR [--n_mels 80] [--nj N]

Writes DUMPDIR/feats.ark + feats.scp (kaldiio; one (T, n_mels) float32 time-major matrix per
utterance, T = samples // 160), DUMPDIR/utt2num_frames, DUMPDIR/config.yaml and, last, DUMPDIR/.done.
A rerun with .done present does nothing, unless the data dir changed since (.done records a
fingerprint of wav.scp, segments and the audio files' sizes and mtimes: re-synthesised audio is
redone, not silently reused); a DUMPDIR without .done (an interrupted run) is redone from
scratch. --nj N splits the utterances into N contiguous, sorted parts computed by N processes
(one torch thread each); their arks are concatenated into feats.ark and the scp offsets shifted.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import yaml

from zlora.config import load_config, save_config
from zlora.data.audio import load_utterance
from zlora.data.features import utterance_features
from zlora.data.kaldi import DataDir, write_kv
from zlora.utils.cli import UserError, run_main
from zlora.utils.io import atomic_open, atomic_write_text, check_outputs_apart, table_fingerprint
from zlora.utils.log import get_logger, setup_logging
from zlora.utils.procs import map_forked

log = get_logger("dump_feats")
OUTPUTS = ("feats.ark", "feats.scp", "utt2num_frames", "config.yaml", ".done")


@dataclass
class DumpFeatsConfig:
    data: str           # Kaldi data dir (wav.scp; segments optional)
    out: str            # output dir (feats.ark, feats.scp, utt2num_frames)
    n_mels: int = 80    # mel bins: 80 (Whisper up to large-v2) or 128 (large-v3)
    nj: int = 1         # parallel jobs (processes)


def source_fingerprint(data: str) -> str:
    return table_fingerprint(Path(data) / "wav.scp", Path(data) / "segments")


def already_done(cfg: DumpFeatsConfig, out: Path, source: str) -> bool:
    """True if a finished dump of the same audio with the same n_mels is there; other n_mels is an
    error, changed audio (or a dump from before fingerprints) means redo."""
    if not (out / ".done").is_file():
        return False
    old = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
    if old.get("n_mels") != cfg.n_mels:
        raise UserError(f"{out} holds a finished dump with n_mels={old.get('n_mels')}, not "
                        f"{cfg.n_mels}; remove it or choose another --out")
    done = (out / ".done").read_text(encoding="utf-8").split()
    if done[-1:] != [source]:
        log.info("%s: %s changed since this dump (wav.scp, segments or the audio); redoing it", out, cfg.data)
        return False
    return True


def clean(out: Path) -> None:
    """Remove every output of an earlier, unfinished run (only our own files)."""
    for name in OUTPUTS:
        if (out / name).exists():
            (out / name).unlink()
    shutil.rmtree(out / "split", ignore_errors=True)


def dump_part(data: str, utts: list[str], ark: str, n_mels: int) -> list[tuple[str, int, int]]:
    """Compute and write features of ``utts`` to ``ark``; return [(utt, byte offset, frames)]."""
    import torch

    torch.set_num_threads(1)
    dd = DataDir(data)
    index = []
    with open(ark, "wb") as f:
        for utt in utts:
            feats = utterance_features(load_utterance(dd, utt), utt, n_mels)
            pos = f.tell()
            kaldiio.save_ark(f, {utt: feats})
            index.append((utt, pos + len(f"{utt} ".encode()), feats.shape[0]))
    return index


def run_parts(cfg: DumpFeatsConfig, utts: list[str], split: Path) -> list[tuple[Path, list]]:
    nj = max(1, min(cfg.nj, len(utts)))
    bounds = [len(utts) * j // nj for j in range(nj + 1)]
    parts = [(split / f"feats.{j + 1}.ark", utts[bounds[j]:bounds[j + 1]]) for j in range(nj)]
    split.mkdir(parents=True, exist_ok=True)
    indexes = map_forked(dump_part, [(cfg.data, u, str(a), cfg.n_mels) for a, u in parts], nj)
    return [(a, index) for (a, _), index in zip(parts, indexes)]


def merge(out: Path, results: list[tuple[Path, list]]) -> None:
    """Concatenate part arks into feats.ark (binary ark entries are self-contained), shift offsets."""
    ark = (out / "feats.ark").resolve()
    scp, frames, base = {}, {}, 0
    with atomic_open(ark, "wb", encoding=None) as f:
        for part_ark, index in results:
            with open(part_ark, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
            for utt, offset, n in index:
                scp[utt] = f"{ark}:{base + offset}"
                frames[utt] = str(n)
            base += part_ark.stat().st_size
    write_kv(out / "feats.scp", scp)
    write_kv(out / "utt2num_frames", frames)


def main(argv: list[str]) -> int:
    cfg = load_config(DumpFeatsConfig, argv)
    setup_logging()
    if cfg.nj < 1 or cfg.n_mels < 1:
        raise UserError(f"--nj and --n_mels must be >= 1, got nj={cfg.nj} n_mels={cfg.n_mels}")
    out = Path(cfg.out)
    check_outputs_apart({"--out": cfg.out}, {"--data": cfg.data})   # clean() would delete a data dir's feats.scp
    source = source_fingerprint(cfg.data)   # once, before the dump: what the features are made from
    if already_done(cfg, out, source):
        log.info("%s/.done exists: features already dumped, nothing to do", out)
        return 0
    clean(out)
    out.mkdir(parents=True, exist_ok=True)
    utts = DataDir(cfg.data).utts
    log.info("dumping %d-bin log-mel of %d utterances from %s to %s with %d job(s)",
             cfg.n_mels, len(utts), cfg.data, out, cfg.nj)
    merge(out, run_parts(cfg, utts, out / "split"))
    shutil.rmtree(out / "split")
    save_config(cfg, out / "config.yaml")
    # completion marker, written last; its last word identifies the audio it was computed from
    atomic_write_text(out / ".done", f"{len(utts)} utterances, source {source}\n")
    log.info("wrote %s/feats.scp (%d utterances)", out, len(utts))
    return 0


if __name__ == "__main__":
    run_main(main)
