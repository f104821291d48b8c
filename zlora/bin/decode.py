"""Decode a Kaldi data dir with a trained Speech-LLM, in known-language mode (paper §V-B).

    python -m zlora.bin.decode --exp EXP --data data/test --feats dump/test/feats.scp \
        --out EXP/decode_test [--nj 2] [--batch_size 16] [--beam_size 1]

The prompt comes from each row's language in ``utt2lang``. Work is split over ``nj`` processes
(one GPU each when GPUs exist); finished parts are not redone on a rerun. Writes ``OUT/text``
(Kaldi format) and ``OUT/rtf.json``.

Several sets in one process: ``--data "[data/dev, data/test]" --feats "[...]" --out "[...]"``
(one feats and one out per data dir) decodes them in turn, paying the torch/transformers imports
(~8 s per process on a 2-core CPU) once.

Language-agnostic modes (zlora.decode.agnostic): ``--lang_mode whisper_lid --lid_feats
dump/test/feats.scp [--router_input hard|mixture]``, ``--lang_mode mole`` or ``--lang_mode oracle``
take the language from Whisper LID, the MoLE classifier, or utt2lang through the agnostic path;
they also write ``OUT/lid.json`` (LID accuracy per language against utt2lang) and
``OUT/utt2lang_pred``. ``whisper_lid`` writes ``OUT/lid_posteriors.jsonl``; another decode of the
same data can pass it as ``--lid_posteriors`` and skip Whisper (a 30-s padded Whisper forward per
utterance, the costliest part on a CPU).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

from zlora.config import load_config, save_config
from zlora.decode.jobs import (Part, merge_parts, merged_is_current, part_device, split_utts,
                               threads_per_job, write_part)
from zlora.utils.cli import UserError, run_main
from zlora.utils.log import get_logger, setup_logging

log = get_logger("decode")


@dataclass
class DecodeConfig:
    exp: str                      # training exp dir (uses EXP/final)
    data: str | list[str]         # Kaldi data dir(s) (utt2lang is read for the prompts)
    feats: str | list[str]        # feats.scp matching what the model was trained on, one per data dir
    out: str | list[str]          # output dir, one per data dir
    nj: int = 1
    batch_size: int = 16
    beam_size: int = 1
    max_new_tokens: int = 200
    repetition_ngram: int = 4     # stop a hypothesis that repeats an n-gram ...
    repetition_max: int = 3       # ... more than this many times
    chunked: bool | None = None   # None: as trained (decode_chunk_seconds when chunked)
    lang_mode: str = "known"      # known | oracle | whisper_lid | mole (zlora.decode.agnostic)
    lid_feats: str | None = None  # log-mel feats.scp for whisper_lid (the model may read cached states)
    lid_whisper: str | None = None  # Whisper dir for whisper_lid; default model.encoder.whisper_dir
    router_input: str = "hard"    # zipper routers under whisper_lid: hard | mixture
    lid_posteriors: str | None = None  # whisper_lid: reuse OUT/lid_posteriors.jsonl of an earlier
    #                                    decode of the same data instead of running Whisper again


def main(argv: list[str]) -> int:
    for cfg in per_set(load_config(DecodeConfig, argv)):
        decode_set(cfg)
    return 0


def per_set(cfg: DecodeConfig) -> list[DecodeConfig]:
    """One config per data set (``data``, ``feats`` and ``out`` each a single path)."""
    lists = [[v] if isinstance(v, str) else list(v) for v in (cfg.data, cfg.feats, cfg.out)]
    if not lists[0] or len({len(v) for v in lists}) != 1:
        raise UserError(f"--data, --feats and --out must name the same number of sets (one feats.scp and one "
                        f"output dir per data dir); got {len(lists[0])}, {len(lists[1])} and {len(lists[2])}")
    if len(lists[0]) > 1 and cfg.lid_posteriors:
        raise UserError("--lid_posteriors belongs to one data set; decode several sets with --lid_feats instead")
    outs = [os.path.abspath(o) for o in lists[2]]
    if len(set(outs)) != len(outs):
        raise UserError(f"--out: two sets would write to the same dir: {lists[2]}")
    return [dataclasses.replace(cfg, data=d, feats=f, out=o) for d, f, o in zip(*lists)]


def decode_set(cfg: DecodeConfig) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "decode.log")
    save_config(cfg, out / "decode.yaml")
    check_lang_mode(cfg)
    utts = read_inputs(cfg)
    parts = split_utts(utts, cfg.nj, out)
    if merged_is_current(parts, out):
        log.info("%s is complete for these utterances; nothing to do", out / "text")
        return
    todo = [p for p in parts if not p.done]
    log.info("%d utts in %d parts; %d to decode", len(utts), len(parts), len(todo))
    run_parts(cfg, todo)
    summary = merge_parts(parts, out)
    log.info("wrote %s (%d utts, RTF %s)", out / "text", summary["utts"], summary["rtf"])
    if cfg.lang_mode != "known":
        from zlora.data.kaldi import DataDir
        from zlora.decode.agnostic import lid_report, merge_posteriors

        rep = lid_report([p.dir for p in parts], DataDir(cfg.data).utt2lang, out, cfg.lang_mode)
        if cfg.lang_mode == "whisper_lid":
            merge_posteriors([p.dir for p in parts], out)
        log.info("LID (%s): accuracy %.4f over %d utts; %s", cfg.lang_mode, rep["accuracy"], rep["utts"],
                 out / "lid.json")


def check_lang_mode(cfg: DecodeConfig) -> None:
    from zlora.decode.agnostic import LANG_MODES

    if cfg.lang_mode not in LANG_MODES:
        raise UserError(f"--lang_mode {cfg.lang_mode!r}: expected one of {', '.join(LANG_MODES)}")
    if cfg.router_input not in ("hard", "mixture"):
        raise UserError(f"--router_input {cfg.router_input!r}: expected hard or mixture")
    if cfg.lang_mode == "whisper_lid" and not (cfg.lid_feats or cfg.lid_posteriors):
        raise UserError("--lang_mode whisper_lid needs --lid_feats (a log-mel feats.scp from dump_feats) "
                        "or --lid_posteriors (lid_posteriors.jsonl of an earlier whisper_lid decode)")
    if cfg.lid_posteriors and cfg.lang_mode != "whisper_lid":
        raise UserError("--lid_posteriors is only used with --lang_mode whisper_lid")


def read_inputs(cfg: DecodeConfig) -> list[tuple[str, int]]:
    """Check the data dir against the feats and return (utt, n_frames) for every utterance."""
    import kaldiio

    from zlora.data.kaldi import DataDir

    dd = DataDir(cfg.data)
    feats = kaldiio.load_scp(cfg.feats)
    missing = [u for u in dd.utts if u not in feats]
    if missing:
        raise UserError(f"{cfg.feats}: no features for {len(missing)} utterances of {cfg.data}, "
                        f"e.g. {missing[0]}")
    return [(u, feats[u].shape[0]) for u in dd.utts]


def run_parts(cfg: DecodeConfig, parts: list[Part]) -> None:
    if not parts:
        return
    if len(parts) == 1 or cfg.nj == 1:
        for p in parts:
            decode_part(cfg, p)
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=decode_part, args=(cfg, p)) for p in parts]
    for pr in procs:
        pr.start()
    failed = []
    for p, pr in zip(parts, procs):
        pr.join()
        if pr.exitcode != 0:
            failed.append(p.index)
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

    from zlora.data.kaldi import DataDir
    from zlora.decode.agnostic import decode_batch, write_part_lid
    from zlora.models import DecodingOptions
    from zlora.train.trained import load_model_for_inference

    device = part_device(part.index)
    model, _ = load_model_for_inference(cfg.exp)
    model.to(device).eval()
    # Decoding never skips an utterance: full-context rows beyond Whisper's window are chunked.
    model.encoder.cfg = dataclasses.replace(model.encoder.cfg, long_inputs="chunk")
    if cfg.chunked is not None:
        model.encoder.cfg = dataclasses.replace(model.encoder.cfg, chunked=cfg.chunked)
    options = DecodingOptions(beam_size=cfg.beam_size, max_new_tokens=cfg.max_new_tokens,
                              repetition_ngram=cfg.repetition_ngram, repetition_max=cfg.repetition_max)
    dd = DataDir(cfg.data)
    feats = kaldiio.load_scp(cfg.feats)
    lang_index = {l: i for i, l in enumerate(model.languages)}
    lid = LidSource(cfg, model)
    hyps, used_langs, audio_s, t0 = {}, {}, 0.0, time.perf_counter()
    for batch in batches(part.utts, cfg.batch_size):
        mats = [read_feats(feats, u, cfg.feats) for u in batch]
        langs = torch.tensor([lang_of(dd, u, lang_index, cfg.data) for u in batch], device=device)
        x, lens = pad(mats)
        post = lid.posteriors(batch)
        check_long_inputs(model, batch, lens, cfg.feats)
        with torch.inference_mode():
            ids, used = decode_batch(model, x.to(device), lens.to(device), options, cfg.lang_mode, langs,
                                     post, cfg.router_input)
        for u, seq, k in zip(batch, ids, used.tolist()):
            hyps[u] = model.tokenizer.decode(seq).replace("\n", " ").strip()
            used_langs[u] = model.languages[k]
        audio_s += sum(m.shape[0] for m in mats) * model.seconds_per_frame
    if cfg.lang_mode != "known":      # before write_part: a part marked done has its LID files
        write_part_lid(part.dir, used_langs)
        lid.write(part.dir)
    write_part(part, hyps, {"utts": len(hyps), "audio_seconds": audio_s,
                            "decode_seconds": time.perf_counter() - t0, "device": device})


class LidSource:
    """Per-batch (B, L) Whisper LID posteriors over the model's languages for ``whisper_lid``
    (from Whisper, or from --lid_posteriors); None for the other modes."""

    def __init__(self, cfg: DecodeConfig, model):
        import kaldiio

        from zlora.decode.agnostic import read_posteriors

        self.cfg, self.languages, self.seen = cfg, list(model.languages), {}
        self.whisper = cfg.lid_whisper or model.cfg.encoder.whisper_dir
        self.cached = read_posteriors(cfg.lid_posteriors) if cfg.lid_posteriors else None
        self.mels = (kaldiio.load_scp(cfg.lid_feats)
                     if cfg.lang_mode == "whisper_lid" and self.cached is None else None)
        if cfg.lang_mode == "whisper_lid" and self.cached is None and not self.whisper:
            raise UserError("--lang_mode whisper_lid: no Whisper dir (give --lid_whisper)")

    def posteriors(self, utts):
        import torch

        from zlora.decode.agnostic import whisper_posteriors

        if self.cfg.lang_mode != "whisper_lid":
            return None
        if self.cached is not None:
            missing = [u for u in utts if u not in self.cached]
            if missing:
                raise UserError(f"--lid_posteriors {self.cfg.lid_posteriors}: no posterior for {missing[0]}")
            rows = [[self.cached[u].get(lang, 0.0) for lang in self.languages] for u in utts]
            empty = [u for u, row in zip(utts, rows) if sum(row) <= 0]
            if empty:
                raise UserError(f"--lid_posteriors {self.cfg.lid_posteriors}: the posterior of {empty[0]} "
                                f"has no mass on the model's languages ({', '.join(self.languages)})")
            post = torch.tensor(rows, dtype=torch.float32)
            post = post / post.sum(-1, keepdim=True).clamp_min(1e-12)
        else:
            post = whisper_posteriors(self.whisper, [read_feats(self.mels, u, self.cfg.lid_feats) for u in utts],
                                      self.languages)
        for u, row in zip(utts, post.tolist()):
            self.seen[u] = dict(zip(self.languages, row))
        return post

    def write(self, part_dir) -> None:
        from zlora.decode.agnostic import write_part_posteriors

        if self.seen:
            write_part_posteriors(part_dir, self.seen)


def read_feats(feats, utt: str, scp: str):
    """One (T, D) feature matrix as a float tensor; NaN/Inf is an error naming the utterance."""
    import numpy as np
    import torch

    from zlora.data.features import FeatureError, check_finite

    mat = np.array(feats[utt], dtype=np.float32)      # a writable copy of kaldiio's mapped array
    try:
        check_finite(mat, utt)
    except FeatureError as e:
        raise UserError(f"{scp}: {e}") from e
    return torch.from_numpy(mat)


def check_long_inputs(model, utts, lens, scp: str) -> None:
    """Decoding never skips an utterance. One longer than the full-context encoder takes (Whisper:
    30 s) is encoded in chunks of ``decode_chunk_seconds`` (§IV-F), alone: the other rows of its
    batch keep full context (the encoder's ``long_inputs: chunk``). With cached encoder states
    (computed full-context, no chunking possible) it is an error that names the utterance."""
    limit = model.encoder.cfg.cached_layers and model.max_input_frames()
    if not limit and not model.encoder.cfg.chunked:
        limit = 2 * model.encoder.embed_positions.num_embeddings
    too_long = [u for u, n in zip(utts, lens.tolist()) if limit and n > limit]
    if too_long and model.encoder.cfg.cached_layers > 0:
        raise UserError(f"{scp}: utterance {too_long[0]} has more frames than the encoder takes "
                        f"({limit}); cached encoder states cannot be chunked, decode from mel features "
                        "with a model that encodes them")
    if too_long:
        log.warning("%d utterance(s) longer than %d frames (e.g. %s): encoded in %g-s chunks (the "
                    "rest of the batch keeps full context)", len(too_long), limit, too_long[0],
                    model.encoder.cfg.decode_chunk_seconds)


def lang_of(dd, utt: str, lang_index: dict[str, int], data: str) -> int:
    lang = dd.utt2lang.get(utt)
    if lang is None:
        raise UserError(f"{data}/utt2lang: no language for utterance {utt}")
    if lang not in lang_index:
        raise UserError(f"{data}/utt2lang: utterance {utt} has language '{lang}', which the model "
                        f"was not trained for (model languages: {', '.join(lang_index)})")
    return lang_index[lang]


def batches(utts: tuple[str, ...], size: int):
    for i in range(0, len(utts), size):
        yield utts[i:i + size]


def pad(mats):
    """list of (T_i, D) -> ((B, T_max, D) zero-padded, (B,) lengths)."""
    import torch

    lens = torch.tensor([m.shape[0] for m in mats])
    x = torch.zeros(len(mats), int(lens.max()), mats[0].shape[1])
    for i, m in enumerate(mats):
        x[i, : m.shape[0]] = m
    return x, lens


if __name__ == "__main__":
    run_main(main)
