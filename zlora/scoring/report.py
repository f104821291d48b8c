"""Gather several scored runs into a recipe RESULTS.md in the paper's table layout (§VI).

Input: score directories, each holding ``result.json`` (written by ``zlora.bin.score``) and
``meta.json`` describing the run (``meta.yaml`` is read too, with ``yaml.safe_load``)::

    {"method": "Zipper-LoRA-Soft",          # row label (required)
     "regime": "chunked" | "full",          # chunked or full-context encoder (required)
     "seed": 0,                             # null if unknown; rows with several seeds: mean ± std
     "test_set": "test",                    # one set of tables per test set
     "exp": "exp/zipper_soft_s0",           # experiment dir (null if unknown)
     "config": "exp/zipper_soft_s0/config.yaml",
     "commands": ["python -m zlora.bin.train ...", "python -m zlora.bin.decode ...", ...],
     "git": "3f2c1ab" or "3f2c1ab-dirty"}   # revision of the code that produced the row

Tables: for each (test set, regime), one table per language group (e.g. high-/low-resource,
given by the user), one row per method, a column per language plus the unweighted mean of the
row's rates over the group's languages. A cell whose scoring found utterances without a hypothesis
(``missing`` in result.json) is marked ``94.60*`` and a footnote under the table gives the count:
an incomplete decode never passes for a result ("Avg", as in the paper's tables; it is left empty for a
row lacking one of the group's languages, to keep averages comparable). A method with several
seeds shows mean ± sample standard deviation (ddof=1) over seeds; its Avg is the mean ± std of
the per-seed averages. Relative change against a baseline method (Fig. 6) is
``100 * (rate - rate_baseline) / rate_baseline`` per language: negative means fewer errors.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml

from zlora.config import ConfigError, from_dict, to_dict
from zlora.scoring.score import validate_result_dict
from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text

META_FILES = ("meta.json", "meta.yaml")


@dataclass
class RunMeta:
    method: str
    regime: Literal["chunked", "full", "unspecified"]
    seed: int | None = None
    test_set: str = "test"
    exp: str | None = None
    config: str | None = None
    commands: list[str] = field(default_factory=list)
    git: str | None = None


@dataclass
class Run:
    meta: RunMeta
    result: dict          # result.json content
    path: str             # score dir


@dataclass
class MethodRow:
    """One method in one (test set, regime): one result dict per seed."""
    method: str
    runs: list[Run] = field(default_factory=list)

    def rates(self, lang: str) -> list[float]:
        return [r.result[lang]["rate"] for r in self.runs if lang in r.result]

    def metric(self, lang: str) -> str | None:
        return next((r.result[lang]["metric"] for r in self.runs if lang in r.result), None)

    def mean(self, lang: str) -> float | None:
        vals = self.rates(lang)
        return sum(vals) / len(vals) if vals and len(vals) == len(self.runs) else None

    def missing(self, lang: str) -> tuple[int, int]:
        """(utterances without a hypothesis, utterances) over the runs' scores of ``lang``."""
        scored = [r.result[lang] for r in self.runs if lang in r.result]
        return sum(x.get("missing", 0) for x in scored), sum(x["utts"] for x in scored)

    def group_averages(self, langs: list[str]) -> list[float] | None:
        """Per-seed unweighted means over ``langs``; None if any run lacks one of them."""
        if any(lang not in r.result for r in self.runs for lang in langs):
            return None
        return [sum(r.result[lang]["rate"] for lang in langs) / len(langs) for r in self.runs]


# ----------------------------------------------------------------------------- meta.json

def git_revision(path: str | os.PathLike = ".") -> str | None:
    """Short HEAD hash of the repo holding ``path``, ``-dirty`` if tracked files changed."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def command_line(argv: Iterable[str] | None = None, prog: str | None = None) -> str:
    """The current command, shell-quoted so it can be pasted back."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return shlex.join([*(prog or f"{sys.executable} -m {_main_module()}").split(), *argv])


def _main_module() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]


def write_meta(outdir: str | os.PathLike, meta: RunMeta) -> None:
    atomic_write_text(Path(outdir) / "meta.json", json.dumps(to_dict(meta), indent=2, ensure_ascii=False) + "\n")


