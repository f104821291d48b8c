"""Benchmarks of the training data path at scale: storage, read throughput, start-up and memory.

    python -m zlora.bin.bench_loader storage [--utts 400] [--noise_dbfs -45] [--out DIR]
    python -m zlora.bin.bench_loader startup [--utts 1000000] [--workers 2] [--seconds 60] [--out DIR]

``storage``: synthesises ``utts`` utterances with espeak-ng (en/de/fr/es, 8-30 words, 16 kHz,
16-bit; optionally with white noise at ``noise_dbfs`` RMS, since clean synthetic speech compresses
far better than recordings), stores them as one FLAC file per utterance (a corpus's own layout,
e.g. LibriSpeech), as 128-bin float32 log-mel (dump_feats) and as FLAC shards (dump_audio), and
prints MB per audio hour of each and the read throughput of one reader process in
utterances/s: dumped features and per-utterance files in random order, shards in random order
and in the sequential (block) order training uses. "cold": every file's pages dropped with
posix_fadvise(DONTNEED) first (the VM's host may still cache them); "warm": read again.

``startup``: a synthetic manifest of ``utts`` utterances (text, utt2lang, utt2num_samples and an
audio.scp whose entries point into 2,000 real FLAC entries of 1-20 s in one shard per language), read by the real
zlora.train.data.build_train_data with a sentencepiece tokenizer and a stub length model (no
network weights), in a fresh process twice: without and then with the token cache. Prints each
phase's seconds up to the first batch, the main process's peak RSS and each DataLoader worker's
RSS, PSS and private (USS) memory after the first batch and after ``seconds`` more of batches
(which includes the batches in flight), and with ``--epoch_walk`` the private memory of a forked
process serving a whole epoch's packs with the reads stubbed out. ``--feats_type dumped`` reads
the same manifest as a feature dump; ``--zlora_path`` runs the start-ups with another checkout's
package (an older commit: before/after). One JSON object per line.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zlora.utils.cli import ArgumentParser, run_main

WORDS = {"en": "the of and to in is you that it he was for on are as with his they at be this from have "
               "or one had by word but not what all were we when your can said there use an each which "
               "she do how their if will up other about out many then them these so some her would make".split(),
         "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an "
               "werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so".split(),
         "fr": "le de un être et à il avoir ne je son que se qui ce dans en du elle au pour pas que vous par "
               "sur faire plus dire me on mon lui nous comme mais pouvoir avec tout y aller voir en bien".split(),
         "es": "el la de que y a en un ser se no haber por con su para como estar tener le lo todo pero más "
               "hacer o poder decir este ir otro ese si me ya ver porque dar cuando muy sin vez mucho".split()}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}


def drop_cache(paths) -> None:
    """Ask the kernel to drop the page cache of each file (no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob(pattern))


# ---- storage and read throughput -----------------------------------------------------------------
def synth_corpus(root: Path, n: int, noise_dbfs: float | None, seed: int = 0) -> Path:
    """A data dir of ``n`` espeak-ng utterances as 16-kHz 16-bit FLAC files, with utt2dur."""
    import soundfile as sf

    from zlora.data.kaldi import DataDir
    from zlora.data.synth.espeak import UttSpec, synthesize

    rng = np.random.default_rng(seed)
    langs = sorted(WORDS)
    audio = root / "flac"
    audio.mkdir(parents=True, exist_ok=True)
    tables = {k: {} for k in ("text", "utt2spk", "utt2lang", "wav_scp", "utt2dur")}
    for i in range(n):
        lang = langs[i % len(langs)]
        utt = f"{lang}-{i:06d}"
        text = " ".join(rng.choice(WORDS[lang], size=int(rng.integers(8, 31))))
        x = synthesize(UttSpec(utt, lang, lang, text, lang, int(rng.integers(140, 190)), 50, 1))
        y = x.astype(np.float64)
        if noise_dbfs is not None:
            y = y + rng.standard_normal(len(y)) * 32768 * 10 ** (noise_dbfs / 20)
        sf.write(audio / f"{utt}.flac", np.clip(np.round(y), -32768, 32767).astype(np.int16), 16000)
        tables["text"][utt], tables["utt2spk"][utt], tables["utt2lang"][utt] = text, lang, lang
        tables["wav_scp"][utt] = str(audio / f"{utt}.flac")
        tables["utt2dur"][utt] = len(x) / 16000
    DataDir.write(root / "data", **tables)
    return root / "data"


