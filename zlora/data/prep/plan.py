"""A data plan: which corpus splits, how many hours of each, which test subsets (paper Table I).

A plan (YAML, typed by :class:`DataPlan`) names data sets; each set is a list of sources::

    seed: 20260317
    roots: {mls: /corpora/mls, commonvoice: /corpora/cv-corpus-18.0-2024-06-14}   # corpus -> root
    sets:
      train_sft:
        - {corpus: mls, lang: de, split: train, hours: 1000}
        - {corpus: commonvoice, lang: ar, split: train, hours: 1, utt_list: lists/ar_1h.txt}
      test_cv_pt:
        - {corpus: commonvoice, lang: pt, split: train, hours: 1}
      train_lowres:
        - {corpus: commonvoice, lang: pt, split: train, hours: 1, exclude_sets: [test_cv_pt]}

``roots`` maps registered corpus names (zlora.data.prep.CORPORA) to their roots (``null``: not
given; ``--roots.<corpus> DIR`` sets one; ``root_flag_prefix`` is how a missing root's message
spells that option); a source's ``options`` are checked against its corpus's
options dataclass (e.g. ``{release: opus}`` for mls). ``unions`` name sets built last as the union
of earlier sets (one multilingual test set per results table, so each table is one decode and one
score).

Running it (:func:`run_plan`, ``python -m zlora.bin.prep_plan --config plan.yaml``):
1. every (corpus, lang, split) a set needs is converted once into ``work_dir/<corpus>_<lang>_<split>``
   (zlora.data.prep.prepare; skipped when its prep.yaml matches, including the fingerprint of the
   corpus's transcript files, so an edited corpus is converted again; ``force`` converts anyway);
2. each set, in file order, is built into ``out_dir/<set>``: per source, the pool is the union of
   its splits minus utterances whose corpus id is in ``exclude_splits`` (same corpus and language)
   or in the earlier sets of ``exclude_sets`` (same language); then ``utt_list`` (exact ids, corpus
   or utterance ids: the paper authors' lists) or ``hours`` (a seeded draw) or everything is taken,
   ``repeat`` times; the sources are combined (zlora.bin.combine_data).

The hour draw is utils/subset_data_dir.sh's own (zlora.bin.subset_data_dir.draw): the sorted pool
is shuffled with random.Random seeded by ``"<seed>:<set>:<corpus>:<lang>"`` and the shortest
prefix reaching the budget is kept, so the subset overshoots by less than one utterance and the
same seed always gives the same subset. Each set dir gets ``utt_list`` (utterance ids),
``utt_list.corpus`` (corpus ids, the publishable form), ``utt2corpusid`` and ``prep_plan.yaml``
(what was built, written last: a set with it is complete).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zlora.config import ConfigError, to_dict
from zlora.data.kaldi import DataDir, filter_tables, load_tables, validate_data_dir, write_kv, write_tables
from zlora.data.prep import CORPORA, CorpusSpec, prepare
from zlora.data.prep.common import (CORPUS_ID_FILE, PrepError, corpus_id_index, read_id_list,
                                    read_provenance, resolve_ids)
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger("prep_plan")
RECORD_FILE = "prep_plan.yaml"


@dataclass
class SourceSpec:
    """One corpus/language contribution to a set (see the module docstring)."""
    corpus: str
    lang: str
    split: str | list[str]
    hours: float | None = None
    utt_list: str | None = None
    exclude_splits: list[str] = field(default_factory=list)
    exclude_sets: list[str] = field(default_factory=list)
    repeat: int = 1
    options: dict = field(default_factory=dict)   # the corpus's own options (its options dataclass)

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ConfigError(f"corpus {self.corpus!r} unknown; known: {', '.join(CORPORA.names())}")
        if self.hours is not None and self.hours <= 0:
            raise ConfigError(f"hours must be > 0, got {self.hours}")
        if self.hours is not None and self.utt_list is not None:
            raise ConfigError("give hours (a seeded draw) or utt_list (exact ids), not both")
        if self.repeat < 1:
            raise ConfigError(f"repeat must be >= 1, got {self.repeat}")

    @property
    def splits(self) -> list[str]:
        return [self.split] if isinstance(self.split, str) else list(self.split)


@dataclass
class DataPlan:
    sets: dict[str, list[SourceSpec]]
    # unions of built sets (e.g. one multilingual test set per results table), built last
    unions: dict[str, list[str]] = field(default_factory=dict)
    # corpus name -> root (each corpus's layout: zlora.data.prep.CORPORA.get(name).layout)
    roots: dict[str, str | None] = field(default_factory=dict)
    seed: int = 0
    out_dir: str = "data"
    work_dir: str = "data/local"
    skip_missing: bool = False          # skip utterances whose audio file is missing (counted)
    check_audio: bool = False           # decode every recording when validating (slow on real data)
    force: bool = False                 # convert the corpora again and rebuild the sets, even when current
    # a missing root's hint names the option --<root_flag_prefix><corpus>: a recipe with its own
    # --<corpus> DIR options passes "" so the hint shows the spelling its users type
    root_flag_prefix: str = "roots."
    # multiplies every source's hours budget (pilot runs: 0.01 draws 1 % of each budget);
    # sources without hours (take everything) and utt_list sources are not scaled
    hours_scale: float = 1.0

    def __post_init__(self):
        if not self.hours_scale > 0:
            raise ConfigError(f"hours_scale must be > 0, got {self.hours_scale}")
        unknown = [c for c in self.roots if c not in CORPORA]
        if unknown:
            raise ConfigError(f"roots: unknown corpus {', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(CORPORA.names())}")
        if not self.sets:
            raise ConfigError("sets: the plan defines no data sets")
        for name, sources in self.sets.items():
            if not sources:
                raise ConfigError(f"sets.{name}: no sources")
            order = list(self.sets)
            for i, s in enumerate(sources):
                CORPORA.get(s.corpus).parse_options(s.options, f"sets.{name}[{i}].options")
                for dep in s.exclude_sets:
                    if dep not in self.sets or order.index(dep) >= order.index(name):
                        raise ConfigError(f"sets.{name}: exclude_sets names {dep!r}, which must be a "
                                          "set defined earlier in the plan")
        for name, members in self.unions.items():
            unknown = [m for m in members if m not in self.sets]
            if name in self.sets or unknown or not members:
                raise ConfigError(f"unions.{name}: must be a new name listing sets of the plan"
                                  + (f" (unknown: {', '.join(unknown)})" if unknown else ""))


# ---------------------------------------------------------------------------------------------
# step 1: convert the corpora

def prepared_dir(plan: DataPlan, corpus: str, lang: str, split: str, options: dict) -> Path:
    extra = "".join(f"_{k}-{v}" for k, v in sorted(options.items()))
    return Path(plan.work_dir) / f"{corpus}_{lang}_{split}{extra}"


def corpus_root(plan: DataPlan, corpus: str) -> Path:
    root = plan.roots.get(corpus)
    if not root:
        raise ConfigError(f"roots.{corpus}: not set; the plan uses {corpus} (pass "
                          f"--{plan.root_flag_prefix}{corpus} DIR: {CORPORA.get(corpus).layout})")
    return Path(root)


def ensure_prepared(plan: DataPlan, corpus: str, lang: str, split: str, options: dict) -> Path:
    """Convert (corpus, lang, split) unless an identical conversion of the same source files (their
    fingerprint: size and mtime of the transcripts, CorpusSpec.fingerprint) is already there."""
    out = prepared_dir(plan, corpus, lang, split, options)
    root = corpus_root(plan, corpus)
    spec = CORPORA.get(corpus)
    old = read_provenance(out)
    # a root that is gone: no fingerprint, so prepare() runs and says the root does not exist
    fingerprint = (spec.fingerprint(root, lang, split, spec.parse_options(options, "options"))
                   if root.exists() else None)
    want = {"corpus": corpus, "root": os.path.abspath(root), "lang": lang, "split": split,
            "options": dict(sorted(options.items())), "skip_missing": plan.skip_missing,
            "source_fingerprint": fingerprint}
    changed = [k for k, v in want.items() if (old or {}).get(k) != v]
    if old is not None and not changed:
        log.info("%s: already prepared", out)
        return out
    if old is not None:
        log.info("%s: converting again: %s changed since it was prepared", out, ", ".join(changed))
    prepare(corpus, root, lang, split, out, skip_missing=plan.skip_missing, **options)
    return out


def plan_splits(plan: DataPlan) -> list[tuple[str, str, str, dict]]:
    """Every (corpus, lang, split, options) the plan reads, once each, in plan order."""
    seen, out = set(), []
    for sources in plan.sets.values():
        for src in sources:
            for split in [*src.splits, *src.exclude_splits]:
                key = (src.corpus, src.lang, split, tuple(sorted(src.options.items())))
                if key not in seen:
                    seen.add(key)
                    out.append((src.corpus, src.lang, split, src.options))
    return out


# ---------------------------------------------------------------------------------------------
# step 2: select and combine

def exclusions(plan: DataPlan, src: SourceSpec) -> dict[str, set[str]]:
    """Corpus ids ``src`` must not use, per exclusion ("exclude_splits dev", "exclude_sets
    test_cv_pt", ...): its exclude_splits and its exclude_sets (same language)."""
    out: dict[str, set[str]] = {}
    for split in src.exclude_splits:
        d = ensure_prepared(plan, src.corpus, src.lang, split, src.options)
        out[f"exclude_splits {split}"] = set(corpus_id_index(d))
    for name in src.exclude_sets:
        d = Path(plan.out_dir) / name
        langs = DataDir(d).utt2lang
        out[f"exclude_sets {name}"] = {c for c, utts in corpus_id_index(d).items()
                                       if any(langs[u] == src.lang for u in utts)}
    return out


def empty_pool_reason(src: SourceSpec, cid: dict[str, str], excl: dict[str, set[str]]) -> str:
    """Why the pool of ``src`` is empty: the splits held nothing, or which exclusion removed how
    many of their utterances (one utterance may fall under several)."""
    splits = "+".join(src.splits)
    if not cid:
        return f"split {splits} holds no utterances"
    removed = [f"{label} removed {n}" for label, ids in excl.items()
               if (n := sum(c in ids for c in cid.values()))]
    return f"of the {len(cid)} utterances of split {splits}, " + ", ".join(removed)


def select(plan: DataPlan, set_name: str, src: SourceSpec, dirs: list[Path]) -> list[str]:
    """Utterance ids chosen for ``src`` from its prepared split dirs (see the module docstring)."""
    from zlora.bin.subset_data_dir import draw, durations

    cid = {u: c for d in dirs for c, us in corpus_id_index(d).items() for u in us}
    # utt2dur of every prepared dir (header reads, cached in the dir): the hour draw needs it, and
    # with it every set reports its hours
    durs = {u: t for d in dirs for u, t in durations(DataDir(d)).items()}
    excl = exclusions(plan, src)
    excl_cids = set().union(*excl.values())
    excluded = {u for u, c in cid.items() if c in excl_cids}
    pool = sorted(u for d in dirs for u in DataDir(d).utts if u not in excluded)
    what = f"sets.{set_name} {src.corpus}/{src.lang}"
    if not pool:
        raise PrepError(f"{what}: nothing left after exclusions: {empty_pool_reason(src, cid, excl)}")
    if src.utt_list is not None:
        by_corpus: dict[str, list[str]] = {}
        for u, c in cid.items():
            by_corpus.setdefault(c, []).append(u)
        return resolve_ids(read_id_list(src.utt_list), set(pool), by_corpus,
                           f"{src.utt_list} ({what})", excluded)
    if src.hours is None:
        return pool
    hours = src.hours * plan.hours_scale
    chosen = draw(pool, durs, hours * 3600, f"{plan.seed}:{set_name}:{src.corpus}:{src.lang}")
    got = sum(durs[u] for u in chosen) / 3600
    if got < hours:
        log.warning("%s: only %.3f of %.3f hours available; taking all %d utterances",
                    what, got, hours, len(chosen))
    return sorted(chosen)


def repeat_tables(tables: dict[str, dict[str, str]], n: int) -> dict[str, dict[str, str]]:
    """Add copies 2..n of every utterance as ``<utt>-rep<k>`` (same audio, text, speaker)."""
    if n == 1:
        return tables
    per_utt = [k for k in ("text", "utt2spk", "utt2lang", "utt2dur", "segments") if k in tables]
    if "segments" not in tables:
        per_utt.append("wav.scp")
    out = {k: dict(v) for k, v in tables.items() if k != "spk2utt"}  # spk2utt: rebuilt on write
    for k in range(2, n + 1):
        for name in per_utt:
            out[name].update({f"{u}-rep{k}": v for u, v in tables[name].items()})
    return out


def write_part(d: Path, chosen: list[str], part: Path, repeat: int) -> dict[str, str]:
    """Write the ``chosen`` utterances of prepared dir ``d`` (x repeat) to ``part``; returns
    {utt: corpus id} of what was written."""
    keep = set(chosen)
    tables = repeat_tables(filter_tables(load_tables(d), [u for u in DataDir(d).utts if u in keep]), repeat)
    write_tables(part, tables)
    cids = {u: c for c, us in corpus_id_index(d).items() for u in us if u in keep}
    return {u: cids[u if u in cids else u.rsplit("-rep", 1)[0]] for u in tables["utt2spk"]}


def set_record(plan: DataPlan, sources: list[SourceSpec], dirs: list[list[Path]]) -> dict:
    """What a set is built from: the plan entry, the seed and the prepared dirs' prep.yaml (so a
    re-converted corpus, e.g. from another root, or a redrawn excluded set rebuilds the set)."""
    excluded = sorted({n for src in sources for n in src.exclude_sets})
    # the budgets as drawn: a rescaled plan (hours_scale) rebuilds the set, and an unscaled
    # plan's record is the same as before hours_scale existed
    sources_drawn = [{**s, "hours": s["hours"] * plan.hours_scale} if s.get("hours") is not None
                     and plan.hours_scale != 1 else s for s in to_dict(sources)]
    return {"seed": plan.seed, "sources": sources_drawn,
            "prepared": [read_provenance(d) for ds in dirs for d in ds],
            "excluded_sets": {n: hashlib.sha256((Path(plan.out_dir) / n / "utt_list").read_bytes())
                              .hexdigest() for n in excluded}}


def is_built(out: Path, record: dict) -> bool:
    f = out / RECORD_FILE
    if not f.is_file():
        return False
    old = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    return {k: old.get(k) for k in record} == record


def build_set(plan: DataPlan, name: str, sources: list[SourceSpec]) -> dict:
    """Build ``out_dir/<name>`` from its sources (atomically); returns its summary."""
    from zlora.bin.combine_data import main as combine_main

    out = Path(plan.out_dir) / name
    all_dirs = [[ensure_prepared(plan, src.corpus, src.lang, s, src.options) for s in src.splits]
                for src in sources]
    record = set_record(plan, sources, all_dirs)
    if not plan.force and is_built(out, record):
        log.info("%s: already built (same plan entry)", out)
        return yaml.safe_load((out / RECORD_FILE).read_text(encoding="utf-8"))["summary"]
    work = Path(plan.work_dir) / "sets" / name
    shutil.rmtree(work, ignore_errors=True)
    parts, corpus_ids = [], {}
    for k, (src, dirs) in enumerate(zip(sources, all_dirs)):
        chosen = set(select(plan, name, src, dirs))
        for j, d in enumerate(dirs):
            mine = [u for u in DataDir(d).utts if u in chosen]
            if mine:
                parts.append(work / f"{k}.{j}_{src.corpus}_{src.lang}")
                corpus_ids.update(write_part(d, mine, parts[-1], src.repeat))
    tmp = out.parent / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    combine_main([str(tmp), *map(str, parts)])
    summary = finish_set(plan, tmp, corpus_ids, record)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def finish_set(plan: DataPlan, d: Path, corpus_ids: dict[str, str], record: dict) -> dict:
    """Write the id lists and the record of a combined set dir; validate it; return its summary."""
    utts = DataDir(d).utts
    write_kv(d / CORPUS_ID_FILE, {u: corpus_ids[u] for u in utts})
    atomic_write_text(d / "utt_list", "".join(f"{u}\n" for u in utts))
    atomic_write_text(d / "utt_list.corpus", "".join(f"{c}\n" for c in sorted(set(corpus_ids.values()))))
    res = validate_data_dir(d, check_audio=plan.check_audio)
    durs = DataDir(d).utt2dur or {}
    langs = DataDir(d).utt2lang
    summary = {lang: {"utterances": n, "hours": round(sum(t for u, t in durs.items() if langs[u] == lang)
                                                      / 3600, 4) if durs else None}
               for lang, n in sorted(res.lang_counts.items())}
    atomic_write_text(d / RECORD_FILE, yaml.safe_dump({**record, "summary": summary},
                                                      sort_keys=False, allow_unicode=True))
    return summary


def build_union(plan: DataPlan, name: str, members: list[str]) -> dict:
    """``out_dir/<name>`` = the union of built sets ``members`` (ids must not clash)."""
    from zlora.bin.combine_data import main as combine_main

    out, dirs = Path(plan.out_dir) / name, [Path(plan.out_dir) / m for m in members]
    record = {"union": members,
              "member_records": [yaml.safe_load((d / RECORD_FILE).read_text(encoding="utf-8"))
                                 for d in dirs]}
    if not plan.force and is_built(out, record):
        log.info("%s: already built (same members)", out)
        return yaml.safe_load((out / RECORD_FILE).read_text(encoding="utf-8"))["summary"]
    tmp = out.parent / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    combine_main([str(tmp), *map(str, dirs)])
    corpus_ids = {u: c for d in dirs for c, us in corpus_id_index(d).items() for u in us}
    summary = finish_set(plan, tmp, corpus_ids, record)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary


def run_plan(plan: DataPlan) -> dict[str, dict]:
    """Build every set, then every union, in order; returns {name: {lang: {utterances, hours}}}.
    ``force``: every corpus split the plan reads is converted again first (once each; the sets
    that follow then find them current), and every set rebuilt."""
    if plan.force:
        for corpus, lang, split, options in plan_splits(plan):
            prepare(corpus, corpus_root(plan, corpus), lang, split,
                    prepared_dir(plan, corpus, lang, split, options), skip_missing=plan.skip_missing,
                    **options)
    out = {name: build_set(plan, name, sources) for name, sources in plan.sets.items()}
    out.update({name: build_union(plan, name, members) for name, members in plan.unions.items()})
    return out


def locate_source(corpus: str, root: Path, lang: str, split: str, options: dict) -> Path:
    """The file/dir a converter would read for (corpus, lang, split), without converting (raises
    PrepError naming what is missing): the corpus's registered ``locate``."""
    spec: CorpusSpec = CORPORA.get(corpus)
    return spec.locate(root, lang, split, spec.parse_options(options, f"{corpus} options"))


def check_sources(plan: DataPlan) -> list[str]:
    """One line per (corpus, lang, split) the plan reads, naming where it was found; raises on the
    first one that is missing."""
    lines = []
    for corpus, lang, split, options in plan_splits(plan):
        where = locate_source(corpus, corpus_root(plan, corpus), lang, split, options)
        lines.append(f"{corpus} {lang} {split}: {where}")
    return lines
