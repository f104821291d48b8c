"""WER/CER per language with jiwer, after Whisper normalisation (paper §V-B).

Metric: CER for zh, ja, ko and th, on the characters of the normalised text with all whitespace
removed; WER on whitespace-separated words for every other language. Error counts (sub/del/ins)
come from jiwer's Levenshtein alignment, per utterance, and are summed per language; ``rate`` is
``errors / ref_units * 100``.

Bad input, decided here:
* a reference utterance with no hypothesis line is scored against an empty hypothesis (all
  deletions), logged as a warning and listed in summary.md and errs-<lang>.txt; result.json then
  gives the count per language (``missing``, present only when > 0), which RESULTS.md marks
  (zlora.scoring.report); ``strict=True`` (``score --strict``) makes it an error instead;
* a hypothesis for an utterance absent from the reference is an error naming it and the file;
* an empty hypothesis file (no lines) is an error naming the file;
* a reference that is empty after normalisation (e.g. only "[noise]" or punctuation) has no
  units to score: it is excluded from every count (its hypothesis' insertions too), logged and
  listed in summary.md. A rate over zero reference units would be undefined, and counting its
  insertions would make the rate depend on how many such lines a test set happens to hold.
  A language whose references are all empty is left out of result.json, with a warning.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import jiwer

from zlora.scoring.normalize import base_language, describe, normalize
from zlora.scoring.textio import read_transcripts, read_utt2lang
from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger("scoring")

CER_LANGUAGES = frozenset({"zh", "ja", "ko", "th"})
RESULT_KEYS = ("metric", "errors", "ref_units", "rate", "sub", "del", "ins", "utts")
OPTIONAL_RESULT_KEYS = ("missing",)     # utterances without a hypothesis; only written when > 0


def metric_for(lang: str) -> str:
    """``'cer'`` for zh/ja/ko/th (also with a region suffix), ``'wer'`` otherwise."""
    return "cer" if base_language(lang) in CER_LANGUAGES else "wer"


def to_units(normalized: str, metric: str) -> list[str]:
    """Words for WER; characters with all whitespace removed for CER."""
    if metric == "cer":
        return list("".join(normalized.split()))
    return normalized.split()


@dataclass
class UttScore:
    """One utterance's alignment. ``ops``: (ref unit or None, hyp unit or None) pairs in order."""
    utt: str
    ref: list[str]
    hyp: list[str]
    ops: list[tuple[str | None, str | None]]
    sub: int = 0
    dele: int = 0
    ins: int = 0
    missing: bool = False

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins


@dataclass
class LangScore:
    metric: str
    errors: int
    ref_units: int
    sub: int
    dele: int
    ins: int
    utts: int
    missing: int = 0            # of ``utts``, those without a hypothesis line (scored as deletions)

    @property
    def rate(self) -> float:
        return self.errors / self.ref_units * 100.0

    def to_dict(self) -> dict:
        """The result.json entry: RESULT_KEYS, plus ``missing`` when some hypotheses are missing."""
        out = {"metric": self.metric, "errors": self.errors, "ref_units": self.ref_units,
               "rate": self.rate, "sub": self.sub, "del": self.dele, "ins": self.ins,
               "utts": self.utts}
        if self.missing:
            out["missing"] = self.missing
        return out


@dataclass
class ScoreReport:
    per_lang: dict[str, LangScore] = field(default_factory=dict)
    alignments: dict[str, list[UttScore]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)       # no hypothesis line: all deletions
    empty_refs: list[str] = field(default_factory=list)    # excluded from scoring
    dropped_langs: list[str] = field(default_factory=list)  # no scoreable utterance left

    def result_dict(self) -> dict:
        return {lang: self.per_lang[lang].to_dict() for lang in sorted(self.per_lang)}


