"""A run's averages beside a reference's, read back from RESULTS.md files of zlora.bin.report."""
import json

import pytest

from zlora.bin import compare_results
from zlora.bin import report as report_cli
from zlora.scoring.compare import cell_mean, compare, parse_results_md, read_results_md
from zlora.utils.cli import UserError


def scored(root, name, method, seed, rates, test_set="test"):
    d = root / name
    d.mkdir(parents=True)
    result = {lang: {"metric": "wer", "errors": int(r), "ref_units": 100, "rate": float(r), "sub": int(r),
                     "del": 0, "ins": 0, "utts": 5} for lang, r in rates.items()}
    (d / "result.json").write_text(json.dumps(result))
    (d / "meta.json").write_text(json.dumps({"method": method, "regime": "full", "seed": seed,
                                             "test_set": test_set}))
    return str(d)


def results_md(root, name, runs, high="en,fr", low="ja"):
    out = root / name
    assert report_cli.main(["--out", str(out), "--high", high, "--low", low, *runs]) == 0
    return out


@pytest.fixture
def two_files(tmp_path):
    this = results_md(tmp_path, "this.md", [
        scored(tmp_path, "f", "Foundation (stage 1)", 0, {"en": 40, "fr": 50, "ja": 30}),
        scored(tmp_path, "v0", "Vanilla-LoRA", 0, {"en": 20, "fr": 30, "ja": 20}),
        scored(tmp_path, "v1", "Vanilla-LoRA", 1, {"en": 22, "fr": 32, "ja": 24}),
        scored(tmp_path, "z", "Zipper-LoRA-Soft", 0, {"en": 18, "fr": 28, "ja": 22}),
        scored(tmp_path, "zd", "Zipper-LoRA-Soft", 0, {"en": 10, "fr": 10, "ja": 10}, test_set="dev")])
    ref = results_md(tmp_path, "ref.md", [
        scored(tmp_path, "rf", "Foundation (stage 1)", 0, {"en": 40, "fr": 50, "ja": 30}),
        scored(tmp_path, "rv", "Vanilla-LoRA", 0, {"en": 24, "fr": 30, "ja": 20})])
    return this, ref


def test_parse_reads_each_method_tables_avg(two_files):
    this, _ = two_files
    tables = parse_results_md(this.read_text())
    assert list(tables) == ["dev: non-chunked (full-context) encoder", "test: non-chunked (full-context) encoder"]
    test = tables["test: non-chunked (full-context) encoder"]
    assert list(test) == ["High-resource languages", "Low-resource languages"]
    assert test["High-resource languages"].langs == ["en", "fr"]
    # Vanilla: per-seed high averages 25 and 27 -> 26.00 ± 1.41; relative-change rows are not read
    assert test["High-resource languages"].avg == {"Foundation (stage 1)": "45.00",
                                                   "Vanilla-LoRA": "26.00 ± 1.41", "Zipper-LoRA-Soft": "23.00"}
    assert test["Low-resource languages"].avg["Zipper-LoRA-Soft"] == "22.00"


def test_compare_puts_this_run_beside_the_reference(two_files):
    this, ref = two_files
    text = compare(read_results_md(this), read_results_md(ref))
    test = text.split("### test:")[1]
    assert "| Method | High-resource: this run | High-resource: reference | High-resource: Δ |" in test
    assert "| Vanilla-LoRA | 26.00 ± 1.41 | 27.00 | -1.00 | 22.00 ± 2.83 | 20.00 | +2.00 |" in test
    assert "| Foundation (stage 1) | 45.00 | 45.00 | +0.00 | 30.00 | 30.00 | +0.00 |" in test
    assert "| Zipper-LoRA-Soft | 23.00 | – | – | 22.00 | – | – |" in test   # not in the reference
    assert "- High-resource languages: not in the reference." in text.split("### test:")[0]  # dev section


def test_other_languages_are_flagged_not_comparable(tmp_path):
    a = results_md(tmp_path, "a.md", [scored(tmp_path, "a", "A", 0, {"en": 10, "fr": 20, "ja": 5})])
    b = results_md(tmp_path, "b.md", [scored(tmp_path, "b", "A", 0, {"en": 10, "ja": 5})], high="en")
    text = compare(read_results_md(a), read_results_md(b))
    assert "this run averages en,fr, the reference en: not comparable" in text
    assert "Low-resource languages" not in text.split("not comparable")[1]   # ja vs ja: no note


def test_cell_mean():
    assert cell_mean("12.34 ± 0.56") == 12.34 and cell_mean("7.00") == 7.0
    assert cell_mean("–") is None and cell_mean(None) is None


def test_verb_prints_and_rejects_bad_files(two_files, tmp_path, capsys):
    this, ref = two_files
    assert compare_results.main(["--reference", str(ref), str(this)]) == 0
    out = capsys.readouterr().out
    assert f"beside the reference {ref}" in out and "| Vanilla-LoRA | 26.00 ± 1.41 | 27.00 | -1.00 |" in out
    with pytest.raises(UserError, match="does not exist"):
        compare_results.main(["--reference", str(tmp_path / "nope.md"), str(this)])
    (tmp_path / "empty.md").write_text("# nothing\n")
    with pytest.raises(UserError, match="no method table"):
        compare_results.main(["--reference", str(ref), str(tmp_path / "empty.md")])
