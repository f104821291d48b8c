"""Whisper normalisation: English rules, basic normaliser, and equality with openai/whisper's code."""
import pytest

from zlora.scoring.normalize import base_language, describe, get_normalizer, normalize

SENTENCES = [
    "I have twenty-one apples, Mr. Smith!",
    "That cause is kinda odd, sorta; I dunno.",
    "The colour of 1,000 cats costs $5.50 or ten thousand dollars.",
    "HELLO [noise] (laughs) world... uh um it's 3 o'clock",
    "one oh one, the 1960s, twenty first, 45 percent",
    "Straße, Ñandú & ÉTÉ — naïve café!",
]


def test_case_and_punctuation_en():
    assert normalize("HELLO, World!!  How are you?", "en") == "hello world how are you"


def test_numbers_en():
    assert normalize("I have twenty-one apples.", "en") == "i have 21 apples"
    assert normalize("ten thousand dollars", "en") == "$10000"
    assert normalize("It costs 1,000 dollars", "en") == "it costs $1000"
    assert normalize("one", "en") == "one"
    assert normalize("one oh one", "en") == "101"   # successive digits read as one number


def test_contractions_titles_spelling_fillers_en():
    assert normalize("Mr. Smith won't go", "en") == "mister smith will not go"
    assert normalize("the colour is grey", "en") == "the color is gray"
    assert normalize("um well [laughter] uh okay", "en") == "well okay"


def test_package_extras_removed_en():
    # whisper-normalizer adds these four rules; openai/whisper does not have them.
    assert normalize("the cause is kinda sorta unclear, i dunno", "en") == \
        "the cause is kinda sorta unclear i dunno"


def test_basic_keeps_numbers_words_and_precomposed_letters():
    assert normalize("Vingt-et-un, ÉTÉ!", "fr") == "vingt et un été"
    assert normalize("Привет, МИР!", "ru") == "привет мир"
    assert normalize("Straße (lacht) [Musik]", "de") == "straße"


def test_basic_turns_combining_marks_into_spaces_unless_preserved():
    # Whisper's basic normaliser: Thai vowel/tone marks and Arabic harakat (category Mn) -> space.
    assert normalize("สวัสดี ครับ", "th") == "สว สด คร บ"
    assert normalize("كَتَبَ", "ar") == "ك ت ب"
    assert normalize("สวัสดี ครับ", "th", preserve_marks=["th"]) == "สวัสดี ครับ"
    assert normalize("كَتَبَ", "ar", preserve_marks=["ar"]) == "كَتَبَ"


def test_region_suffix_and_describe():
    assert base_language("en-US") == "en" and base_language("zh_CN") == "zh"
    assert normalize("Twenty two", "en-GB") == "22"
    text = describe(["en", "fr"], ["th"])
    assert "en: Whisper EnglishTextNormalizer" in text and "fr: Whisper BasicTextNormalizer()" in text


def test_matches_openai_whisper_code_as_copied_in_transformers():
    """transformers ships openai/whisper's normalisers verbatim; ours must agree on every input."""
    import json
    from importlib.resources import files

    eng = pytest.importorskip("transformers.models.whisper.english_normalizer")
    mapping = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text())
    reference_en = eng.EnglishTextNormalizer(mapping)
    reference_basic = eng.BasicTextNormalizer()
    for s in SENTENCES:
        assert get_normalizer("en")(s) == reference_en(s), s
        assert get_normalizer("fr")(s) == reference_basic(s), s
