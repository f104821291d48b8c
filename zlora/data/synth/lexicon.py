"""Offline word sources per language: CLDR (Babel) month, weekday and country names, num2words
numbers, and wordfreq's frequency-ranked words. Everything is cleaned with ``clean_text`` and kept
only if it passes ``script_ok``, so a lexicon entry is always speakable text in the right script.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from zlora.data.synth.numbers import spell_number
from zlora.data.synth.text import UNSPACED, clean_text, script_ok

# The same well-known countries in every language, so names are shared knowledge across languages
# (ja keeps only those CLDR writes in kana: 日本 or 中国 drop out there).
COUNTRY_CODES = (
    "AR AT AU BE BG BR CA CH CL CN CO CU CZ DE DK DZ EG ES ET FI FR GB GR HR HU ID IE IN IQ IR IS "
    "IT JP KE KR MA MX MY NG NL NO NZ PE PH PK PL PT RO RS RU SA SE TH TN TR UA US VE VN ZA").split()

# Where CLDR writes a digit (ko "6월", ja "6月") or kanji, and the spoken form is irregular.
_MONTHS = {
    "ko": ("일월", "이월", "삼월", "사월", "오월", "유월", "칠월", "팔월", "구월", "시월", "십일월", "십이월"),
    "ja": ("いちがつ", "にがつ", "さんがつ", "しがつ", "ごがつ", "ろくがつ", "しちがつ", "はちがつ",
           "くがつ", "じゅうがつ", "じゅういちがつ", "じゅうにがつ"),
}
_STANDALONE_MONTHS = frozenset({"ru"})
_DAYS = {"ja": ("げつようび", "かようび", "すいようび", "もくようび", "きんようび", "どようび", "にちようび")}

# Words shorter than this are mostly elisions or stray letters (fr "l", "d") or, in ko, bare
# morphemes that wordfreq splits off (는, 을).
_MIN_WORD_CHARS = {"zh": 1}
# MeCab-split Japanese leaves stem fragments: a word cannot start with a small kana or ー, nor
# end in a bare っ (だっ, なかっ).
_JA_BAD_START = set("ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮーヵヶ")
_DEFAULT_MIN_WORD_CHARS = 2
_MAX_NAME_WORDS = 3
_MAX_UNSPACED_NAME_CHARS = 8


@dataclass(frozen=True)
class Lexicon:
    """Speakable building blocks of one language (all cleaned, all in the language's script)."""

    lang: str
    months: tuple[str, ...]             # 12, the form used inside dates (ru genitive: января)
    months_standalone: tuple[str, ...]  # 12, the naming form (ru январь)
    days: tuple[str, ...]               # 7, Monday first
    countries: tuple[str, ...]
    function_words: tuple[str, ...]     # the most frequent words (articles, particles, ...)
    words: tuple[str, ...]              # the next frequency band: mostly content words


def _spell_digits(text: str, lang: str) -> str:
    return re.sub(r"\d+", lambda m: f" {spell_number(int(m.group()), lang)} ", text)


def _checked(text: str, lang: str, what: str) -> str:
    out = clean_text(_spell_digits(text, lang), lang)
    if not script_ok(out, lang):
        raise ValueError(f"{lang}: {what} {text!r} is not speakable as {out!r} (script check failed)")
    return out


def _months_days(lang: str):
    from babel import Locale

    loc = Locale.parse(lang)
    fmt = loc.months["format"]["wide"]
    alone = loc.months["stand-alone"]["wide"]
    if lang in _MONTHS:
        months = standalone = _MONTHS[lang]
    else:
        months = tuple(_checked(fmt[i], lang, "month") for i in range(1, 13))
        # Only Slavic languages name months differently alone (ru январь vs января); other
        # locales' stand-alone data is a copy, digits (zh 1月) or, for ar, a root fallback (一月).
        standalone = (tuple(_checked(alone[i], lang, "month") for i in range(1, 13))
                      if lang in _STANDALONE_MONTHS else months)
    days = _DAYS.get(lang) or tuple(_checked(loc.days["format"]["wide"][i], lang, "day") for i in range(7))
    return months, standalone, days


def _countries(lang: str, limit: int | None = None) -> tuple[str, ...]:
    """The first ``limit`` (None: all) of COUNTRY_CODES that ``lang`` names usably, in that order."""
    from babel import Locale

    names = Locale.parse(lang).territories
    out = []
    for code in COUNTRY_CODES:
        name = clean_text(names[code], lang)
        if not script_ok(name, lang):
            continue
        too_long = (len(name) > _MAX_UNSPACED_NAME_CHARS if lang in UNSPACED
                    else len(name.split()) > _MAX_NAME_WORDS)
        if not too_long and name not in out:
            out.append(name)
    return tuple(out[:limit])


def _frequent_words(lang: str, n_function: int, n_words: int, top_n: int = 5000):
    from wordfreq import top_n_list

    min_chars = _MIN_WORD_CHARS.get(lang, _DEFAULT_MIN_WORD_CHARS)
    kept: list[str] = []
    for w in top_n_list(lang, top_n):
        w = clean_text(w, lang)
        if lang == "ja" and (w[:1] in _JA_BAD_START or w.endswith(("っ", "ッ"))):
            continue
        if len(w) >= min_chars and script_ok(w, lang) and " " not in w and w not in kept:
            kept.append(w)
        if len(kept) == n_function + n_words:
            break
    if len(kept) < n_function + n_words:
        raise ValueError(f"{lang}: wordfreq's top {top_n} has only {len(kept)} usable words, "
                         f"{n_function + n_words} wanted")
    return tuple(kept[:n_function]), tuple(kept[n_function:])


@functools.lru_cache(maxsize=None)
def build_lexicon(lang: str, n_function: int = 40, n_words: int = 200, n_countries: int | None = None) -> Lexicon:
    """Lexicon of ``lang`` (cached). ``n_function`` most frequent wordfreq words are function
    words; the next ``n_words`` are the content-word band; ``n_countries`` (None: all usable)
    country names."""
    months, standalone, days = _months_days(lang)
    function_words, words = _frequent_words(lang, n_function, n_words)
    return Lexicon(lang, months, standalone, days, _countries(lang, n_countries), function_words, words)
