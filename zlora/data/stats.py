"""Hours per language of a Kaldi data dir, and the imbalance between high- and low-resource ones.

The paper's stage-2 data is long-tailed (§V-A: 500-1000 h per high-resource language, 1 h per
low-resource one); a recipe that subsets its low-resource languages reports the ratio it got.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from zlora.data.kaldi import DataDir, DataDirError


def seconds_per_language(dd: DataDir) -> dict[str, float]:
    """{lang: total seconds}, sorted by language, from utt2dur (measured from the audio when
    utt2dur is missing or incomplete)."""
    durs = dd.utt2dur
    if durs is None or not set(durs) >= set(dd.utts):
        from zlora.data.audio import utterance_durations  # soundfile: only when needed

        durs = utterance_durations(dd)
    out: dict[str, float] = {}
    for utt in dd.utts:
        if utt not in dd.utt2lang:
            raise DataDirError(f"{dd.path}/utt2lang: no language for utterance '{utt}'")
        lang = dd.utt2lang[utt]
        out[lang] = out.get(lang, 0.0) + durs[utt]
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Imbalance:
    """The smallest high-resource language against the largest low-resource one."""
    high_lang: str
    high_seconds: float
    low_lang: str
    low_seconds: float

    @property
    def ratio(self) -> float:
        return self.high_seconds / self.low_seconds

    def line(self) -> str:
        return (f"imbalance {self.ratio:.0f}:1 (smallest high-resource language {self.high_lang} "
                f"{self.high_seconds:.0f} s, largest low-resource {self.low_lang} {self.low_seconds:.1f} s)")


def imbalance(seconds: dict[str, float], low: Iterable[str], where: str = "data") -> Imbalance:
    """The ratio for ``seconds`` ({lang: s}); every language not in ``low`` is high-resource."""
    low = set(low)
    highs = {k: v for k, v in seconds.items() if k not in low}
    lows = {k: v for k, v in seconds.items() if k in low}
    if not highs or not lows:
        raise DataDirError(f"{where}: needs a high- and a low-resource language; it has "
                           f"{', '.join(seconds) or 'none'} and the low-resource ones are {', '.join(sorted(low))}")
    high_lang = min(highs, key=lambda k: (highs[k], k))
    low_lang = max(lows, key=lambda k: (lows[k], k))
    if lows[low_lang] <= 0:
        raise DataDirError(f"{where}: the low-resource languages have no audio (0 s)")
    return Imbalance(high_lang, highs[high_lang], low_lang, lows[low_lang])
