"""Numbers as words in the 12 mini12 languages.

num2words covers en de es fr it ru vi ar ko pt and gives Japanese as kana with ``reading=True``;
it has no Chinese, so :func:`zh_number` writes Hanzi itself. Japanese day-of-month readings are
irregular (ついたち, はつか, ...) and are tabled here rather than derived.
"""
from __future__ import annotations

from num2words import num2words

ZH_DIGITS = "零一二三四五六七八九"
_ZH_SMALL_UNITS = ("", "十", "百", "千")
_ZH_BIG_UNITS = ("", "万", "亿", "兆")

# Day of the month 1..31 in kana (irregular readings for 1-10, 14, 20, 24).
JA_DAY_OF_MONTH = (
    "ついたち", "ふつか", "みっか", "よっか", "いつか", "むいか", "なのか", "ようか", "ここのか",
    "とおか", "じゅういちにち", "じゅうににち", "じゅうさんにち", "じゅうよっか", "じゅうごにち",
    "じゅうろくにち", "じゅうしちにち", "じゅうはちにち", "じゅうくにち", "はつか",
    "にじゅういちにち", "にじゅうににち", "にじゅうさんにち", "にじゅうよっか", "にじゅうごにち",
    "にじゅうろくにち", "にじゅうしちにち", "にじゅうはちにち", "にじゅうくにち", "さんじゅうにち",
    "さんじゅういちにち",
)

# num2words' year mode reads years the way speakers do only for these ("nineteen ninety",
# "neunzehnhundertneunzig"); elsewhere it returns the cardinal or fails (vi, ja's era names).
_YEAR_MODE = frozenset({"en", "de"})

NUMBER_KINDS = ("cardinal", "count", "day", "year")


def _zh_section(n: int) -> str:
    """0 < n < 10000 in full form (一十, not 十): zero runs inside collapse to one 零."""
    out, pending_zero = [], False
    for pos in (3, 2, 1, 0):
        d = n // 10 ** pos % 10
        if d == 0:
            pending_zero = pending_zero or bool(out)
            continue
        if pending_zero:
            out.append("零")
            pending_zero = False
        out.append(ZH_DIGITS[d] + _ZH_SMALL_UNITS[pos])
    return "".join(out)


def zh_number(n: int) -> str:
    """Cardinal ``n`` (0 <= n < 10**16) in Hanzi: 10 -> 十, 21 -> 二十一, 105 -> 一百零五,
    10010 -> 一万零一十. Uses 二 (not the colloquial 两) everywhere."""
    if not 0 <= n < 10 ** 16:
        raise ValueError(f"zh_number: {n} out of range [0, 10**16)")
    if n == 0:
        return ZH_DIGITS[0]
    sections = []
    while n:
        sections.append(n % 10000)
        n //= 10000
    out = ""
    for i in reversed(range(len(sections))):
        s = sections[i]
        if s == 0:
            continue
        # A gap before this section (a zero section or a section < 1000) is read as one 零.
        if out and (s < 1000 or sections[i + 1] == 0):
            out += "零"
        out += _zh_section(s) + _ZH_BIG_UNITS[i]
    # 10-19 at the head are read 十, 十一 ... (一十 only inside a number: 一百一十).
    return out[1:] if out.startswith("一十") else out


def zh_digits(n: int) -> str:
    """Digit by digit, as Chinese reads years: 1990 -> 一九九零."""
    return "".join(ZH_DIGITS[int(c)] for c in str(n))


def _ja_year(n: int) -> str:
    # Before ねん, 4 7 9 are read よ しち く (よねん, しちねん, くねん).
    r = num2words(n, lang="ja", reading=True)
    for tail, repl in (("よん", "よ"), ("なな", "しち"), ("きゅう", "く")):
        if r.endswith(tail):
            return r[: -len(tail)] + repl
    return r


def spell_number(n: int, lang: str, kind: str = "cardinal") -> str:
    """``n`` as words in ``lang`` (raw library output; callers clean it with ``clean_text``).

    kind: ``cardinal``; ``count`` (before a noun: zh 2 -> 两); ``day`` (day of month: ja uses its
    irregular readings); ``year`` (en/de read years in pairs, zh digit by digit, ja before ねん).
    """
    if kind not in NUMBER_KINDS:
        raise ValueError(f"unknown number kind {kind!r}; known: {', '.join(NUMBER_KINDS)}")
    if lang == "zh":
        if kind == "year":
            return zh_digits(n)
        if kind == "count" and n == 2:
            return "两"
        return zh_number(n)
    if lang == "ja":
        if kind == "day":
            if not 1 <= n <= 31:
                raise ValueError(f"day of month {n} out of range 1..31")
            return JA_DAY_OF_MONTH[n - 1]
        return _ja_year(n) if kind == "year" else num2words(n, lang="ja", reading=True)
    if kind == "year" and lang in _YEAR_MODE:
        return num2words(n, lang=lang, to="year")
    return num2words(n, lang=lang)
