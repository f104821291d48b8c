"""Transcript generators: the stage-2 ("target") phrase templates and the stage-1 ("foundation")
list-style utterances, per language.

Target phrases are short, natural, and built from four templates per language: a date
(weekday, day of month, month), a number before a word, a route between two countries, and a
month with a year. Each language's templates carry its own glue words (es "de", vi "ngày",
ko "에서 ... 까지", zh "从 ... 到", ja "から ... まで").

Foundation utterances use the same lexicon. With SynthConfig.foundation_phrase_share = p, a
share p of them are target-template phrases (the stage-1 "corpus" then differs from the target
in voices and speaking style only); the rest have no phrase structure: runs of 2-4 frequent words
(including the target templates' glue words), one or two numbers (up to 9999 by default;
SynthConfig.foundation_number_digits), or runs of 2-3 names (months, weekdays, countries).
With p = 0 a model trained on them knows every language's words, but has never heard the target
phrase shapes (nor, with the default voice split, the target voices).
"""
from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

from zlora.data.synth.lexicon import Lexicon
from zlora.data.synth.numbers import JA_DAY_OF_MONTH, spell_number
from zlora.data.synth.text import UNSPACED, clean_text, joiner, script_ok

TARGET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{day} {month} {dom}", "{num} {word}", "from {country} to {country2}", "{month_sa} {year}"),
    "de": ("{day} {dom} {month}", "{num} {word}", "von {country} nach {country2}", "{month_sa} {year}"),
    "es": ("{day} {dom} de {month}", "{num} {word}", "de {country} a {country2}", "{month_sa} de {year}"),
    "fr": ("{day} {dom} {month}", "{num} {word}", "de {country} à {country2}", "{month_sa} {year}"),
    "it": ("{day} {dom} {month}", "{num} {word}", "da {country} a {country2}", "{month_sa} {year}"),
    "pt": ("{day} {dom} de {month}", "{num} {word}", "de {country} para {country2}", "{month_sa} de {year}"),
    "ru": ("{day} {dom} {month}", "{num} {word}", "из {country} в {country2}", "{month_sa} {year}"),
    "vi": ("{day} ngày {dom} {month}", "{num} {word}", "từ {country} đến {country2}", "{month_sa} năm {year}"),
    "ar": ("{day} {dom} {month}", "{num} {word}", "من {country} إلى {country2}", "{month_sa} {year}"),
    "ko": ("{month} {dom}일 {day}", "{num}번 {word}", "{country}에서 {country2}까지", "{year}년 {month_sa}"),
    "ja": ("{month}{dom}{day}", "{num}ばんの{word}", "{country}から{country2}まで", "{year}ねん{month_sa}"),
    "zh": ("{month}{dom}日{day}", "{num}个{word}", "从{country}到{country2}", "{year}年{month_sa}"),
}
LANGUAGES = tuple(sorted(TARGET_TEMPLATES))


@dataclass(frozen=True)
class TextLimits:
    """What the generators may draw (SynthConfig). The number slots: every distinct number is a
    word type the model must learn, and in de/ja/zh/ko a number is one long word (German years
    are compounds)."""
    foundation_number_digits: int = 4     # foundation number runs: up to this many digits
    target_number_digits: int = 3         # the target "<number> <word>" template
    years: tuple[int, int] = (1900, 2099)  # the target "<month> <year>" template, inclusive
    # Share of foundation utterances that are target-template phrases (0: none, only word runs).
    # A from-scratch LLM learns to read phrases far faster than unstructured runs (measured on
    # 4 languages, 600 steps, each scored on held-out utterances of its own kind: 21.7 % WER
    # after training on 400 phrases per language, 67 % after 800 runs per language).
    foundation_phrase_share: float = 0.0


DOMAINS = ("target", "foundation")
FOUNDATION_KINDS = ("words", "numbers", "names")


def _check_lang(lang: str) -> None:
    if lang not in TARGET_TEMPLATES:
        raise ValueError(f"no mini12 templates for language {lang!r}; known: {', '.join(LANGUAGES)}")


