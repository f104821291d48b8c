"""Hours per language and the high:low imbalance of a data dir (zlora.data.stats, zlora.bin.imbalance)."""
import importlib.util
from pathlib import Path

import pytest

from zlora.bin import imbalance as imbalance_cli
from zlora.data.kaldi import DataDir, DataDirError
from zlora.data.stats import imbalance, seconds_per_language

_spec = importlib.util.spec_from_file_location("tiny_datadir", Path(__file__).with_name("tiny_datadir.py"))
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def test_ratio_is_smallest_high_over_largest_low():
    got = imbalance({"de": 415.0, "en": 600.0, "ja": 2.9, "ko": 2.4}, ["ja", "ko"])
    assert (got.high_lang, got.low_lang) == ("de", "ja") and got.ratio == pytest.approx(415 / 2.9)
    assert got.line() == "imbalance 143:1 (smallest high-resource language de 415 s, largest low-resource ja 2.9 s)"
    with pytest.raises(DataDirError, match="needs a high- and a low-resource language"):
        imbalance({"ja": 3.0}, ["ja"])
    with pytest.raises(DataDirError, match="needs a high- and a low-resource language"):
        imbalance({"de": 3.0}, ["ja"])


def test_seconds_from_utt2dur_or_the_audio(tmp_path):
    d = tiny.make_datadir(tmp_path / "d", langs=("de", "ja"), spks_per_lang=2, utts_per_spk=3, seconds=0.5)
    assert seconds_per_language(DataDir(d)) == pytest.approx({"de": 3.0, "ja": 3.0})   # measured
    (d / "utt2dur").write_text("".join(f"{line.split()[0]} {1.0 if line.startswith('de') else 0.25}\n"
                                       for line in (d / "utt2lang").read_text().splitlines()))
    assert seconds_per_language(DataDir(d)) == {"de": 6.0, "ja": 1.5}                    # read


def test_verb_prints_hours_per_language_and_the_ratio(tmp_path, capsys):
    d = tiny.make_datadir(tmp_path / "d", langs=("de", "en", "ja"), spks_per_lang=1, utts_per_spk=2,
                          seconds=0.5, utt2dur=True)
    assert imbalance_cli.main(["--low", "ja", str(d)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{d}: de (high-resource) 0.0003 h (1.0 s)" and len(out) == 4
    assert out[-1].endswith("imbalance 1:1 (smallest high-resource language de 1 s, largest low-resource ja 1.0 s)")
