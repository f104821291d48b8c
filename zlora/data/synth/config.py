"""Typed configuration of the mini12 synthesiser (YAML via zlora.config; unknown keys fail)."""
from __future__ import annotations

from dataclasses import dataclass, field

from zlora.config import ConfigError
from zlora.data.synth.templates import LANGUAGES, TextLimits

DEFAULT_VOICES = {
    "ar": "ar", "de": "de", "en": "en-us", "es": "es", "fr": "fr", "it": "it", "ja": "ja",
    "ko": "ko", "pt": "pt-br", "ru": "ru", "vi": "vi",
    # Mandarin only reads Hanzi correctly with this voice; "cmn"/"zh" read pinyin as English.
    "zh": "cmn-latn-pinyin",
}


@dataclass
class CountsConfig:
    """Utterances per language per split."""

    train_high: int = 700      # train_high, per high-resource language
    train_low: int = 60        # train_low_full, per low-resource language (the recipe subsets it)
    dev: int = 50              # dev, every language
    test: int = 50             # test, every language (held-out voices)
    foundation: int = 400      # foundation (stage 1), every language
    foundation_dev: int = 10   # foundation_dev (stage-1 validation), every language

    def __post_init__(self):
        for name, value in vars(self).items():
            if value < 1:
                raise ConfigError(f"counts.{name}: must be >= 1, got {value}")


@dataclass
class StyleConfig:
    """espeak-ng speaking style of one domain. A speaker draws its base speed and pitch uniformly
    from the ranges; each utterance adds uniform jitter of +-*_jitter."""

    speed: list[int] = field(default_factory=lambda: [150, 210])   # -s, words per minute
    speed_jitter: int = 10                                         # per-utterance +- on the speed
    pitch: list[int] = field(default_factory=lambda: [20, 80])     # -p, 0..99
    pitch_jitter: int = 5                                          # per-utterance +- on the pitch
    word_gap: list[int] = field(default_factory=lambda: [0, 0])    # -g, pause between words, 10 ms units

    def __post_init__(self):
        for name in ("speed", "pitch", "word_gap"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
                raise ConfigError(f"{name}: expected [low, high] with 0 <= low <= high, got {lo_hi}")
        if self.speed[0] - self.speed_jitter < 80 or self.speed[1] + self.speed_jitter > 450:
            raise ConfigError(f"speed {self.speed} +- {self.speed_jitter} leaves espeak-ng's 80..450 wpm")
        if self.pitch[0] - self.pitch_jitter < 0 or self.pitch[1] + self.pitch_jitter > 99:
            raise ConfigError(f"pitch {self.pitch} +- {self.pitch_jitter} leaves espeak-ng's 0..99")


def _foundation_style() -> StyleConfig:
    # Careful, slower read speech with pauses between words: a different "corpus" from the
    # faster, wider-ranging target speech, as the paper's stages came from different corpora.
    return StyleConfig(speed=[120, 155], speed_jitter=5, pitch=[35, 65], pitch_jitter=3, word_gap=[1, 4])


@dataclass
class SynthConfig:
    """The mini12 synthesiser: languages, utterance counts, voices and speaking styles."""
    seed: int = 1234                       # seeds every draw: the corpus is a function of the config
    # high-resource languages (in train_high)
    high: list[str] = field(default_factory=lambda: ["de", "es", "fr", "ru", "vi", "it", "en", "zh"])
    low: list[str] = field(default_factory=lambda: ["ar", "ja", "ko", "pt"])   # low-resource (train_low_full)
    counts: CountsConfig = field(default_factory=CountsConfig)
    voices: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VOICES))   # language -> espeak-ng voice
    # espeak-ng voice variants (file names under espeak-ng-data/voices/!v); null = all installed.
    variants: list[str] | None = None
    # Whispered voices carry no pitch at all; "Mr serious" has a space in its file name.
    exclude_variants: list[str] = field(default_factory=lambda: ["whisper", "whisperf", "Mr serious"])
    n_test_variants: int = 12              # held out: test only, never in any training/dev set
    foundation_disjoint_voices: bool = True  # foundation and target train/dev use disjoint variants
    target_style: StyleConfig = field(default_factory=StyleConfig)
    foundation_style: StyleConfig = field(default_factory=_foundation_style)
    n_function_words: int = 40             # wordfreq's most frequent words (foundation only)
    n_content_words: int = 200             # the next band: the target "<number> <word>" words
    foundation_number_digits: int = 4      # foundation number runs: up to this many digits
    target_number_digits: int = 3          # the target "<number> <word>" phrases
    years: list[int] = field(default_factory=lambda: [1900, 2099])  # target "<month> <year>", inclusive
    n_countries: int | None = None         # country names per language (null: all ~57 usable)
    foundation_phrase_share: float = 0.0   # foundation utterances that are target-template phrases
    # Seconds of silence kept after the last sound (null: all of it). espeak-ng ends every
    # utterance with ~0.4 s of silence (measured on mini12's foundation: 0.41 s of 2.6 s).
    max_trailing_silence: float | None = None
    sample_rate: int = 16000               # Hz of the written audio
    nj: int = 2                            # synthesis processes (does not change the output)
    espeak: str = "espeak-ng"              # binary (does not change the output)

    def __post_init__(self):
        langs = self.high + self.low
        for lang in langs:
            if lang not in LANGUAGES:
                raise ConfigError(f"language {lang!r} has no mini12 templates; known: {', '.join(LANGUAGES)}")
            if lang not in self.voices:
                raise ConfigError(f"voices: no espeak-ng voice for language {lang!r}")
        if len(set(langs)) != len(langs):
            raise ConfigError(f"high/low: a language is listed twice in {langs}")
        if not self.high:
            raise ConfigError("high: at least one high-resource language is needed")
        if self.n_test_variants < 1 or self.nj < 1 or self.sample_rate < 8000:
            raise ConfigError("n_test_variants and nj must be >= 1, sample_rate >= 8000")
        if self.n_function_words < 1 or self.n_content_words < 1:
            raise ConfigError("n_function_words and n_content_words must be >= 1")
        for key in ("foundation_number_digits", "target_number_digits"):
            if not 1 <= getattr(self, key) <= 6:
                raise ConfigError(f"{key}: must be 1..6, got {getattr(self, key)}")
        if len(self.years) != 2 or not 0 < self.years[0] <= self.years[1] <= 9999:
            raise ConfigError(f"years: must be [first, last] with 0 < first <= last <= 9999, got {self.years}")
        if self.max_trailing_silence is not None and self.max_trailing_silence < 0:
            raise ConfigError(f"max_trailing_silence: must be >= 0 seconds or null, got {self.max_trailing_silence}")
        if not 0.0 <= self.foundation_phrase_share <= 1.0:
            raise ConfigError(f"foundation_phrase_share: must be in [0, 1], got {self.foundation_phrase_share}")
        if self.n_countries is not None and self.n_countries < 2:
            raise ConfigError(f"n_countries: the route template needs at least 2, got {self.n_countries}")

    @property
    def text_limits(self) -> TextLimits:
        return TextLimits(self.foundation_number_digits, self.target_number_digits, tuple(self.years),
                          self.foundation_phrase_share)

    @property
    def languages(self) -> list[str]:
        return self.high + self.low


# Fields that do not change what is synthesised: a rerun may differ in these.
RUNTIME_FIELDS = ("nj", "espeak")
