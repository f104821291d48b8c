"""Synthesise the planned splits into Kaldi data dirs, one atomic directory each.

Layout under OUT: ``<split>/{wav.scp,text,utt2spk,spk2utt,utt2lang,utt2dur}`` plus
``<split>/wav/<utt>.wav`` (16-bit mono), ``synth_config.yaml`` (the resolved config) and
``synth_stats.json`` (utterances and hours per split and language). A split is built in
``<split>.tmp`` and renamed when complete, so an existing ``<split>`` is always whole and is left
alone on a rerun; a stale ``.tmp`` from a killed run is discarded.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import yaml

from zlora.config import save_config, to_dict
from zlora.data.synth.config import RUNTIME_FIELDS, SynthConfig
from zlora.data.synth.espeak import SynthError, UttSpec, espeak_version, synthesize, write_wav
from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger("synth")
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2dur")


def _write_table(path: Path, rows: dict[str, str]) -> None:
    """Kaldi table sorted by key under LC_ALL=C (Python's code-point order on str)."""
    path.write_text("".join(f"{k} {rows[k]}\n" for k in sorted(rows)), encoding="utf-8")


def write_kaldi_files(dir_: Path, final_dir: Path, specs: list[UttSpec], n_samples: dict[str, int],
                      sample_rate: int) -> None:
    """Write the six Kaldi files into ``dir_``; wav.scp points at ``final_dir/wav`` (absolute)."""
    wav_dir = final_dir.resolve() / "wav"
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for s in specs:
        spk2utt[s.spk].append(s.utt)
    _write_table(dir_ / "wav.scp", {s.utt: str(wav_dir / f"{s.utt}.wav") for s in specs})
    _write_table(dir_ / "text", {s.utt: s.text for s in specs})
    _write_table(dir_ / "utt2spk", {s.utt: s.spk for s in specs})
    _write_table(dir_ / "spk2utt", {k: " ".join(sorted(v)) for k, v in spk2utt.items()})
    _write_table(dir_ / "utt2lang", {s.utt: s.lang for s in specs})
    _write_table(dir_ / "utt2dur", {s.utt: f"{n_samples[s.utt] / sample_rate:.4f}" for s in specs})


def _synth_one(job: tuple[UttSpec, str, int, str, float | None]) -> tuple[str, int]:
    spec, wav_dir, sample_rate, espeak, max_trailing_silence = job
    samples = synthesize(spec, sample_rate, espeak, max_trailing_silence)
    write_wav(os.path.join(wav_dir, f"{spec.utt}.wav"), samples, sample_rate)
    return spec.utt, len(samples)


def _synth_all(specs: list[UttSpec], wav_dir: Path, cfg: SynthConfig, name: str) -> dict[str, int]:
    jobs = [(s, str(wav_dir), cfg.sample_rate, cfg.espeak, cfg.max_trailing_silence) for s in specs]
    out, t0, step = {}, time.time(), max(500, len(jobs) // 10)
    if cfg.nj == 1:
        results = map(_synth_one, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(cfg.nj)
        results = pool.imap_unordered(_synth_one, jobs, chunksize=16)
    try:
        for utt, n in results:
            out[utt] = n
            if len(out) % step == 0:
                log.info("%s: %d/%d utterances (%.0f s)", name, len(out), len(jobs), time.time() - t0)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return out


def synthesize_split(name: str, specs: list[UttSpec], out: Path, cfg: SynthConfig) -> bool:
    """Build ``out/name`` atomically. Returns False (and does nothing) if it already exists."""
    final, tmp = out / name, out / f"{name}.tmp"
    if final.is_dir():
        log.info("%s: exists, skipped", final)
        return False
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "wav").mkdir(parents=True)
    t0 = time.time()
    n_samples = _synth_all(specs, tmp / "wav", cfg, name)
    write_kaldi_files(tmp, final, specs, n_samples, cfg.sample_rate)
    os.replace(tmp, final)
    hours = sum(n_samples.values()) / cfg.sample_rate / 3600
    log.info("%s: %d utterances, %.3f h of audio in %.1f s", final, len(specs), hours, time.time() - t0)
    return True


def content_config(cfg: SynthConfig) -> dict:
    """The config fields that determine the corpus (runtime-only fields dropped)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in RUNTIME_FIELDS}


def check_or_record_config(cfg: SynthConfig, out: Path) -> None:
    """First run: write OUT/synth_config.yaml. Later runs: refuse a different config, so that an
    output dir never mixes splits made with different settings."""
    path = out / "synth_config.yaml"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            old = {k: v for k, v in (yaml.safe_load(f) or {}).items() if k not in RUNTIME_FIELDS}
        new = content_config(cfg)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(f"{out} was synthesised with a different config (differs in: {', '.join(diff)}; "
                            f"see {path}); remove {out} or choose another output dir")
        return
    save_config(cfg, path)


def corpus_stats(out: Path, names: list[str]) -> dict:
    """{split: {lang: {'utts', 'hours'}}} read back from each split's utt2lang and utt2dur."""
    stats: dict[str, dict] = {}
    for name in names:
        lang_of = dict(ln.split(" ", 1) for ln in (out / name / "utt2lang").read_text("utf-8").splitlines())
        per: dict[str, dict] = defaultdict(lambda: {"utts": 0, "hours": 0.0})
        for ln in (out / name / "utt2dur").read_text("utf-8").splitlines():
            utt, dur = ln.split(" ")
            per[lang_of[utt]]["utts"] += 1
            per[lang_of[utt]]["hours"] += float(dur) / 3600
        stats[name] = {lang: {"utts": v["utts"], "hours": round(v["hours"], 5)} for lang, v in sorted(per.items())}
    return stats


def format_stats(stats: dict) -> str:
    """A plain-text table: one row per language, utterances and minutes per split."""
    splits = stats["splits"]
    langs = sorted({lang for per in splits.values() for lang in per})
    head = "lang " + " ".join(f"{name:>22}" for name in splits)
    rows = [head]
    for lang in langs + ["total"]:
        cells = []
        for per in splits.values():
            items = per.values() if lang == "total" else [per[lang]] if lang in per else []
            n, h = sum(v["utts"] for v in items), sum(v["hours"] for v in items)
            cells.append(f"{n:>8} utts {h * 60:>7.1f} min" if items else f"{'-':>22}")
        rows.append(f"{lang:<5}" + " ".join(cells))
    return "\n".join(rows)


def write_stats(out: Path, names: list[str], cfg: SynthConfig) -> dict:
    stats = {"espeak": espeak_version(cfg.espeak), "splits": corpus_stats(out, names)}
    atomic_write_text(out / "synth_stats.json", json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    return stats


def espeak_text_filter(cfg: SynthConfig):
    """accept(lang, texts): reject texts espeak-ng cannot read with the language's own rules
    (only where that means spelled-out characters, see ``text.SWITCH_IS_ERROR``)."""
    from zlora.data.synth.espeak import language_switches
    from zlora.data.synth.text import SWITCH_IS_ERROR

    def accept(lang: str, texts: list[str]) -> list[bool]:
        if lang not in SWITCH_IS_ERROR:
            return [True] * len(texts)
        bad = language_switches(texts, cfg.voices[lang], cfg.espeak)
        for text in (t for t, b in zip(texts, bad) if b):
            log.info("%s: dropped a transcript espeak-ng cannot read natively: %s", lang, text)
        return [not b for b in bad]
    return accept


def build_corpus(cfg: SynthConfig, out: str | os.PathLike) -> dict:
    """Plan and synthesise every split missing under ``out``; returns the stats (see write_stats).
    A rerun over a complete ``out`` with the same config only re-reads the stats."""
    from zlora.data.synth.espeak import list_variants, require_espeak
    from zlora.data.synth.plan import SPLIT_NAMES, plan_corpus

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_or_record_config(cfg, out)
    names = list(SPLIT_NAMES)
    stats_file = out / "synth_stats.json"
    if stats_file.is_file() and all((out / n).is_dir() for n in names):
        log.info("%s: complete, nothing to do", out)
        return json.loads(stats_file.read_text("utf-8"))
    require_espeak(cfg.espeak)
    installed = list_variants(cfg.espeak)
    unknown = sorted(set(cfg.variants or []) - set(installed))
    if unknown:
        raise UserError(f"variants: {unknown} are not installed espeak-ng variants; installed: {installed}")
    try:
        plan = plan_corpus(cfg, installed if cfg.variants is None else cfg.variants, espeak_text_filter(cfg))
        for name in names:
            synthesize_split(name, plan[name], out, cfg)
    except (ValueError, SynthError) as e:  # config-induced or espeak-ng failures: one clear line
        raise UserError(str(e)) from e
    return write_stats(out, names, cfg)