def load_inputs(ref_path, hyp_path, utt2lang_path) -> tuple[dict, dict, dict]:
    """Read the three files and reject bad hypothesis files (see module docstring)."""
    refs = read_transcripts(ref_path, "reference")
    hyps = read_transcripts(hyp_path, "hypothesis")
    utt2lang = read_utt2lang(utt2lang_path)
    if not refs:
        raise UserError(f"reference file {ref_path} is empty (no utterances)")
    if not hyps:
        raise UserError(f"hypothesis file {hyp_path} is empty (no utterances)")
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise UserError(f"{hyp_path}: {len(extra)} hypothesis utterance(s) not in the reference "
                        f"{ref_path}: {_first(extra)}")
    no_lang = [u for u in refs if u not in utt2lang]
    if no_lang:
        raise UserError(f"{utt2lang_path}: no language for {len(no_lang)} reference utterance(s): "
                        f"{_first(no_lang)}")
    return refs, hyps, utt2lang


def score_files(ref_path, hyp_path, utt2lang_path, preserve_marks: Iterable[str] = (),
                strict: bool = False) -> ScoreReport:
    """Score the files; ``strict``: a reference utterance without a hypothesis is an error."""
    refs, hyps, utt2lang = load_inputs(ref_path, hyp_path, utt2lang_path)
    if strict:
        missing = [u for u in refs if u not in hyps]
        if missing:
            raise UserError(f"{hyp_path}: no hypothesis for {len(missing)} of {len(refs)} reference "
                            f"utterances ({_first(missing, 5)}): the decode is incomplete; rerun it (finished "
                            "parts are kept), or score without --strict to count them as deletions")
    return score_corpus(refs, hyps, utt2lang, preserve_marks)


def score_corpus(refs: dict[str, str], hyps: dict[str, str], utt2lang: dict[str, str],
                 preserve_marks: Iterable[str] = ()) -> ScoreReport:
    """Normalise, align and count per language. ``hyps`` must not hold utts absent from ``refs``."""
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise UserError(f"hypothesis utterance(s) not in the reference: {_first(extra)}")
    preserve_marks = tuple(preserve_marks)
    report = ScoreReport()
    by_lang: dict[str, list[tuple[str, list[str], list[str], bool]]] = {}
    for utt in sorted(refs):
        lang = utt2lang[utt]
        metric = metric_for(lang)
        ref_units = to_units(normalize(refs[utt], lang, preserve_marks), metric)
        hyp_units = to_units(normalize(hyps.get(utt, ""), lang, preserve_marks), metric)
        if not ref_units:
            report.empty_refs.append(utt)
            continue
        if utt not in hyps:
            report.missing.append(utt)
        by_lang.setdefault(lang, []).append((utt, ref_units, hyp_units, utt not in hyps))
    _warn(report)
    for lang in sorted(set(utt2lang[u] for u in refs)):
        if lang not in by_lang:
            report.dropped_langs.append(lang)
            log.warning("language %s: every reference is empty after normalisation; not scored", lang)
            continue
        utt_scores = align(by_lang[lang])
        report.alignments[lang] = utt_scores
        report.per_lang[lang] = _sum_language(metric_for(lang), utt_scores)
    if not report.per_lang:
        raise UserError("nothing to score: every reference is empty after normalisation")
    return report


def align(items: list[tuple[str, list[str], list[str], bool]]) -> list[UttScore]:
    """Align (utt, ref_units, hyp_units, missing) items with jiwer; units must not hold spaces."""
    # Units are joined with single spaces and split again by jiwer's default word transform, so
    # each unit (a word, or a character for CER) is one jiwer token.
    out = jiwer.process_words([" ".join(r) for _, r, _, _ in items],
                              [" ".join(h) for _, _, h, _ in items])
    scores = []
    for (utt, ref, hyp, missing), chunks in zip(items, out.alignments):
        s = UttScore(utt=utt, ref=ref, hyp=hyp, ops=[], missing=missing)
        for c in chunks:
            r, h = ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]
            if c.type in ("equal", "substitute"):
                s.ops.extend(zip(r, h))
                s.sub += len(r) if c.type == "substitute" else 0
            elif c.type == "delete":
                s.ops.extend((x, None) for x in r)
                s.dele += len(r)
            elif c.type == "insert":
                s.ops.extend((None, x) for x in h)
                s.ins += len(h)
            else:
                raise RuntimeError(f"unknown jiwer alignment chunk type {c.type!r}")
        scores.append(s)
    # Our per-utterance counts must add up to jiwer's totals.
    totals = (sum(s.sub for s in scores), sum(s.dele for s in scores), sum(s.ins for s in scores))
    assert totals == (out.substitutions, out.deletions, out.insertions), (totals, out)
    return scores