def glue_words(lang: str) -> tuple[str, ...]:
    """The literal words of ``lang``'s target templates (from, to, de, 에서, から, ...)."""
    _check_lang(lang)
    out: list[str] = []
    for tpl in TARGET_TEMPLATES[lang]:
        for piece in re.split(r"\{\w+\}", tpl):
            out += [w for w in piece.split() if w not in out]
    return tuple(out)


def _sample_int(rng: random.Random, lo: int, max_digits: int) -> int:
    """Log-uniform-ish: pick a digit count, then a number with that many digits (>= lo)."""
    digits = rng.randint(1, max_digits)
    return rng.randint(max(lo, 10 ** (digits - 1) if digits > 1 else 0), 10 ** digits - 1)


def _slot(name: str, lang: str, lex: Lexicon, rng: random.Random, used: dict, limits: TextLimits) -> str:
    if name == "day":
        return rng.choice(lex.days)
    if name == "month":
        return rng.choice(lex.months)
    if name == "month_sa":
        return rng.choice(lex.months_standalone)
    if name == "dom":
        return spell_number(rng.randint(1, 31), lang, "day")
    if name == "num":
        return spell_number(_sample_int(rng, 2, limits.target_number_digits), lang, "count")
    if name == "year":
        return spell_number(rng.randint(*limits.years), lang, "year")
    if name == "word":
        return rng.choice(lex.words)
    if name == "country":
        return rng.choice(lex.countries)
    if name == "country2":
        return rng.choice([c for c in lex.countries if c != used.get("country")])
    raise ValueError(f"unknown template slot {{{name}}}")


def target_text(lang: str, lex: Lexicon, rng: random.Random, limits: TextLimits = TextLimits()) -> str:
    """One stage-2 phrase: a template chosen uniformly, its slots filled from ``lex``."""
    _check_lang(lang)
    tpl = rng.choice(TARGET_TEMPLATES[lang])
    values: dict[str, str] = {}
    for _, name, _, _ in string.Formatter().parse(tpl):
        if name and name not in values:
            values[name] = clean_text(_slot(name, lang, lex, rng, values, limits), lang)
    return _final(tpl.format(**values), lang)


def foundation_text(lang: str, lex: Lexicon, rng: random.Random, limits: TextLimits = TextLimits()) -> str:
    """One stage-1 utterance: a target-template phrase (with probability
    ``limits.foundation_phrase_share``), else a run of words, of numbers (up to
    ``limits.foundation_number_digits`` digits), or of names (see the module doc)."""
    _check_lang(lang)
    # No draw at share 0, so corpora synthesised without phrases stay exactly as they were.
    if limits.foundation_phrase_share > 0 and rng.random() < limits.foundation_phrase_share:
        return target_text(lang, lex, rng, limits)
    number_digits = limits.foundation_number_digits
    kind = rng.choice(FOUNDATION_KINDS)
    if kind == "words":
        pool = lex.function_words + lex.words + glue_words(lang)
        items = [rng.choice(pool) for _ in range(rng.randint(2, 4))]
    elif kind == "numbers":
        items = [spell_number(_sample_int(rng, 0, number_digits), lang) for _ in range(rng.randint(1, 2))]
    else:
        pool = lex.months + lex.months_standalone + lex.days + lex.countries
        if lang == "ja":  # the irregular day-of-month readings the target dates use
            pool += JA_DAY_OF_MONTH
        items = [rng.choice(pool) for _ in range(rng.randint(2, 3))]
    return _final(joiner(lang).join(clean_text(x, lang) for x in items), lang)


def _final(text: str, lang: str) -> str:
    text = clean_text(text, lang)
    if not script_ok(text, lang):
        raise ValueError(f"{lang}: generated transcript {text!r} fails the script check "
                         f"(only {lang} letters{'' if lang in UNSPACED else ' and single spaces'} allowed)")
    return text


def make_text(lang: str, domain: str, lex: Lexicon, rng: random.Random,
              limits: TextLimits = TextLimits()) -> str:
    """A transcript of ``domain`` ('target' or 'foundation') for ``lang``."""
    if domain == "target":
        return target_text(lang, lex, rng, limits)
    if domain == "foundation":
        return foundation_text(lang, lex, rng, limits)
    raise ValueError(f"unknown text domain {domain!r}; known: {', '.join(DOMAINS)}")
