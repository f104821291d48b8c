"""Decode a Kaldi data dir with a trained Speech-LLM (paper §V-B: known language, greedy).

    python -m zlora.bin.decode --exp EXP --data data/test --feats dump/test/feats.scp \
        --out EXP/decode_test [--nj 2] [--batch_size 16] [--decoding.beam_size 4] [--lang.mode known]

Every decoding option is ``--decoding.<key>`` (zlora.models.generation.DecodingOptions: beam_size,
max_new_tokens, max_len_ratio, repetition_ngram, repetition_max, length_penalty); where each
utterance's language comes from is ``--lang.<key>`` (zlora.decode.sources: ``mode`` known, oracle,
whisper_lid, probe or mole, and their inputs). Work is split over ``nj`` processes (one GPU each when GPUs
exist); finished parts are not redone on a rerun. Writes ``OUT/text`` (Kaldi format) and
``OUT/rtf.json``; language-agnostic modes also write ``OUT/lid.json`` (LID accuracy per language)
and ``OUT/utt2lang_pred``, and whisper_lid ``OUT/lid_posteriors.jsonl`` (pass it to another decode
of the same data as ``--lang.posteriors`` to skip Whisper).

Several sets in one process: ``--data "[data/dev, data/test]" --feats "[...]" --out "[...]"``
(one feats and one out per data dir), paying the torch/transformers imports (~8 s per process on a
2-core CPU) once.

Raw audio (``--feats_type raw``, as ``data.feats_type: raw`` in training): ``--feats`` is
dump_audio's audio.scp, or left out for the data dir's wav.scp + segments; the log-mel is computed
on the decoding device (zlora.decode.batches.RawAudioReader).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zlora.config import load_config, save_config
from zlora.decode.jobs import (Part, merge_parts, merged_is_current, part_device, run_worker, split_utts,
                               threads_per_job, write_part)
from zlora.decode.provenance import check_inputs, decode_record
from zlora.decode.sources import LANG_SOURCES, LanguageConfig
from zlora.models.generation import DecodingOptions
from zlora.utils.cli import UserError, run_main
from zlora.utils.log import get_logger, setup_logging

log = get_logger("decode")

# Flat spellings of earlier releases -> their section key (still accepted, with a warning).
OLD_KEYS = {"beam_size": "decoding.beam_size", "max_new_tokens": "decoding.max_new_tokens",
            "repetition_ngram": "decoding.repetition_ngram", "repetition_max": "decoding.repetition_max",
            "lang_mode": "lang.mode", "lid_feats": "lang.feats", "lid_whisper": "lang.whisper_dir",
            "router_input": "lang.router_input", "lid_posteriors": "lang.posteriors"}


@dataclass
class DecodeConfig:
    exp: str                      # training exp dir (uses EXP/final)
    data: str | list[str]         # Kaldi data dir(s) (utt2lang is read for the prompts)
    out: str | list[str]          # output dir, one per data dir
    # feats.scp matching what the model was trained on, one per data dir; raw: dump_audio's
    # audio.scp (null: the data dir's wav.scp + segments)
    feats: str | list[str] | None = None
    feats_type: Literal["raw", "dumped"] = "dumped"   # raw: read audio, log-mel on the device
    nj: int = 1                   # decoding processes (one GPU each when GPUs exist)
    batch_size: int | None = None  # utterances per batch (length-sorted); null = 64 on a GPU, 16 on a CPU
    dtype: str = "auto"           # auto (bf16 on a GPU, float32 on a CPU) | float32 | bfloat16
    merge_lora: bool = True       # fold the LLM-LoRA (language-independent) into the LLM's weights
    chunked: bool | None = None   # None: as trained (decode_chunk_seconds when chunked)
    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    lang: LanguageConfig = field(default_factory=LanguageConfig)

    def __post_init__(self):
        if self.nj < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise UserError(f"--nj and --batch_size must be >= 1, got {self.nj} and {self.batch_size}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"--dtype {self.dtype!r}: expected auto, float32 or bfloat16")
        if self.feats is None and self.feats_type == "dumped":
            raise UserError("--feats: the feats.scp of --data is required with --feats_type dumped")

    @classmethod
    def migrate_config(cls, data: dict, where: str) -> dict:
        """Old flat keys (``--beam_size``, ``--lang_mode``, ...) -> their sections, with a warning."""
        data = dict(data)
        for old, new in OLD_KEYS.items():
            if old in data:
                print(f"zlora.bin.decode: --{old} is deprecated; use --{new}", file=sys.stderr)
                section, key = new.split(".")
                data[section] = {**data.get(section, {}), key: data.pop(old)}
        return data


def main(argv: list[str]) -> int:
    for cfg in per_set(load_config(DecodeConfig, argv)):
        decode_set(cfg)
    return 0


def per_set(cfg: DecodeConfig) -> list[DecodeConfig]:
    """One config per data set (``data``, ``feats`` and ``out`` each a single path)."""
    feats = [None] * (1 if isinstance(cfg.data, str) else len(cfg.data)) if cfg.feats is None else cfg.feats
    lists = [[v] if isinstance(v, str) else list(v) for v in (cfg.data, feats, cfg.out)]
    if not lists[0] or len({len(v) for v in lists}) != 1:
        raise UserError(f"--data, --feats and --out must name the same number of sets (one feats.scp and one "
                        f"output dir per data dir); got {len(lists[0])}, {len(lists[1])} and {len(lists[2])}")
    if len(lists[0]) > 1 and cfg.lang.posteriors:
        raise UserError("--lang.posteriors belongs to one data set; decode several sets with --lang.feats instead")
    outs = [os.path.abspath(o) for o in lists[2]]
    if len(set(outs)) != len(outs):
        raise UserError(f"--out: two sets would write to the same dir: {lists[2]}")
    return [dataclasses.replace(cfg, data=d, feats=f, out=o) for d, f, o in zip(*lists)]


def decode_set(cfg: DecodeConfig) -> None:
    out = Path(cfg.out)
    check_inputs(cfg)                 # --out apart from the inputs; feats of the kind the model reads
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "decode.log")
    save_config(cfg, out / "decode.yaml")
    utts = read_inputs(cfg)
    # parts and merge are reused only if made from the same model, features and options
    parts = split_utts(utts, cfg.nj, out, decode_record(cfg))
    if merged_is_current(parts, out):
        log.info("%s is complete for these utterances; nothing to do", out / "text")
        return
    todo = [p for p in parts if not p.done]
    log.info("%d utts in %d parts; %d to decode", len(utts), len(parts), len(todo))
    run_parts(cfg, todo)
    summary = merge_parts(parts, out)
    log.info("wrote %s (%d utts, RTF %s)", out / "text", summary["utts"], summary["rtf"])
    if LANG_SOURCES.get(cfg.lang.mode).writes_lid:
        report_lid(cfg, parts, out)


def read_inputs(cfg: DecodeConfig) -> list[tuple[str, int]]:
    """Check the data dir against the feats and return (utt, n_frames) for every utterance (from
    the dump's utt2num_frames when it has one: reading every matrix only to learn its length would
    cost as much I/O as decoding reads)."""
    import kaldiio

    from zlora.data.kaldi import DataDir, read_kv

    if cfg.feats_type == "raw":
        from zlora.decode.batches import RawAudioReader

        return RawAudioReader(cfg.data, cfg.feats, 0).lengths()

    dd = DataDir(cfg.data)
    feats = kaldiio.load_scp(cfg.feats)
    missing = [u for u in dd.utts if u not in feats]
    if missing:
        raise UserError(f"{cfg.feats}: no features for {len(missing)} utterances of {cfg.data}, "
                        f"e.g. {missing[0]}")
    u2n = Path(cfg.feats).parent / "utt2num_frames"
    frames = read_kv(u2n, 2) if u2n.is_file() else {}
    return [(u, int(frames[u]) if u in frames else feats[u].shape[0]) for u in dd.utts]


def run_parts(cfg: DecodeConfig, parts: list[Part]) -> None:
    if len(parts) <= 1 or cfg.nj == 1:
        for p in parts:
            decode_part(cfg, p)
        return
    ctx = mp.get_context("spawn")
    # run_worker: each worker dies with this process (a killed decode leaves none behind)
    procs = [ctx.Process(target=run_worker, args=(os.getpid(), decode_part, cfg, p)) for p in parts]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    failed = [p.index for p, pr in zip(parts, procs) if pr.exitcode != 0]
    if failed:
        raise UserError(f"decoding parts {failed} failed; see {cfg.out}/split{cfg.nj}/*/ and rerun "
                        "to redo only the unfinished parts")


def decode_part(cfg: DecodeConfig, part: Part) -> None:
    """Decode one part in this process and write it (text, stats, .done), with the thread count
    of one of ``nj`` jobs; the caller's count is restored (nj=1 decodes in the caller's process)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(cfg.nj))
    try:
        _decode_part(cfg, part)
    finally:
        torch.set_num_threads(threads)


