"""Pack a data dir's audio into FLAC shards for raw-audio training (``data.feats_type: raw``).

Usage: python -m zlora.bin.dump_audio --data DIR --out DUMPDIR [--shard_hours 1.0] [--nj N] [--seed 0]

Each language's utterances are shuffled (seeded, so every shard is a random sample of its
language, not one speaker or book) and cut into shards of about ``shard_hours`` of audio, one
language per shard so language-homogeneous packing still works. Audio is decoded once here
(``segments`` cut, any rate resampled to 16 kHz: zlora.data.audio) and stored as 16-bit FLAC in
kaldiio arks (zlora.data.shards), readable by ``kaldiio.load_mat`` and ESPnet.

Writes DUMPDIR/shards/<lang>.<k>.ark, each with a DUMPDIR/shards/<lang>.<k>.json (its index,
written once the shard was read back and validated: the shard's completion marker),
DUMPDIR/audio.scp (``utt DUMPDIR/shards/x.ark:OFFSET``, what ``data.train_feats`` takes),
DUMPDIR/utt2num_samples (16-kHz samples: the lengths packing uses, never re-measured),
DUMPDIR/shards.tsv (one line per shard: path, language, utterances, seconds, bytes),
DUMPDIR/config.yaml and, last, DUMPDIR/.done.

Shards are written in parallel (``--nj`` forked processes, one shard at a time each) straight to
their final files -- no merge copy. A rerun keeps a finished dump whose source (wav.scp,
segments, the audio files' sizes and mtimes) and settings are unchanged, and after an
interruption redoes only the shards without a current .json; shards of an older plan are removed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from zlora.config import load_config, save_config
from zlora.data.audio import TARGET_SR, load_utterance, utterance_durations
from zlora.data.kaldi import DataDir, write_kv
from zlora.data.shards import write_shard
from zlora.utils.cli import UserError, run_main
from zlora.utils.io import atomic_write_text, table_fingerprint
from zlora.utils.log import get_logger, setup_logging
from zlora.utils.procs import map_forked

log = get_logger("dump_audio")
FORMAT = "flac16-kaldiio-1"     # bump when the shard layout changes: older shards are then redone
MIN_SAMPLES = 201               # a log-mel frame needs more than n_fft / 2 samples


@dataclass
class DumpAudioConfig:
    data: str                   # Kaldi data dir (wav.scp, utt2lang; segments, utt2dur optional)
    out: str                    # output dir (shards/, audio.scp, utt2num_samples)
    shard_hours: float = 1.0    # audio per shard (one language each); ~60-115 MB of FLAC per hour
    nj: int = 1                 # shards written in parallel (processes)
    seed: int = 0               # shuffles each language's utterances before cutting shards

    def __post_init__(self):
        if self.nj < 1 or not self.shard_hours > 0:
            raise UserError(f"--nj must be >= 1 and --shard_hours > 0, got {self.nj} and {self.shard_hours}")


@dataclass
class Shard:
    name: str                   # <lang>.<k>
    lang: str
    utts: list[str]
    plan: str                   # hash of what the shard holds and where it comes from


def source_fingerprint(cfg: DumpAudioConfig) -> str:
    """The audio (wav.scp, segments, files' sizes and mtimes), the settings and the format."""
    tables = table_fingerprint(Path(cfg.data) / "wav.scp", Path(cfg.data) / "segments")
    settings = json.dumps({"shard_hours": cfg.shard_hours, "seed": cfg.seed, "format": FORMAT})
    return hashlib.sha256(f"{tables}\0{settings}".encode()).hexdigest()


def plan_shards(dd: DataDir, cfg: DumpAudioConfig, source: str) -> list[Shard]:
    """Per language: utterances shuffled with the seed, cut every ``shard_hours`` of audio."""
    utt2lang = dd.utt2lang
    utts = dd.utts
    missing = [u for u in utts if u not in utt2lang]
    if missing:
        raise UserError(f"{dd.path / 'utt2lang'}: no language for utterance '{missing[0]}' "
                        f"({len(missing)} of {len(utts)}); run utils/fix_data_dir.sh")
    durs = dd.utt2dur
    if durs is None or any(u not in durs for u in utts):
        log.info("%s: no complete utt2dur; reading durations from the audio headers", dd.path)
        durs = utterance_durations(dd)
    shards = []
    for lang in sorted(set(utt2lang[u] for u in utts)):
        members = [u for u in utts if utt2lang[u] == lang]
        order = np.random.default_rng([cfg.seed, *lang.encode()]).permutation(len(members))
        current, seconds, k = [], 0.0, 0
        for i in order.tolist():
            current.append(members[i])
            seconds += durs[members[i]]
            if seconds >= cfg.shard_hours * 3600:
                shards.append(_shard(lang, k, current, source))
                current, seconds, k = [], 0.0, k + 1
        if current:
            shards.append(_shard(lang, k, current, source))
    return shards


def _shard(lang: str, k: int, utts: list[str], source: str) -> Shard:
    plan = hashlib.sha256(("\0".join([source, *utts])).encode()).hexdigest()
    return Shard(f"{lang}.{k:05d}", lang, list(utts), plan)


def dump_shard(data: str, shard: Shard, shards_dir: str) -> list[dict]:
    """Write (or keep, when its .json says the same plan and the ark is intact) one shard."""
    ark, index = Path(shards_dir) / f"{shard.name}.ark", Path(shards_dir) / f"{shard.name}.json"
    if index.is_file() and ark.is_file():
        done = json.loads(index.read_text(encoding="utf-8"))
        if done.get("plan") == shard.plan and done.get("bytes") == ark.stat().st_size:
            return done["entries"]
    dd = DataDir(data)

    def load(utt: str) -> np.ndarray:
        x = load_utterance(dd, utt)
        if len(x) < MIN_SAMPLES:
            raise UserError(f"utterance '{utt}': {len(x)} samples is too short for a log-mel frame "
                            f"(need more than {MIN_SAMPLES - 1}); remove it from {data}")
        return x

    entries = [asdict(e) for e in write_shard(ark, shard.utts, load)]
    atomic_write_text(index, json.dumps({"plan": shard.plan, "bytes": ark.stat().st_size,
                                         "lang": shard.lang, "entries": entries}))
    return entries


def already_done(out: Path, source: str) -> bool:
    done = out / ".done"
    return done.is_file() and done.read_text(encoding="utf-8").split()[-1:] == [source]


def remove_stale(shards_dir: Path, shards: list[Shard]) -> None:
    """Delete our own files of shards that are not in the plan (an older plan, a .tmp)."""
    keep = {f"{s.name}{ext}" for s in shards for ext in (".ark", ".json")}
    for p in shards_dir.iterdir():
        if p.suffix in (".ark", ".json", ".tmp") and p.name not in keep:
            p.unlink()


def write_outputs(out: Path, shards: list[Shard], results: list[list[dict]]) -> None:
    shards_dir = (out / "shards").resolve()
    scp, samples, rows = {}, {}, []
    for shard, entries in zip(shards, results):
        ark = shards_dir / f"{shard.name}.ark"
        for e in entries:
            scp[e["utt"]] = f"{ark}:{e['offset']}"
            samples[e["utt"]] = str(e["samples"])
        secs = sum(e["samples"] for e in entries) / TARGET_SR
        rows.append(f"{ark}\t{shard.lang}\t{len(entries)}\t{secs:.2f}\t{ark.stat().st_size}\n")
    write_kv(out / "audio.scp", scp)
    write_kv(out / "utt2num_samples", samples)
    atomic_write_text(out / "shards.tsv", "path\tlang\tutts\tseconds\tbytes\n" + "".join(rows))


def main(argv: list[str]) -> int:
    cfg = load_config(DumpAudioConfig, argv, __doc__.splitlines()[0])
    setup_logging()
    out = Path(cfg.out)
    source = source_fingerprint(cfg)
    if already_done(out, source):
        log.info("%s/.done exists for this audio and these settings: nothing to do", out)
        return 0
    if (out / ".done").exists():
        (out / ".done").unlink()
    dd = DataDir(cfg.data)
    shards = plan_shards(dd, cfg, source)
    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(shards_dir, shards)
    log.info("packing %d utterances of %s into %d shards (%s) with %d job(s)", len(dd.utts), cfg.data,
             len(shards), ", ".join(f"{lang}: {sum(s.lang == lang for s in shards)}"
                                     for lang in sorted({s.lang for s in shards})), cfg.nj)
    results = map_forked(dump_shard, [(cfg.data, s, str(shards_dir)) for s in shards], cfg.nj)
    write_outputs(out, shards, results)
    save_config(cfg, out / "config.yaml")
    n_bytes = sum((shards_dir / f"{s.name}.ark").stat().st_size for s in shards)
    hours = sum(e["samples"] for r in results for e in r) / TARGET_SR / 3600
    atomic_write_text(out / ".done", f"{len(dd.utts)} utterances, {hours:.4f} h, {n_bytes} bytes, "
                                     f"source {source}\n")
    log.info("wrote %s/audio.scp: %d utterances, %.3f h in %d shards, %.1f MB (%.1f MB per audio hour)",
             out, len(dd.utts), hours, len(shards), n_bytes / 1e6, n_bytes / 1e6 / max(hours, 1e-9))
    return 0


if __name__ == "__main__":
    run_main(main)
