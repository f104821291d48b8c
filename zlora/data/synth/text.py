"""Transcript cleaning and per-language script checks.

mini12 transcripts hold only letters of the language's own script and single spaces: no digits, no
punctuation, lower case. What espeak-ng reads is byte-for-byte the transcript, so a check here is
also a check on what gets spoken. zh and ja are written without spaces, as those languages are.
"""
from __future__ import annotations

import re
import unicodedata

# Unicode character-name prefixes of each language's letters.
SCRIPTS: dict[str, tuple[str, ...]] = {
    **{lang: ("LATIN",) for lang in ("de", "en", "es", "fr", "it", "pt", "vi")},
    "ru": ("CYRILLIC",),
    "ar": ("ARABIC",),
    "ko": ("HANGUL",),
    "zh": ("CJK UNIFIED IDEOGRAPH",),
    "ja": ("HIRAGANA", "KATAKANA"),  # incl. KATAKANA-HIRAGANA PROLONGED SOUND MARK (ー)
}
UNSPACED = frozenset({"zh", "ja"})
# Letters of the right script that espeak-ng 1.51 still cannot read: Japanese small vowels and
# rare kana (measured one by one; one of them in an utterance turns the whole utterance into
# "Japanese letter" spellings, e.g. スウェーデン).
UNREADABLE: dict[str, frozenset[str]] = {"ja": frozenset("ぁぃぅぇぉゎゕゖァィゥェォヮヵヶヷヸ")}

# Outside the Latin script, espeak-ng switching to another language's rules means it spells out
# characters it cannot read; such transcripts are dropped. In Latin-script languages a switch is
# a reading of a foreign-looking name with English rules (vi "canada", fr "danemark"): kept.
SWITCH_IS_ERROR = frozenset(lang for lang, prefixes in SCRIPTS.items() if prefixes != ("LATIN",))

_DASHES = re.compile(r"[\u002d\u2010-\u2015\u2212]")


def joiner(lang: str) -> str:
    """What separates words in ``lang``: nothing for zh/ja, a space otherwise."""
    return "" if lang in UNSPACED else " "


def clean_text(text: str, lang: str) -> str:
    """Library output -> transcript form: NFC, lower case, dashes and commas to spaces, one space
    between words (none for zh/ja). Does not validate; see :func:`script_ok`."""
    text = unicodedata.normalize("NFC", text).lower()
    text = _DASHES.sub(" ", text).replace(",", " ")
    return joiner(lang).join(text.split())


def _letter_ok(ch: str, prefixes: tuple[str, ...]) -> bool:
    if unicodedata.category(ch)[0] not in "LM":
        return False
    return unicodedata.name(ch, "").startswith(prefixes)


def script_ok(text: str, lang: str) -> bool:
    """True when ``text`` is non-empty and only letters of ``lang``'s script that espeak-ng reads
    (and, outside zh/ja, single spaces between words)."""
    if lang not in SCRIPTS:
        raise ValueError(f"no script known for language {lang!r}; known: {', '.join(sorted(SCRIPTS))}")
    if not text or text != text.strip() or "  " in text:
        return False
    if " " in text and lang in UNSPACED:
        return False
    prefixes, unreadable = SCRIPTS[lang], UNREADABLE.get(lang, frozenset())
    return all(ch == " " or (_letter_ok(ch, prefixes) and ch not in unreadable) for ch in text)


def normalise_transcript(text: str) -> str:
    """The key under which transcripts count as the same (train/test disjointness): NFC, lower
    case, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in text)
    return " ".join(text.split())