def _decode_part(cfg: DecodeConfig, part: Part) -> None:
    import kaldiio
    import torch

    from zlora.data.feature_source import ModelInput, check_features_fit
    from zlora.data.kaldi import DataDir
    from zlora.decode.agnostic import write_part_lid, write_part_posteriors
    from zlora.decode.batches import RawAudioReader, batches, check_long_inputs, lang_of, pad, read_feats

    device = part_device(part.index)
    model = load_decoding_model(cfg, device)
    raw = RawAudioReader(cfg.data, cfg.feats, model.cfg.encoder.n_mels) if cfg.feats_type == "raw" else None
    if raw is None:
        check_features_fit(cfg.feats, ModelInput.of_model(model))     # a cache of this model's own layers
    dd, feats = DataDir(cfg.data), kaldiio.load_scp(cfg.feats) if raw is None else None
    lang_index = {l: i for i, l in enumerate(model.languages)}
    source = LANG_SOURCES.get(cfg.lang.mode)(cfg.lang, model)
    hyps, used, audio_s, t0 = {}, {}, 0.0, time.perf_counter()
    dtype = next(model.parameters()).dtype
    for batch in batches(part.utts, cfg.batch_size or (64 if device.startswith("cuda") else 16)):
        if raw is None:
            x, lens = pad([read_feats(feats, u, cfg.feats) for u in batch])
        else:
            x, lens = raw.read(batch, device)
        x = x.to(dtype)
        check_long_inputs(model, batch, lens, cfg.feats or cfg.data, log)
        true = torch.tensor([lang_of(dd, u, lang_index, cfg.data) for u in batch], device=device)
        with torch.inference_mode():
            route = source.route(model, x.to(device), lens.to(device), list(batch), true)
            with route.applied(model):
                ids = model.generate(x.to(device), lens.to(device), route.langs, cfg.decoding)
        for u, seq, k in zip(batch, ids, route.langs.tolist()):
            hyps[u] = model.tokenizer.decode(seq).replace("\n", " ").strip()
            used[u] = model.languages[k]
        audio_s += float(lens.sum()) * model.seconds_per_frame
    if source.writes_lid:             # before write_part: a part marked done has its LID files
        write_part_lid(part.dir, used)
        if source.seen:
            write_part_posteriors(part.dir, source.seen)
    write_part(part, hyps, {"utts": len(hyps), "audio_seconds": audio_s,
                            "decode_seconds": time.perf_counter() - t0, "device": device})