def _sum_language(metric: str, scores: list[UttScore]) -> LangScore:
    sub, dele, ins = (sum(getattr(s, k) for s in scores) for k in ("sub", "dele", "ins"))
    return LangScore(metric=metric, errors=sub + dele + ins, ref_units=sum(len(s.ref) for s in scores),
                     sub=sub, dele=dele, ins=ins, utts=len(scores), missing=sum(s.missing for s in scores))


def _warn(report: ScoreReport) -> None:
    if report.missing:
        log.warning("%d reference utterance(s) have no hypothesis; scored as all deletions: %s",
                    len(report.missing), _first(report.missing))
    if report.empty_refs:
        log.warning("%d reference utterance(s) are empty after normalisation; excluded: %s",
                    len(report.empty_refs), _first(report.empty_refs))


def _first(items: list[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# ----------------------------------------------------------------------------- output files

def format_ops(ops: list[tuple[str | None, str | None]]) -> str:
    """icefall style: ``a (b->c) (d->*) (*->e)``."""
    parts = []
    for r, h in ops:
        if r == h:
            parts.append(r)
        else:
            parts.append(f"({r if r is not None else '*'}->{h if h is not None else '*'})")
    return " ".join(parts)


def format_errs(lang: str, score: LangScore, utts: list[UttScore], norm_line: str) -> str:
    """The errs-<lang>.txt text: totals, per-utterance alignments, then error tallies."""
    unit = "characters" if score.metric == "cer" else "words"
    correct = score.ref_units - score.sub - score.dele
    lines = [f"%{score.metric.upper()} = {score.rate:.2f}",
             f"Errors: {score.ins} insertions, {score.dele} deletions, {score.sub} substitutions, "
             f"over {score.ref_units} reference {unit} ({correct} correct)",
             f"Normalisation: {norm_line}",
             "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, "
             "DELETIONS:, INSERTIONS:", "", "PER-UTT DETAILS: corr or (ref->hyp)"]
    sep = "" if score.metric == "cer" else " "
    for s in utts:
        note = "  [no hypothesis line: counted as deletions]" if s.missing else ""
        lines += [f"{s.utt}:\tref={sep.join(s.ref)}", f"{s.utt}:\thyp={sep.join(s.hyp)}",
                  f"{s.utt}:\t{format_ops(s.ops)}",
                  f"{s.utt}:\terrors={s.errors} sub={s.sub} del={s.dele} ins={s.ins} "
                  f"ref_units={len(s.ref)}{note}"]
    lines += ["", *_tally(utts)]
    return "\n".join(lines) + "\n"


def _tally(utts: list[UttScore]) -> list[str]:
    subs, dels, inss = Counter(), Counter(), Counter()
    for s in utts:
        for r, h in s.ops:
            if r is not None and h is not None and r != h:
                subs[(r, h)] += 1
            elif h is None:
                dels[r] += 1
            elif r is None:
                inss[h] += 1
    out = ["SUBSTITUTIONS: count ref -> hyp"]
    out += [f"{n}   {r} -> {h}" for (r, h), n in _ranked(subs)]
    out += ["", "DELETIONS: count ref"] + [f"{n}   {r}" for r, n in _ranked(dels)]
    out += ["", "INSERTIONS: count hyp"] + [f"{n}   {h}" for h, n in _ranked(inss)]
    return out


def _ranked(counter: Counter) -> list:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def format_table(result: dict) -> str:
    """Markdown table of a result.json dict plus an unweighted average over languages."""
    lines = ["| lang | metric | rate (%) | errors | ref units | sub | del | ins | utts |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lang, r in result.items():
        lines.append(f"| {lang} | {r['metric'].upper()} | {r['rate']:.2f} | {r['errors']} | "
                     f"{r['ref_units']} | {r['sub']} | {r['del']} | {r['ins']} | {r['utts']} |")
    avg = sum(r["rate"] for r in result.values()) / len(result)
    lines.append(f"| average (unweighted over languages) | | {avg:.2f} | | | | | | "
                 f"{sum(r['utts'] for r in result.values())} |")
    return "\n".join(lines)


def format_summary(report: ScoreReport, sources: dict[str, str], norm_text: str) -> str:
    parts = ["# Scoring summary", ""]
    parts += [f"- {k}: `{v}`" for k, v in sources.items()]
    parts += ["- metric: CER (characters, whitespace removed) for zh/ja/ko/th, WER otherwise; "
              "jiwer alignment", "- normalisation (same for ref and hyp):"]
    parts += [f"  - {line}" for line in norm_text.splitlines()]
    parts += ["", format_table(report.result_dict()), ""]
    parts += _listing("Missing hypotheses (scored as all deletions)", report.missing)
    parts += _listing("References empty after normalisation (excluded)", report.empty_refs)
    parts += _listing("Languages with no scoreable reference (not in result.json)", report.dropped_langs)
    return "\n".join(parts).rstrip() + "\n"


def _listing(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"## {title}: {len(items)}", "", *(f"- {u}" for u in items), ""]


def validate_result_dict(result: dict, where: str = "result.json") -> dict:
    """Check the exact result.json schema (used by the report); returns ``result``."""
    if not isinstance(result, dict) or not result:
        raise UserError(f"{where}: expected a non-empty mapping of language -> scores")
    for lang, r in result.items():
        if not isinstance(r, dict) or not set(RESULT_KEYS) <= set(r) <= {*RESULT_KEYS, *OPTIONAL_RESULT_KEYS}:
            keys = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise UserError(f"{where}: language {lang!r}: expected keys {list(RESULT_KEYS)} (and optionally "
                            f"{list(OPTIONAL_RESULT_KEYS)}), got {keys}")
        if r["metric"] not in ("wer", "cer"):
            raise UserError(f"{where}: language {lang!r}: metric must be 'wer' or 'cer', got {r['metric']!r}")
        for k in ("errors", "ref_units", "sub", "del", "ins", "utts", *(k for k in OPTIONAL_RESULT_KEYS if k in r)):
            if not isinstance(r[k], int) or isinstance(r[k], bool) or r[k] < 0:
                raise UserError(f"{where}: language {lang!r}: {k} must be a non-negative integer")
        if not isinstance(r["rate"], (int, float)) or isinstance(r["rate"], bool):
            raise UserError(f"{where}: language {lang!r}: rate must be a number")
    return result


def lang_file_name(lang: str) -> str:
    """errs-<lang>.txt, refusing language codes that would escape the output dir."""
    if not lang or os.sep in lang or lang.startswith("."):
        raise UserError(f"language code {lang!r} cannot be used in a file name")
    return f"errs-{lang}.txt"


def write_outputs(report: ScoreReport, outdir: str | os.PathLike, sources: dict[str, str],
                  preserve_marks: Iterable[str] = ()) -> dict:
    """Write errs-<lang>.txt, summary.md and (last, as the completion mark) result.json."""
    outdir = Path(outdir)
    result = report.result_dict()
    for lang, score in report.per_lang.items():
        norm_line = describe([lang], preserve_marks).split(": ", 1)[1]
        atomic_write_text(outdir / lang_file_name(lang),
                          format_errs(lang, score, report.alignments[lang], norm_line))
    norm_text = describe(report.per_lang, preserve_marks)
    atomic_write_text(outdir / "summary.md", format_summary(report, sources, norm_text))
    atomic_write_text(outdir / "result.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result
