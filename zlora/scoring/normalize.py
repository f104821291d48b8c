"""Text normalisation applied identically to references and hypotheses before scoring.

The paper (§V-B) scores "with Whisper text normalization". We apply, to ref and hyp alike:

* ``en``: openai/whisper's ``EnglishTextNormalizer`` (release 20250625), i.e. lower-case; drop
  ``[...]``/``<...>`` and ``(...)`` spans; drop fillers (hmm, mm, mhm, mmm, uh, um); expand
  contractions and titles (``won't`` -> ``will not``, ``mr`` -> ``mister``); remove commas
  between digits and periods not followed by a digit; NFKD + drop diacritics, turn other marks,
  symbols and punctuation (Unicode categories M*, S*, P*) into spaces, keeping ``. % $ ¢ € £``;
  spelled-out numbers -> digits (``twenty one`` -> ``21``, ``ten thousand dollars`` -> ``$10000``,
  ``one`` stays ``one``); British -> American spelling; strip stray currency/percent symbols;
  collapse whitespace.
* every other language: openai/whisper's ``BasicTextNormalizer()`` with its defaults: lower-case;
  drop ``[...]``/``<...>`` and ``(...)`` spans; NFKC; every character whose Unicode category
  starts with M, S or P becomes a space (diacritics written as *precomposed* letters survive,
  combining marks do not); collapse whitespace.

Both come from the ``whisper-normalizer`` PyPI package, which copies openai/whisper's code. We
checked it against the openai-whisper 20250625 sdist: the only difference is four extra
replacement rules in the package's English normaliser (``kinda``, ``sorta``, ``dunno`` and
``cause`` -> ``because``, which also rewrites the noun "cause"). We remove those four so that
``en`` matches openai/whisper exactly; test/scoring/test_normalize.py checks both normalisers
against transformers' copy of the same code.

Whisper's basic normaliser turns combining marks (category M) into spaces. In Thai (vowel and
tone marks) and in vocalised Arabic this splits words and, for CER, drops the marks. That is
Whisper's behaviour and therefore the default; ``preserve_marks`` lists languages for which
marks are kept instead (``BasicTextNormalizer(preserve_marks=True)``), for users who want it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable

from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer as _PackageEnglishNormalizer

# Rules the whisper-normalizer package adds on top of openai/whisper's English normaliser.
_NOT_IN_OPENAI_WHISPER = (r"\bkinda\b", r"\bsorta\b", r"\bdunno\b", r"\bcause\b")


class EnglishTextNormalizer(_PackageEnglishNormalizer):
    """openai/whisper's English normaliser (the package's, minus its four extra rules)."""

    def __init__(self) -> None:
        super().__init__()
        for pattern in _NOT_IN_OPENAI_WHISPER:
            self.replacers.pop(pattern, None)


def base_language(lang: str) -> str:
    """``'en'`` for ``'en'``, ``'en-US'`` or ``'en_gb'``: the part the metric/normaliser keys on."""
    return lang.replace("_", "-").split("-", 1)[0].lower()


@lru_cache(maxsize=None)
def _english() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


@lru_cache(maxsize=None)
def _basic(preserve_marks: bool) -> BasicTextNormalizer:
    return BasicTextNormalizer(preserve_marks=preserve_marks)


def get_normalizer(lang: str, preserve_marks: Iterable[str] = ()) -> Callable[[str], str]:
    """The normaliser for ``lang``: Whisper English for en, Whisper basic otherwise."""
    base = base_language(lang)
    if base == "en":
        return _english()
    return _basic(base in {base_language(x) for x in preserve_marks})


def normalize(text: str, lang: str, preserve_marks: Iterable[str] = ()) -> str:
    """Normalise one transcript; the result has single spaces and no leading/trailing space."""
    return get_normalizer(lang, preserve_marks)(text).strip()


def describe(langs: Iterable[str], preserve_marks: Iterable[str] = ()) -> str:
    """One line per language naming the normaliser used (for summaries and RESULTS.md)."""
    keep = {base_language(x) for x in preserve_marks}
    lines = []
    for lang in sorted(set(langs)):
        base = base_language(lang)
        if base == "en":
            name = "Whisper EnglishTextNormalizer (openai/whisper 20250625)"
        elif base in keep:
            name = "Whisper BasicTextNormalizer(preserve_marks=True)"
        else:
            name = "Whisper BasicTextNormalizer()"
        lines.append(f"{lang}: {name}")
    return "\n".join(lines)