def load_decoding_model(cfg: DecodeConfig, device: str):
    """The trained model in eval mode on ``device``, in ``--dtype`` (bf16 on a GPU by default;
    routers and FlyLoRA's bias stay float32), with the language-independent LLM-LoRA folded into
    the weights (``--merge_lora``); full-context rows beyond Whisper's window are chunked (decoding
    never skips an utterance); ``--chunked`` overrides the trained setting."""
    import torch

    from zlora.adapters.merge import merge_shared_in_place
    from zlora.train.trained import load_model_for_inference

    model, _ = load_model_for_inference(cfg.exp)
    if cfg.merge_lora:
        merge_shared_in_place(model.llm)
    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and str(device).startswith("cuda"))
    model.to(device=device, dtype=torch.bfloat16 if bf16 else torch.float32).eval()
    enc = dataclasses.replace(model.encoder.cfg, long_inputs="chunk")
    model.encoder.cfg = enc if cfg.chunked is None else dataclasses.replace(enc, chunked=cfg.chunked)
    return model


def report_lid(cfg: DecodeConfig, parts: list[Part], out: Path) -> None:
    """OUT/lid.json and OUT/utt2lang_pred (and whisper_lid's OUT/lid_posteriors.jsonl)."""
    from zlora.data.kaldi import DataDir
    from zlora.decode.agnostic import lid_report, merge_posteriors

    rep = lid_report([p.dir for p in parts], DataDir(cfg.data).utt2lang, out, cfg.lang.mode)
    if all((p.dir / "lid_posteriors.jsonl").is_file() for p in parts):      # whisper_lid, probe
        merge_posteriors([p.dir for p in parts], out)
    log.info("LID (%s): accuracy %.4f over %d utts; %s", cfg.lang.mode, rep["accuracy"], rep["utts"],
             out / "lid.json")


if __name__ == "__main__":
    run_main(main)