def read_meta(score_dir: str | os.PathLike) -> RunMeta | None:
    """meta.json (or meta.yaml) of a score dir as RunMeta; None if there is none."""
    for name in META_FILES:
        path = Path(score_dir) / name
        if not path.is_file():
            continue
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f) if name.endswith(".json") else yaml.safe_load(f)
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot parse: {e}") from None
        if isinstance(data, dict) and "command" in data:  # a single command string is accepted too
            cmd = data.pop("command")
            data.setdefault("commands", [cmd] if isinstance(cmd, str) else cmd)
        try:
            return from_dict(RunMeta, data, str(path))
        except ConfigError as e:
            raise UserError(str(e)) from None
    return None


# ----------------------------------------------------------------------------- row labels

FOUNDATION_LABEL = "Foundation (stage 1)"
# Where a language-agnostic decode took its language from (zlora.bin.decode --lang.mode).
LID_SOURCES = {"whisper_lid": "Whisper", "probe": "LID probe", "mole": "MoLE classifier",
               "oracle": "oracle utt2lang"}


def method_label(config: Any) -> str:
    """The results-table row label of a training run, from its resolved config (a TrainConfig, or
    the dict of EXP/config.yaml): the paper's names, so every recipe and test spells them alike.

    Stage 1 is "Foundation (stage 1)"; a stage-2 run is its adapter kind's display name
    (``zlora.adapters.display_name``) plus " + initial-B" when ``adapter.init_b_from`` is set;
    a run distilled from language experts (``distill:``, arXiv 2506.21555) is "LoRA-KD", or
    "LoRA-KD output-only" for ``distill.mode: output``."""
    from zlora.adapters import display_name  # torch: only when a label is asked for

    cfg = config if isinstance(config, dict) else to_dict(config)
    if cfg.get("stage", 1) == 1:
        return FOUNDATION_LABEL
    adapter = cfg.get("adapter") or {}
    if "kind" not in adapter:
        raise UserError("a stage-2 config without adapter.kind has no method label")
    distill = cfg.get("distill")
    if distill:
        return "LoRA-KD output-only" if distill.get("mode") == "output" else "LoRA-KD"
    label = display_name(adapter["kind"])
    return label + " + initial-B" if adapter.get("init_b_from") else label


def decode_label(config: Any, lang_mode: str = "known", router_input: str = "hard") -> str:
    """``method_label`` plus, for a language-agnostic decode, where the language came from:
    "LoRA-KD (LID: Whisper)", "Zipper-LoRA-Soft (LID: Whisper, mixture)"."""
    label = method_label(config)
    if lang_mode == "known":
        return label
    source = LID_SOURCES.get(lang_mode, lang_mode)
    mixture = ", mixture" if lang_mode in ("whisper_lid", "probe") and router_input == "mixture" else ""
    return f"{label} (LID: {source}{mixture})"