def read_pass(index, rows: list[int], files: list[str], cold: bool, decode: bool) -> float:
    """Seconds to read ``rows`` of an InputIndex in that order in this process: decoded (what a
    worker does), or the stored bytes alone (the storage access pattern)."""
    if cold:
        drop_cache(files)
    index.handles = type(index.handles)(index.handles.paths)   # no descriptor kept from before
    read = index.read if decode else (lambda r: raw_bytes(index, r))
    t0 = time.perf_counter()
    for r in rows:
        read(r)
    return time.perf_counter() - t0


def raw_bytes(index, row: int) -> bytes:
    """The stored bytes of one utterance, undecoded: its whole file (open, read, close) or its
    ark entry (pread through the cached descriptor)."""
    fid = int(index.file_id[row])
    if fid < 0:
        with open(index.spec[row], "rb") as f:
            return f.read()
    head = index.handles.pread(fid, int(index.offset[row]), 15)
    if head[:5] == b"AUDIO":
        return index.handles.pread(fid, int(index.offset[row]) + 6 + head[5], int.from_bytes(head[6:6 + head[5]], "little"))
    rows, cols = int.from_bytes(head[6:10], "little"), int.from_bytes(head[11:15], "little")
    return index.handles.pread(fid, int(index.offset[row]), 15 + rows * cols * 4)


def storage(args) -> None:
    import torch

    from zlora.bin import dump_audio, dump_feats
    from zlora.data.dataset import _aligned_floats, pack_blocks
    from zlora.data.inputs import audio_index, feats_index
    from zlora.data.kaldi import DataDir

    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_loader_"))
    t0 = time.perf_counter()
    data = synth_corpus(root, args.utts, args.noise_dbfs)
    synth_s = time.perf_counter() - t0
    dd = DataDir(data)
    utts = dd.utts
    hours = sum(dd.utt2dur.values()) / 3600
    t0 = time.perf_counter()
    dump_feats.main(["--data", str(data), "--out", str(root / "feats"), "--n_mels", "128"])
    feats_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dump_audio.main(["--data", str(data), "--out", str(root / "shards"), "--shard_hours", str(args.shard_hours)])
    shard_s = time.perf_counter() - t0
    sizes = {"flac_files": dir_bytes(root / "flac", "*.flac"), "feats_f32_128": dir_bytes(root / "feats", "feats.ark"),
             "flac_shards": dir_bytes(root / "shards" / "shards", "*.ark")}
    common = {"bench": "loader_storage", "utts": len(utts), "audio_h": round(hours, 4),
              "noise_dbfs": args.noise_dbfs, "pcm16_mb_per_h": 115.2, **machine()}
    print(json.dumps({**common, **{f"{k}_mb_per_h": round(v / 1e6 / hours, 2) for k, v in sizes.items()},
                      "synth_s": round(synth_s, 1), "dump_feats_s": round(feats_s, 1),
                      "dump_audio_s": round(shard_s, 1)}), flush=True)
    durs = _aligned_floats(data / "utt2dur", utts)
    rng = np.random.default_rng(1)
    random_rows = rng.permutation(len(utts)).tolist()
    feats = feats_index(root / "feats" / "feats.scp", utts)
    files = audio_index(data, None, utts, durs)
    shards = audio_index(data, root / "shards" / "audio.scp", utts, durs)
    corpus = _stub_corpus(shards)
    packs, _, blocks = pack_blocks(corpus, 2048, 512)
    block_rows = [r for lang in sorted(blocks) for b in blocks[lang] for p in b
                  for r in shards.read_order(packs[p])]
    cases = [("dumped_feats_random", feats, random_rows, [str(root / "feats" / "feats.ark")]),
             ("flac_files_random", files, random_rows, [dd.wav_scp[u] for u in utts]),
             ("flac_shards_random", shards, random_rows, shards.handles.paths),
             ("flac_shards_sequential", shards, block_rows, shards.handles.paths)]
    # Passes interleaved case by case, repeated, medians: load from other processes on this
    # machine drifts, and it then shifts every case alike.
    for cold in (True, False):
        times = {(c[0], decode): [] for c in cases for decode in (True, False)}
        for _ in range(args.reps):
            for name, index, rows, paths in cases:
                for decode in (True, False):
                    times[(name, decode)].append(read_pass(index, rows, paths, cold, decode))
        for name, index, rows, paths in cases:
            full, io = statistics.median(times[(name, True)]), statistics.median(times[(name, False)])
            nbytes = sum(len(raw_bytes(index, r)) for r in rows)
            print(json.dumps({"bench": "loader_read", "case": name, "cache": "cold" if cold else "warm",
                              "utts": len(rows), "utts_per_s": round(len(rows) / full, 1),
                              "audio_s_per_s": round(hours * 3600 / full, 1),
                              "io_only_utts_per_s": round(len(rows) / io, 1),
                              "io_only_mb_per_s": round(nbytes / io / 1e6, 1),
                              "reps": args.reps, "threads": 1, **machine()}), flush=True)


