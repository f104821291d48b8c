"""Results that are incomplete say so (issue 22): scoring with hypotheses missing records how many
are missing, RESULTS.md marks the cell and gives the count in a footnote, and --strict makes it
an error."""
import json

from rel_testlib import error_line, run_cli

from zlora.bin.report import main as report_main
from zlora.bin.score import main as score_main


def write(path, rows):
    path.write_text("".join(f"{u} {v}\n" for u, v in rows))
    return path


def test_missing_hypotheses_mark_the_results_cell_and_strict_refuses_them(tmp_path):
    utts = [f"u{i:03d}" for i in range(12)]
    ref = write(tmp_path / "ref", [(u, "one two three") for u in utts])
    lang = write(tmp_path / "utt2lang", [(u, "en" if i < 6 else "fr") for i, u in enumerate(utts)])
    hyp = write(tmp_path / "hyp", [(u, "one two three") for u in utts[:2] + utts[6:]])   # 4 en missing
    args = ["--ref", ref, "--hyp", hyp, "--utt2lang", lang, "--method", "Vanilla-LoRA", "--regime", "full"]
    code, err = run_cli(score_main, [*args, "--out", tmp_path / "s"])
    assert code == 0, err
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert result["en"]["missing"] == 4 and "missing" not in result["fr"]      # complete: as before
    code, err = run_cli(report_main, ["--out", tmp_path / "RESULTS.md", tmp_path / "s"])
    assert code == 0, err
    md = (tmp_path / "RESULTS.md").read_text()
    en_cell = [l for l in md.splitlines() if l.startswith("| Vanilla-LoRA |")][0].split("|")[2].strip()
    assert en_cell == f"{result['en']['rate']:.2f}*", md
    assert "4 of 6" in md and "missing" in md
    code, err = run_cli(score_main, [*args, "--out", tmp_path / "strict", "--strict"])
    assert code == 2 and "4 of 12" in error_line(err) and str(hyp) in error_line(err), err
    assert not (tmp_path / "strict" / "result.json").exists()