def read_yaml_dict(path: str | os.PathLike, what: str) -> dict:
    """A YAML mapping (``yaml.safe_load``); UserError naming ``what`` if missing or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: cannot parse the {what}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the {what} is not a mapping")
    return data


def exp_config(exp: str | os.PathLike) -> dict:
    """EXP/config.yaml, the resolved config zlora.bin.train wrote, as a dict."""
    return read_yaml_dict(Path(exp) / "config.yaml", "resolved training config")


def baseline_label(arg: str | None) -> str | None:
    """A --baseline value as a row label: a training exp dir (holding config.yaml) stands for its
    ``method_label``, so a recipe names its baseline by run, never through a method -> label table;
    anything else is taken as the label itself (a run never made is then a baseline "not among
    these runs", which the report notes and Fig. 6 refuses)."""
    if arg and (Path(arg) / "config.yaml").is_file():
        return method_label(exp_config(arg))
    return arg


# ----------------------------------------------------------------------------- loading

def load_run(arg: str) -> Run:
    """``DIR`` (needs DIR/meta.json) or ``NAME=DIR`` (NAME overrides the method; meta optional)."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = None, arg
    result_path = Path(path) / "result.json"
    if not result_path.is_file():
        raise UserError(f"{result_path} does not exist (score the run with zlora.bin.score first)")
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{result_path}: cannot parse: {e}") from None
    validate_result_dict(result, str(result_path))
    meta = read_meta(path)
    if meta is None and name is None:
        raise UserError(f"{path}: no meta.json; write one (zlora.bin.score --method ... --regime ...) "
                        f"or pass NAME={path}")
    if meta is None:
        meta = RunMeta(method=name, regime="unspecified")
    elif name is not None:
        meta = dataclasses.replace(meta, method=name)
    return Run(meta=meta, result=result, path=str(path))


def group_runs(runs: list[Run]) -> dict[tuple[str, str], dict[str, MethodRow]]:
    """{(test_set, regime): {method: MethodRow}}, methods in first-seen order; duplicate seeds fail."""
    out: dict[tuple[str, str], dict[str, MethodRow]] = {}
    seen: dict[tuple, str] = {}
    for run in runs:
        m = run.meta
        key = (m.test_set, m.regime, m.method, m.seed)
        if key in seen:
            raise UserError(f"{run.path} and {seen[key]} are both method {m.method!r}, regime {m.regime}, "
                            f"test set {m.test_set}, seed {m.seed}: give them different seeds")
        seen[key] = run.path
        rows = out.setdefault((m.test_set, m.regime), {})
        rows.setdefault(m.method, MethodRow(m.method)).runs.append(run)
    return out


def mean_rates(rows: dict[str, MethodRow]) -> dict[str, dict[str, float]]:
    """{method: {lang: mean rate over seeds}} for the figures."""
    out = {}
    for method, row in rows.items():
        langs = {lang for r in row.runs for lang in r.result}
        out[method] = {lang: row.mean(lang) for lang in sorted(langs) if row.mean(lang) is not None}
    return out


# ----------------------------------------------------------------------------- tables

def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fmt_cell(values: list[float] | None) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def language_groups(all_langs: list[str], groups: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """[(title, langs)]: the user's groups (only languages present), then any left over."""
    if not groups:
        return [("All languages", sorted(all_langs))]
    out, used = [], set()
    for title, langs in groups.items():
        present = [lang for lang in langs if lang in all_langs]
        used.update(langs)
        if present:
            out.append((title, present))
    rest = sorted(lang for lang in all_langs if lang not in used)
    if rest:
        out.append(("Other languages", rest))
    return out


def method_table(rows: dict[str, MethodRow], langs: list[str]) -> str:
    """Markdown: one row per method, a column per language, Avg and the number of seeds."""
    metric = {lang: next((r.metric(lang) for r in rows.values() if r.metric(lang)), "wer") for lang in langs}
    head = ["Method", *(f"{lang} ({metric[lang].upper()})" for lang in langs), "Avg", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    notes = []
    for method, row in rows.items():
        cells = []
        for lang in langs:
            cell = fmt_cell(row.rates(lang) if len(row.rates(lang)) == len(row.runs) else None)
            missing, utts = row.missing(lang)
            if missing:
                cell += "*"
                notes.append(f"\\* {method}, {lang}: {missing} of {utts} utterances had no hypothesis "
                             "(scored as all deletions: the decode was incomplete)")
            cells.append(cell)
        avg = fmt_cell(row.group_averages(langs)) + ("*" if any(row.missing(lang)[0] for lang in langs) else "")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {avg} | {len(row.runs)} |")
    return "\n".join(lines + ([""] + notes if notes else []))


def relative_change(rows: dict[str, MethodRow], baseline: str, langs: list[str]) -> dict[str, dict[str, float]]:
    """{method: {lang or 'Avg': 100*(rate-base)/base}} on seed means; skips zero baselines."""
    base = rows[baseline]
    out = {}
    for method, row in rows.items():
        if method == baseline:
            continue
        changes = {}
        for lang in langs:
            b, m = base.mean(lang), row.mean(lang)
            if b is not None and m is not None and b > 0:
                changes[lang] = 100.0 * (m - b) / b
        b_avg, m_avg = base.group_averages(langs), row.group_averages(langs)
        if b_avg and m_avg and mean_std(b_avg)[0] > 0:
            changes["Avg"] = 100.0 * (mean_std(m_avg)[0] - mean_std(b_avg)[0]) / mean_std(b_avg)[0]
        out[method] = changes
    return out


def relative_table(rows: dict[str, MethodRow], baseline: str, langs: list[str]) -> str:
    changes = relative_change(rows, baseline, langs)
    cols = [*langs, "Avg"]
    lines = ["| Method | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for method, ch in changes.items():
        lines.append(f"| {method} | " + " | ".join(f"{ch[c]:+.1f}%" if c in ch else "–" for c in cols) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- RESULTS.md

@dataclass
class ReportOptions:
    groups: dict[str, list[str]] = field(default_factory=dict)   # title -> languages, in order
    baseline: str | None = "Vanilla-LoRA"
    title: str = "Results"
    figures_dir: str | None = None   # also draw Fig. 5/6 PNGs here and link them
    lid: list[tuple[str, dict]] = field(default_factory=list)   # (row label, lid.json content)


def section_title(test_set: str, regime: str) -> str:
    regime_name = {"chunked": "chunked encoder", "full": "non-chunked (full-context) encoder",
                   "unspecified": "encoder regime unspecified"}[regime]
    return f"{test_set}: {regime_name}"


def build_results_md(runs: list[Run], opts: ReportOptions, out_path: str | os.PathLike) -> str:
    """The RESULTS.md text (figures, when asked for, are written as a side effect)."""
    grouped = group_runs(runs)
    parts = [f"# {opts.title}", "", _preamble(opts), ""]
    # chunked first, as in the paper's Tables IV/V
    order = sorted(grouped, key=lambda k: (k[0], {"chunked": 0, "full": 1}.get(k[1], 2)))
    for key in order:
        parts += _section(key, grouped[key], opts, out_path)
    if opts.lid:
        parts += lid_section(opts.lid, [x for langs in opts.groups.values() for x in langs])
    parts += _provenance(runs)
    return "\n".join(parts).rstrip() + "\n"


def _preamble(opts: ReportOptions) -> str:
    lines = ["WER/CER in % (CER for zh/ja/ko/th, WER otherwise) after Whisper text normalisation "
             "(paper §V-B; see `zlora/scoring/normalize.py`). Avg is the unweighted mean over the "
             "group's languages. With several seeds a cell is mean ± sample std over seeds."]
    if opts.baseline:
        lines.append(f"Relative change is 100·(rate − rate of {opts.baseline}) / rate of "
                     f"{opts.baseline}: negative means fewer errors than the baseline (Fig. 6).")
    return "\n".join(lines)


def _section(key, rows: dict[str, MethodRow], opts: ReportOptions, out_path) -> list[str]:
    test_set, regime = key
    all_langs = sorted({lang for row in rows.values() for r in row.runs for lang in r.result})
    parts = [f"## {section_title(test_set, regime)}", ""]
    for title, langs in language_groups(all_langs, opts.groups):
        parts += [f"### {title}", "", method_table(rows, langs), ""]
        if opts.baseline and opts.baseline in rows and len(rows) > 1:
            parts += [f"Relative change vs {opts.baseline} (%):", "",
                      relative_table(rows, opts.baseline, langs), ""]
    if opts.baseline and opts.baseline not in rows:
        parts += [f"(baseline {opts.baseline!r} not among these runs: no relative change)", ""]
    if opts.figures_dir:
        parts += _figures(key, rows, opts, all_langs, out_path)
    return parts


def _figures(key, rows, opts: ReportOptions, all_langs, out_path) -> list[str]:
    from zlora.scoring import plots  # matplotlib only when figures are asked for

    stem = "-".join(_slug(k) for k in key)
    means = mean_rates(rows)
    langs = [lang for _, group in language_groups(all_langs, opts.groups) for lang in group]
    figs = Path(opts.figures_dir)
    rel = os.path.relpath(figs, Path(out_path).parent)
    radar = figs / f"radar-{stem}.png"
    plots.radar_chart(means, langs, radar, title=f"1 − WER/CER (%), {section_title(*key)}")
    parts = [f"![Fig. 5 style radar]({rel}/{radar.name})", ""]
    if opts.baseline and opts.baseline in rows and len(rows) > 1:
        bars = figs / f"relchange-{stem}.png"
        plots.relative_change_bars(means, opts.baseline, langs, bars,
                                   title=f"Relative change vs {opts.baseline}, {section_title(*key)}")
        parts += [f"![Fig. 6 style relative change]({rel}/{bars.name})", ""]
    return parts


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def load_lid(arg: str) -> tuple[str, dict]:
    """LABEL=PATH to a decode dir's lid.json (zlora.decode.agnostic.lid_report) -> (label, dict)."""
    label, sep, path = arg.partition("=")
    if not sep or not label or not path:
        raise UserError(f"--lid {arg!r}: expected LABEL=path/to/lid.json")
    try:
        rep = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"--lid {path}: cannot read a lid.json ({e})") from e
    if not isinstance(rep, dict) or not {"accuracy", "utts", "per_language"} <= rep.keys():
        raise UserError(f"--lid {path}: not a lid.json (needs accuracy, utts, per_language)")
    return label, rep


def lid_section(lid: list[tuple[str, dict]], langs: list[str]) -> list[str]:
    """LID accuracy (%) per language of language-agnostic decoding runs, one row per label."""
    seen = sorted({x for _, rep in lid for x in rep["per_language"]})
    langs = [x for x in langs if x in seen] + [x for x in seen if x not in langs]
    head = ["Decoding run", "LID from", *langs, "All", "utts"]
    rows = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for label, rep in lid:
        per = rep["per_language"]
        cells = [f"{100 * per[x]['accuracy']:.1f}" if x in per else "-" for x in langs]
        rows.append(f"| {label} | {rep.get('lang_mode', '?')} | " + " | ".join(cells)
                    + f" | {100 * rep['accuracy']:.1f} | {rep['utts']} |")
    return ["## Language identification in language-agnostic decoding", "",
            "Accuracy (%) of the language each run decoded with, against utt2lang "
            "(`lid.json` of the decode dir).", "", *rows, ""]


def _provenance(runs: list[Run]) -> list[str]:
    parts = ["## How each row was produced", ""]
    for run in sorted(runs, key=lambda r: (r.meta.test_set, r.meta.regime, r.meta.method,
                                           -1 if r.meta.seed is None else r.meta.seed)):
        parts += _row_provenance(run)
    return parts


def _row_provenance(run: Run) -> list[str]:
    """One row's heading, files and commands: training and decoding as their dirs recorded them,
    then the commands meta.json lists (the score command)."""
    m = run.meta
    seed = "" if m.seed is None else f" / seed {m.seed}"   # unknown seed: say nothing
    steps = recorded_steps(run)
    parts = [f"### {m.method} / {m.regime} / {m.test_set}{seed}", "",
             f"- scores: `{run.path}`", f"- git revision: `{m.git or 'unknown'}`",
             f"- experiment: `{m.exp or 'unknown'}`", *(f"- {what}: `{path}`" for what, path, _ in steps)]
    if not any(what == "training config" for what, _, _ in steps):
        parts.append(f"- training config: `{m.config or 'unknown'}`")
    recorded = [cmd for _, _, cmd in steps]
    commands = recorded + [c for c in m.commands if c not in recorded]
    if commands:
        parts += ["- commands:", "", "```sh", *commands, "```"]
    else:
        parts.append("- commands: unknown")
    return parts + [""]


def recorded_steps(run: Run) -> list[tuple[str, str, str]]:
    """(what, config file, command) of the training and decoding that produced ``run``, in run
    order, from what they recorded: the decode dir (the score dir's parent) holds decode.yaml,
    which names the exp; an exp holds its resolved config.yaml, whose ``init_from`` names the
    stage-1 exp. Each command reruns the step from its resolved config (a multi-GPU training ran
    the same command under torchrun). Steps whose record is missing are left out."""
    steps = []
    decode_yaml = Path(run.path).parent / "decode.yaml"
    decode = _yaml_or_none(decode_yaml)
    exp = run.meta.exp or (decode or {}).get("exp")
    chain: list[Path] = []
    while isinstance(exp, str):
        config = _exp_dir(exp) / "config.yaml"
        cfg = _yaml_or_none(config)
        if cfg is None or config in chain:   # no record, or a config pointing back: stop, do not loop
            break
        chain.append(config)
        exp = cfg.get("init_from") if cfg.get("stage", 1) == 2 else None
    for k, config in enumerate(reversed(chain)):
        what = "training config" if k == len(chain) - 1 else "stage-1 training config"
        steps.append((what, str(config), f"python -m zlora.bin.train --config {shlex.quote(str(config))}"))
    if decode is not None:
        steps.append(("decoding config", str(decode_yaml),
                      f"python -m zlora.bin.decode --config {shlex.quote(str(decode_yaml))}"))
    return steps


def _exp_dir(path: str) -> Path:
    """The exp dir of an ``init_from``/``exp`` path: the dir itself, or EXP of EXP/checkpoints/step-N."""
    p = Path(path)
    return p.parent.parent if p.parent.name == "checkpoints" else p


def _yaml_or_none(path: Path) -> dict | None:
    """A recorded YAML mapping, or None when it is absent or unreadable (provenance is best effort:
    the scores stand without it)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_results_md(runs: list[Run], opts: ReportOptions, out_path: str | os.PathLike) -> str:
    text = build_results_md(runs, opts, out_path)
    atomic_write_text(out_path, text)
    return text
