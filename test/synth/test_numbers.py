"""Numbers as words: the hand-written Chinese converter and the Japanese/year special cases."""
import pytest

from zlora.data.synth.numbers import JA_DAY_OF_MONTH, spell_number, zh_digits, zh_number


@pytest.mark.parametrize("n, hanzi", [
    (0, "零"), (7, "七"), (10, "十"), (11, "十一"), (20, "二十"), (21, "二十一"), (100, "一百"),
    (105, "一百零五"), (110, "一百一十"), (999, "九百九十九"), (1005, "一千零五"),
    (1050, "一千零五十"), (2024, "二千零二十四"), (10000, "一万"), (10010, "一万零一十"),
    (100000, "十万"), (100200, "十万零二百"), (110000, "十一万"), (10000000, "一千万"),
    (100000005, "一亿零五"), (100010000, "一亿零一万"), (105000000, "一亿零五百万"),
    (123456789, "一亿二千三百四十五万六千七百八十九"),
])
def test_zh_number(n, hanzi):
    assert zh_number(n) == hanzi


def test_zh_number_rejects_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        zh_number(-1)


def test_zh_years_and_counts():
    assert zh_digits(1990) == "一九九零"
    assert spell_number(1990, "zh", "year") == "一九九零"
    assert spell_number(2, "zh", "count") == "两"
    assert spell_number(2, "zh") == "二"


def test_ja_readings_are_kana():
    assert spell_number(20, "ja", "day") == "はつか"
    assert spell_number(1, "ja", "day") == "ついたち"
    assert len(JA_DAY_OF_MONTH) == 31
    assert spell_number(21, "ja") == "にじゅういち"
    assert spell_number(2024, "ja", "year") == "にせんにじゅうよ"   # before ねん: よねん
    with pytest.raises(ValueError, match="1..31"):
        spell_number(32, "ja", "day")


def test_years_read_as_years_where_spoken_so():
    assert spell_number(1990, "en", "year") == "nineteen ninety"
    assert spell_number(1990, "de", "year") == "neunzehnhundertneunzig"
    assert spell_number(1990, "fr", "year") == spell_number(1990, "fr")


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown number kind"):
        spell_number(3, "en", "ordinal")
