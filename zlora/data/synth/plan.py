"""The corpus plan: every utterance's id, speaker, transcript and espeak-ng settings, drawn
deterministically from the seed before any audio is made.

Every random choice uses its own ``random.Random("<seed>/<purpose>/...")`` (string seeds hash with
SHA-512, so they do not depend on PYTHONHASHSEED), so one split's texts do not shift when another
split's count changes, and the same seed gives the same corpus on any machine with the same
espeak-ng, num2words, Babel and wordfreq versions.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Optional

from zlora.data.synth.config import StyleConfig, SynthConfig
from zlora.data.synth.espeak import UttSpec
from zlora.data.synth.lexicon import build_lexicon
from zlora.data.synth.templates import make_text
from zlora.data.synth.text import normalise_transcript


@dataclass(frozen=True)
class Split:
    name: str      # Kaldi data dir name
    tag: str       # utterance-id infix, keeps ids unique when the recipe combines dirs
    domain: str    # text + style domain: 'target' or 'foundation'
    voices: str    # variant pool: 'test', 'target' or 'foundation'
    group: str     # languages: 'all', 'high' or 'low'
    count: str     # CountsConfig field


# Drawn in this order per language; a transcript is used at most once per language, so test
# is disjoint from everything else, dev from train, and so on.
SPLITS = (
    Split("test", "ts", "target", "test", "all", "test"),
    Split("dev", "dv", "target", "target", "all", "dev"),
    Split("train_high", "tr", "target", "target", "high", "train_high"),
    Split("train_low_full", "tr", "target", "target", "low", "train_low"),
    Split("foundation_dev", "fv", "foundation", "foundation", "all", "foundation_dev"),
    Split("foundation", "fd", "foundation", "foundation", "all", "foundation"),
)
SPLIT_NAMES = tuple(s.name for s in SPLITS)


def _rng(cfg: SynthConfig, *parts) -> random.Random:
    return random.Random("/".join([str(cfg.seed), *map(str, parts)]))


def speaker_tag(variant: str) -> str:
    """Variant file name -> speaker-id part: lower-case letters and digits only, so that Kaldi's
    speaker-prefix sort order holds ('-' sorts before them)."""
    return re.sub(r"[^a-z0-9]", "", variant.lower())


def partition_variants(cfg: SynthConfig, variants: list[str]) -> dict[str, list[str]]:
    """{'test', 'target', 'foundation'} -> variant lists. Test variants are never in any other pool."""
    pool = sorted(v for v in variants if v not in set(cfg.exclude_variants))
    tags = [speaker_tag(v) for v in pool]
    clash = sorted({t for t in tags if tags.count(t) > 1 or not t})
    if clash:
        raise ValueError(f"voice variants give clashing or empty speaker ids {clash}; exclude some")
    need = cfg.n_test_variants + (2 if cfg.foundation_disjoint_voices else 1)
    if len(pool) < need:
        raise ValueError(f"{len(pool)} voice variants after exclusions, {need} needed "
                         f"(n_test_variants={cfg.n_test_variants})")
    _rng(cfg, "variants").shuffle(pool)
    test, rest = sorted(pool[:cfg.n_test_variants]), pool[cfg.n_test_variants:]
    if cfg.foundation_disjoint_voices:
        return {"test": test, "target": sorted(rest[0::2]), "foundation": sorted(rest[1::2])}
    return {"test": test, "target": sorted(rest), "foundation": sorted(rest)}


def split_languages(cfg: SynthConfig, split: Split) -> list[str]:
    return {"all": cfg.languages, "high": cfg.high, "low": cfg.low}[split.group]


# accept(lang, texts) -> one bool per text; e.g. "espeak-ng reads it without switching language".
TextFilter = Callable[[str, list[str]], list[bool]]


def draw_texts(cfg: SynthConfig, lang: str, accept: Optional[TextFilter] = None) -> dict[str, list[str]]:
    """split name -> transcripts of ``lang``, unique across all of that language's splits.
    Candidates that ``accept`` rejects are dropped (and never drawn again)."""
    lex = build_lexicon(lang, cfg.n_function_words, cfg.n_content_words, cfg.n_countries)
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        if lang not in split_languages(cfg, split):
            continue
        n, rng, texts = getattr(cfg.counts, split.count), _rng(cfg, "text", lang, split.name), []
        budget = 50 * n + 1000
        while len(texts) < n and budget > 0:
            batch: list[str] = []  # candidates are filtered a batch at a time (one espeak-ng call)
            while len(batch) < n - len(texts) and budget > 0:
                budget -= 1
                text = make_text(lang, split.domain, lex, rng, cfg.text_limits)
                key = normalise_transcript(text)
                if key not in seen:
                    seen.add(key)
                    batch.append(text)
            keep = accept(lang, batch) if accept is not None else [True] * len(batch)
            texts += [t for t, ok in zip(batch, keep) if ok]
        if len(texts) < n:
            raise ValueError(f"{lang}/{split.name}: only {len(texts)} distinct transcripts of {n} "
                             "could be drawn; lower the count or enlarge the lexicon")
        out[split.name] = texts
    return out


def _jittered(rng: random.Random, base: int, jitter: int) -> int:
    return base + rng.randint(-jitter, jitter)


def _specs(cfg: SynthConfig, split: Split, lang: str, texts: list[str], pool: list[str]) -> list[UttSpec]:
    style: StyleConfig = cfg.target_style if split.domain == "target" else cfg.foundation_style
    order = list(pool)
    _rng(cfg, "speakers", lang, split.name).shuffle(order)
    specs = []
    for i, text in enumerate(texts):
        variant = order[i % len(order)]  # round robin: speakers get near-equal shares
        spk = f"{lang}-{speaker_tag(variant)}"
        srng = _rng(cfg, "style", split.domain, lang, variant)  # the speaker's own voice
        base_speed, base_pitch = srng.randint(*style.speed), srng.randint(*style.pitch)
        urng = _rng(cfg, "jitter", split.name, lang, i)
        specs.append(UttSpec(
            utt=f"{spk}-{split.tag}{i:05d}", spk=spk, lang=lang, text=text,
            voice=f"{cfg.voices[lang]}+{variant}",
            speed=_jittered(urng, base_speed, style.speed_jitter),
            pitch=_jittered(urng, base_pitch, style.pitch_jitter),
            word_gap=urng.randint(*style.word_gap)))
    return specs


def plan_corpus(cfg: SynthConfig, variants: list[str],
                accept: Optional[TextFilter] = None) -> dict[str, list[UttSpec]]:
    """split name -> utterance specs sorted by utterance id (LC_ALL=C order)."""
    pools = partition_variants(cfg, variants)
    plan: dict[str, list[UttSpec]] = {s.name: [] for s in SPLITS}
    for lang in cfg.languages:
        texts = draw_texts(cfg, lang, accept)
        for split in SPLITS:
            if split.name in texts:
                plan[split.name] += _specs(cfg, split, lang, texts[split.name], pools[split.voices])
    return {name: sorted(specs, key=lambda s: s.utt) for name, specs in plan.items()}