def _stub_corpus(index):
    """A Corpus over an index with token counts ~ audio length (for pack_blocks in the bench)."""
    from zlora.data.columns import Ragged
    from zlora.data.dataset import Corpus

    n = len(index)
    frames = index.length // 160
    langs = sorted(WORDS)
    return Corpus(index.ids, np.array([langs.index(u.split("-")[0]) for u in index.ids], np.int16), frames,
                  index.length / 16000, Ragged(np.zeros(0, np.int32), np.zeros(n + 1, np.int64)),
                  -(-frames // 8) + 60, index)


# ---- start-up and memory at 1M utterances -------------------------------------------------------
def make_manifest(root: Path, n: int, n_audio: int = 2000, seed: int = 0) -> Path:
    """A data dir of ``n`` utterances whose audio.scp points into ``n_audio`` real shard entries."""
    from zlora.data.shards import write_shard
    from zlora.data.tokens import cache_dir_for

    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(20 * 16000)) / 16000
    base = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    langs = sorted(WORDS)
    per_lang = n_audio // len(langs)
    secs = rng.uniform(1.0, 20.0, (len(langs), per_lang))
    shard = {}                       # one shard per language, as dump_audio writes them
    for k, lang in enumerate(langs):
        ark = (root / f"{lang}.ark").resolve()
        got = write_shard(ark, [f"{lang}{i:05d}" for i in range(per_lang)],
                          lambda a, k=k: base[: int(secs[k, int(a[2:])] * 16000)])
        shard[lang] = (ark, got)
    utts = [f"u{i:08d}" for i in range(n)]                            # sorted by construction
    pick = rng.integers(0, per_lang, n)
    words = {lang: np.array(WORDS[lang]) for lang in langs}
    n_words = rng.integers(5, 40, n)
    with open(data / "text", "w", encoding="utf-8") as text, open(data / "utt2lang", "w") as u2l, \
            open(data / "audio.scp", "w") as scp, open(data / "utt2num_samples", "w") as u2s:
        for i, u in enumerate(utts):
            lang = langs[i % 4]
            ark, entries = shard[lang]
            e = entries[pick[i]]
            text.write(f"{u} {' '.join(words[lang][rng.integers(0, len(words[lang]), n_words[i])])}\n")
            u2l.write(f"{u} {lang}\n")
            scp.write(f"{u} {ark}:{e.offset}\n")
            u2s.write(f"{u} {e.samples}\n")
    write_dumped(root, data, utts, [shard[langs[i % 4]][1][pick[i]].samples for i in range(n)])
    cache = cache_dir_for(data)
    if cache.exists():
        for p in cache.iterdir():
            p.unlink()
    return data


def write_dumped(root: Path, data: Path, utts: list[str], samples: list[int], n_mats: int = 400) -> None:
    """The same manifest as a feature dump (data.feats_type dumped): feats.scp entries pointing
    into ``n_mats`` real (T, 128) float32 matrices, one per distinct length (rounded), and
    utt2num_frames. For comparing the loader with an older zlora, which read only dumps."""
    import kaldiio

    frames = np.array(samples) // 160
    bins = np.linspace(frames.min(), frames.max(), n_mats).astype(np.int64)
    which = np.clip(np.searchsorted(bins, frames), 0, n_mats - 1)
    ark = (root / "feats.ark").resolve()
    with open(ark, "wb") as f:
        offsets = []
        for k, t in enumerate(bins.tolist()):
            offsets.append(f.tell() + len(f"m{k} "))
            kaldiio.save_ark(f, {f"m{k}": np.full((t, 128), 0.5, dtype=np.float32)})
    with open(data / "feats.scp", "w") as scp, open(data / "utt2num_frames", "w") as u2n:
        for u, k in zip(utts, which.tolist()):
            scp.write(f"{u} {ark}:{offsets[k]}\n")
            u2n.write(f"{u} {bins[k]}\n")


class StubModel:
    """What build_train_data needs from a SpeechLLM: a real tokenizer, the gated-conv length rule
    (ceil(ceil(T/2)/4) speech tokens), 12-token prompts, Whisper's 3000-frame limit."""
    seconds_per_frame = 0.01

    def __init__(self, sp_model: str):
        from zlora.models.tokenizer import SentencePieceTokenizer

        self.tokenizer = SentencePieceTokenizer(sp_model)

    def speech_token_count(self, n: int) -> int:
        return -(-(-(-n // 2)) // 4)

    def prompt_ids(self, lang: str) -> list[int]:
        return list(range(12))

    def max_input_frames(self) -> int:
        return 3000


def memory(pid: int) -> dict:
    """RSS, PSS and private (USS) MB of a process, from /proc/PID/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":"):
                fields[parts[0][:-1]] = int(parts[1]) / 1024
    return {"rss_mb": round(fields["Rss"], 1), "pss_mb": round(fields["Pss"], 1),
            "uss_mb": round(fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0), 1)}


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError):
                continue
    return sorted(out)


def startup_run(args) -> None:
    """One start-up, in this (fresh) process: build_train_data -> first batch -> batches for a while."""
    t_start = time.perf_counter()
    import torch

    from zlora.config import from_dict
    from zlora.train.config import TrainConfig
    from zlora.train.data import build_train_data
    from zlora.train.distributed import DistInfo

    torch.set_num_threads(1)
    t_import = time.perf_counter()
    root = Path(args.dir)
    model = StubModel(str(root / "sp.model"))
    data_cfg = {"train": str(root / "data"), "max_tokens": 2048, "batch_size": 10, "num_workers": args.workers}
    if args.feats_type == "raw":
        data_cfg.update(feats_type="raw", train_feats=str(root / "data" / "audio.scp"))
    else:                            # no feats_type key: an older zlora has none
        data_cfg.update(train_feats=str(root / "data" / "feats.scp"))
    cfg = from_dict(TrainConfig, {
        "exp_dir": str(root / "exp"), "languages": sorted(WORDS),
        "model": {"encoder": {"config": {}, "n_mels": 128},
                  "llm": {"config": {"model_type": "qwen3"}, "tokenizer": str(root / "sp.model")}},
        "data": data_cfg, "optim": {"max_steps": 1000}}, "bench")
    dist = DistInfo(0, 1, 0, torch.device("cpu"), "gloo")
    t0 = time.perf_counter()
    data = build_train_data(cfg, model, dist)
    t_data = time.perf_counter()
    it = iter(data.loader())
    next(it)
    t_first = time.perf_counter()
    workers = children(os.getpid())
    first = {str(w): memory(w) for w in workers}
    main_first = memory(os.getpid())
    n, t1 = 1, time.perf_counter()
    trace = []                       # (seconds, batches, each worker's USS MB): does it level off?
    while time.perf_counter() - t1 < args.seconds:
        try:
            next(it)
        except StopIteration:
            data.sampler.set_epoch(data.sampler.epoch + 1)
            it = iter(data.loader())
        n += 1
        if not trace or time.perf_counter() - t1 >= trace[-1][0] + args.seconds / 6:
            trace.append((round(time.perf_counter() - t1, 1), n, [memory(w)["uss_mb"] for w in workers]))
    later = {str(w): memory(w) for w in workers}
    walk = epoch_walk(data.dataset, data.sampler) if args.epoch_walk else None
    print(json.dumps({
        "bench": "loader_startup", "zlora": args.label, "feats_type": args.feats_type,
        "utts": len(getattr(data.corpus, "utterances", [])) if not hasattr(data.corpus, "ids") else len(data.corpus),
        "packs": len(data.dataset), "token_cache": args.cache_state, "workers": args.workers,
        "import_s": round(t_import - t_start, 2), "build_train_data_s": round(t_data - t0, 2),
        "first_batch_s": round(t_first - t_data, 2), "startup_s": round(t_first - t0, 2),
        "main_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "main_at_first_batch": main_first, "workers_at_first_batch": first,
        "batches_after": n, "seconds_after": round(time.perf_counter() - t1, 1), "workers_after": later,
        "worker_uss_trace": trace, "epoch_walk_uss_mb": walk,
        **machine()}), flush=True)


def epoch_walk(dataset, sampler, points: int = 5) -> list:
    """A forked process (what a DataLoader worker is) serves every pack of one epoch in the
    sampler's order with the input read stubbed out (so in-flight audio does not hide it), and
    reports its private memory (USS, MB) at 0, 25, ..., 100 % of the epoch: the growth that
    touching per-utterance metadata causes, if any."""
    # A numpy array, not a list: the child's reading a list made here would copy its pages (the
    # very effect measured) and show up as growth.
    packs = np.array([p for batch in sampler.epoch_batches(0) for p in batch], dtype=np.int64)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        packs = packs.tolist()
        small = np.zeros((1, 1), dtype=np.float32)
        if hasattr(dataset, "index"):                       # this zlora: columns + input index
            dataset.index.read(0)
            dataset.index.read = lambda row: small
        else:                                               # an older zlora: kaldiio dict per worker
            dataset._matrix(dataset.utts[0].utt)
            dataset._matrix = lambda utt: small
        out, marks = [], {round(k * (len(packs) - 1) / (points - 1)) for k in range(points)}
        for k, p in enumerate(packs):
            dataset[(p, 0, k)]
            if k in marks:
                out.append([round(k / max(len(packs) - 1, 1), 2), memory(os.getpid())["uss_mb"]])
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    return out


def startup(args) -> None:
    from zlora.models.tokenizer import train_sentencepiece

    root = Path(args.out or tempfile.mkdtemp(prefix="bench_loader_"))
    t0 = time.perf_counter()
    if args.reuse and (root / "sp.model").is_file():
        from zlora.data.tokens import cache_dir_for

        for p in cache_dir_for(root / "data").glob("*"):      # start without the token cache again
            p.unlink()
    else:
        data = make_manifest(root, args.utts)
        lines = (data / "text").read_text(encoding="utf-8").splitlines()[:20000]
        (root / "sample.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        train_sentencepiece([root / "sample.txt"], root / "sp", 500, languages=sorted(WORDS))
        print(json.dumps({"bench": "loader_manifest", "utts": args.utts, "seconds": round(time.perf_counter() - t0, 1),
                          "text_mb": round((data / "text").stat().st_size / 1e6, 1)}), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    label = "this"
    if args.zlora_path:              # the same start-up, with another checkout's zlora package
        env["PYTHONPATH"] = args.zlora_path
        label = args.zlora_path
    for state in ("cold", "warm"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "startup_run", "--dir", str(root),
               "--workers", str(args.workers), "--seconds", str(args.seconds), "--cache_state", state,
               "--feats_type", args.feats_type, "--label", label] + (["--epoch_walk"] if args.epoch_walk else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        print(out.stdout.strip().splitlines()[-1], flush=True)


def main(argv: list[str]) -> int:
    p = ArgumentParser("bench_loader", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True, help="which benchmark")
    s = sub.add_parser("storage", help="storage per audio hour and read throughput")
    s.add_argument("--utts", type=int, default=400, help="espeak-ng utterances to synthesise")
    s.add_argument("--noise_dbfs", type=float, default=None, help="add white noise at this RMS level (dBFS)")
    s.add_argument("--shard_hours", type=float, default=1.0, help="dump_audio --shard_hours")
    s.add_argument("--reps", type=int, default=5, help="passes per case (the median is reported)")
    s.add_argument("--out", default=None, help="work dir (default: a new temp dir, kept)")
    s = sub.add_parser("startup", help="start-up time and worker memory for a large manifest")
    s.add_argument("--utts", type=int, default=1_000_000, help="utterances in the synthetic manifest")
    s.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    s.add_argument("--seconds", type=float, default=60.0, help="keep reading batches this long")
    s.add_argument("--out", default=None, help="work dir (default: a new temp dir, kept)")
    s.add_argument("--feats_type", choices=("raw", "dumped"), default="raw",
                   help="read the manifest's FLAC shards (raw) or its feature dump (dumped)")
    s.add_argument("--zlora_path", default=None, help="run the start-ups with the zlora package of this "
                   "checkout (e.g. an older commit, for before/after; dumped only)")
    s.add_argument("--reuse", action="store_true", help="keep an existing manifest in --out")
    s.add_argument("--epoch_walk", action="store_true", help="also walk one whole epoch in a forked "
                   "process with reads stubbed out, reporting its private memory along the way")
    s = sub.add_parser("startup_run", help="(internal) one start-up in a fresh process")
    s.add_argument("--dir", required=True, help="work dir prepared by startup")
    s.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    s.add_argument("--seconds", type=float, default=60.0, help="keep reading batches this long")
    s.add_argument("--cache_state", default="?", help="label for the token cache state (cold/warm)")
    s.add_argument("--feats_type", default="raw", help="raw or dumped")
    s.add_argument("--label", default="this", help="which zlora ran (for the output)")
    s.add_argument("--epoch_walk", action="store_true", help="see startup --epoch_walk")
    args = p.parse_args(argv)
    {"storage": storage, "startup": startup, "startup_run": startup_run}[args.cmd](args)
    return 0


if __name__ == "__main__":
    run_main(main)
