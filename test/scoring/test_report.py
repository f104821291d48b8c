"""RESULTS.md: rows per method, mean ± std over seeds, groups, regimes, relative change, provenance."""
import json
from pathlib import Path

import pytest

from zlora.bin import report as report_cli
from zlora.scoring.report import (ReportOptions, decode_label, group_runs, load_run, mean_std,
                                  method_label, read_meta, relative_change, write_results_md)
from zlora.utils.cli import UserError


def _result(rates):
    out = {}
    for lang, rate in rates.items():
        metric = "cer" if lang in ("zh", "ja", "ko", "th") else "wer"
        errors = int(round(rate))   # 100 reference units -> rate == errors
        out[lang] = {"metric": metric, "errors": errors, "ref_units": 100, "rate": float(errors),
                     "sub": errors, "del": 0, "ins": 0, "utts": 10}
    return out


def make_run(root, name, method, regime, seed, rates, meta_name="meta.json"):
    d = root / name
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(_result(rates)))
    meta = {"method": method, "regime": regime, "seed": seed, "test_set": "test",
            "exp": f"exp/{name}", "config": f"exp/{name}/config.yaml",
            "commands": [f"python -m zlora.bin.train --config conf/{name}.yaml"], "git": "abc123"}
    if meta_name == "meta.json":
        (d / meta_name).write_text(json.dumps(meta))
    else:
        import yaml
        (d / meta_name).write_text(yaml.safe_dump(meta))
    return str(d)


@pytest.fixture
def runs(tmp_path):
    dirs = [
        make_run(tmp_path, "van_s0", "Vanilla-LoRA", "full", 0, {"en": 10, "fr": 20, "ja": 40}),
        make_run(tmp_path, "van_s1", "Vanilla-LoRA", "full", 1, {"en": 12, "fr": 22, "ja": 44}),
        make_run(tmp_path, "zip_s0", "Zipper-LoRA-Soft", "full", 0, {"en": 8, "fr": 18, "ja": 30}),
        make_run(tmp_path, "zip_s1", "Zipper-LoRA-Soft", "full", 1, {"en": 9, "fr": 20, "ja": 34},
                 meta_name="meta.yaml"),
        make_run(tmp_path, "van_ch", "Vanilla-LoRA", "chunked", 0, {"en": 11, "fr": 21, "ja": 41}),
    ]
    return tmp_path, dirs


def test_mean_std_is_sample_std():
    assert mean_std([10.0, 12.0]) == (11.0, pytest.approx(2 ** 0.5))
    assert mean_std([5.0]) == (5.0, None)


def test_table_rows_groups_seeds_and_regimes(runs):
    tmp, dirs = runs
    out = tmp / "RESULTS.md"
    assert report_cli.main(["--out", str(out), "--high", "en,fr", "--low", "ja", *dirs]) == 0
    text = out.read_text()
    full = text.split("## test: non-chunked")[1].split("## How each row")[0]
    chunked = text.split("## test: chunked encoder")[1].split("## test: non-chunked")[0]
    assert "### High-resource languages" in full and "### Low-resource languages" in full
    assert "| Method | en (WER) | fr (WER) | Avg | seeds |" in full
    # Vanilla en: 10, 12 -> 11.00 ± 1.41; per-seed high averages 15, 17 -> 16.00 ± 1.41
    assert "| Vanilla-LoRA | 11.00 ± 1.41 | 21.00 ± 1.41 | 16.00 ± 1.41 | 2 |" in full
    assert "| Zipper-LoRA-Soft | 8.50 ± 0.71 | 19.00 ± 1.41 | 13.75 ± 1.06 | 2 |" in full
    assert "| Method | ja (CER) | Avg | seeds |" in full
    assert "| Zipper-LoRA-Soft | 32.00 ± 2.83 | 32.00 ± 2.83 | 2 |" in full
    # the chunked section has only its own run, single seed: no ± and no relative change
    assert "| Vanilla-LoRA | 11.00 | 21.00 | 16.00 | 1 |" in chunked
    assert "Zipper" not in chunked and "Relative change vs" not in chunked
    # relative change, Fig. 6 style: ja 32 vs 42 -> -23.8 %
    assert "| Zipper-LoRA-Soft | -23.8% | -23.8% |" in full
    # provenance of every row
    assert text.count("git revision: `abc123`") == 5
    assert "python -m zlora.bin.train --config conf/zip_s1.yaml" in text


def test_provenance_lists_training_and_decoding_and_no_seed_none(tmp_path):
    """A row's provenance names the configs its decode dir and exp dirs recorded (stage 1 via the
    stage-2 config's init_from) and the commands that rerun them; an unknown seed is not shown."""
    import yaml

    s1, s2, dec = tmp_path / "exp/stage1", tmp_path / "exp/zip", tmp_path / "exp/zip/decode_test"
    for d in (s1, s2, dec):
        d.mkdir(parents=True)
    (s1 / "config.yaml").write_text(yaml.safe_dump({"stage": 1, "seed": 0}))
    (s2 / "config.yaml").write_text(yaml.safe_dump({"stage": 2, "seed": 0,
                                                    "init_from": str(s1 / "checkpoints/step-100")}))
    (dec / "decode.yaml").write_text(yaml.safe_dump({"exp": str(s2), "data": "data/test"}))
    score = dec / "score"
    score.mkdir()
    (score / "result.json").write_text(json.dumps(_result({"en": 10})))
    (score / "meta.json").write_text(json.dumps({"method": "Z", "regime": "full", "seed": None,
                                                 "commands": ["python -m zlora.bin.score --x"]}))
    text = write_results_md([load_run(str(score))], ReportOptions(baseline=None), tmp_path / "R.md")
    prov = text.split("## How each row was produced")[1]
    assert "seed None" not in text and "### Z / full / test\n" in prov
    assert f"- stage-1 training config: `{s1}/config.yaml`" in prov
    assert f"- training config: `{s2}/config.yaml`" in prov
    assert f"- decoding config: `{dec}/decode.yaml`" in prov
    cmds = prov.split("```sh\n")[1].split("```")[0].splitlines()
    assert cmds == [f"python -m zlora.bin.train --config {s1}/config.yaml",
                    f"python -m zlora.bin.train --config {s2}/config.yaml",
                    f"python -m zlora.bin.decode --config {dec}/decode.yaml",
                    "python -m zlora.bin.score --x"]


def test_relative_change_values(runs):
    _, dirs = runs
    rows = group_runs([load_run(d) for d in dirs])[("test", "full")]
    ch = relative_change(rows, "Vanilla-LoRA", ["en", "fr"])["Zipper-LoRA-Soft"]
    assert ch["en"] == pytest.approx(100 * (8.5 - 11) / 11)
    assert ch["Avg"] == pytest.approx(100 * (13.75 - 16) / 16)


def test_baseline_given_as_an_exp_dir_is_its_runs_label(runs, tmp_path):
    """--baseline EXP (a training run's dir) means that run's row label, so a recipe names its
    baseline by run; a run never made is a label not among the runs: noted, no relative change,
    and Fig. 6 refuses it by name."""
    import yaml

    from zlora.bin import plot as plot_cli

    tmp, dirs = runs
    exp = tmp_path / "exp" / "stage2_full_lora"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump({"stage": 2, "adapter": {"kind": "lora"}}))
    out = tmp / "R.md"
    report_cli.main(["--out", str(out), "--baseline", str(exp), *dirs])
    assert "Relative change vs Vanilla-LoRA (%)" in out.read_text()
    plot_cli.main(["relchange", "--regime", "full", "--out", str(tmp / "f6.png"), "--baseline", str(exp), *dirs])
    assert (tmp / "f6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    never_run = str(tmp_path / "exp" / "stage2_full_flylora")
    report_cli.main(["--out", str(out), "--baseline", never_run, *dirs])
    text = out.read_text()
    assert "Relative change vs" not in text and f"(baseline {never_run!r} not among these runs" in text
    with pytest.raises(UserError, match="stage2_full_flylora' not among the methods"):
        plot_cli.main(["relchange", "--regime", "full", "--out", str(tmp / "f6b.png"), "--baseline", never_run, *dirs])


def test_missing_language_gives_dash_and_no_average(tmp_path):
    dirs = [make_run(tmp_path, "a", "A", "full", 0, {"en": 10, "fr": 20}),
            make_run(tmp_path, "b", "B", "full", 0, {"en": 10})]
    out = tmp_path / "R.md"
    write_results_md([load_run(d) for d in dirs], ReportOptions(baseline=None), out)
    assert "| B | 10.00 | – | – | 1 |" in out.read_text()


def test_duplicate_seed_and_missing_meta_are_errors(tmp_path):
    a = make_run(tmp_path, "a", "A", "full", 0, {"en": 10})
    b = make_run(tmp_path, "b", "A", "full", 0, {"en": 11})
    with pytest.raises(UserError, match="both method 'A'"):
        group_runs([load_run(a), load_run(b)])
    (tmp_path / "a" / "meta.json").unlink()
    with pytest.raises(UserError, match="no meta.json"):
        load_run(a)
    assert load_run(f"Named={a}").meta.method == "Named"


def test_meta_unknown_key_and_single_command(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"method": "A", "regime": "full", "command": "run it"}))
    assert read_meta(d).commands == ["run it"]
    (d / "meta.json").write_text(json.dumps({"method": "A", "regime": "full", "sed": 1}))
    with pytest.raises(UserError, match="unknown key.*'sed'"):
        read_meta(d)


def test_report_with_figures(runs):
    tmp, dirs = runs
    out = tmp / "res" / "RESULTS.md"
    report_cli.main(["--out", str(out), "--figures", str(tmp / "res" / "figs"), *dirs])
    text = out.read_text()
    assert "](figs/radar-test-full.png)" in text and "](figs/relchange-test-full.png)" in text
    assert (tmp / "res" / "figs" / "radar-test-chunked.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lid_section_from_lid_json(runs, tmp_path):
    _, dirs = runs
    lid = {"lang_mode": "whisper_lid", "utts": 4, "accuracy": 0.75,
           "per_language": {"en": {"utts": 2, "correct": 2, "accuracy": 1.0},
                            "ja": {"utts": 2, "correct": 1, "accuracy": 0.5}}}
    (tmp_path / "lid.json").write_text(json.dumps(lid))
    out = tmp_path / "R.md"
    with pytest.raises(SystemExit) as e:
        report_cli_main(["--out", str(out), "--high", "en,fr", "--low", "ja",
                         "--lid", f"KD (LID: Whisper)={tmp_path / 'lid.json'}", *dirs])
    assert e.value.code == 0
    text = out.read_text()
    assert "## Language identification" in text
    assert "| KD (LID: Whisper) | whisper_lid | 100.0 | 50.0 | 75.0 | 4 |" in text
    for bad in ("nolabel", f"x={tmp_path / 'missing.json'}", f"x={dirs[0]}/result.json"):
        with pytest.raises(SystemExit) as e:
            report_cli_main(["--out", str(tmp_path / "R2.md"), "--lid", bad, *dirs])
        assert e.value.code == 2
    assert not (tmp_path / "R2.md").exists()


def report_cli_main(argv):
    from zlora.utils.cli import run_main

    run_main(report_cli.main, argv)


def test_lid_rows_from_decode_dirs(runs, tmp_path):
    """--lid_from_decodes: a row per scored run whose decode dir holds lid.json, 'METHOD (SET)'."""
    _, dirs = runs
    lid = {"lang_mode": "mole", "utts": 2, "accuracy": 0.5,
           "per_language": {"en": {"utts": 2, "correct": 1, "accuracy": 0.5}}}
    decode = tmp_path / "mole" / "decode_test_mole"
    score_dir = make_run(decode, "score", "LoRA-MoLE (LID: MoLE classifier)", "full", 0, {"en": 10})
    (decode / "lid.json").write_text(json.dumps(lid))
    out = tmp_path / "R.md"
    assert report_cli.main(["--out", str(out), "--lid_from_decodes", *dirs, score_dir]) == 0
    text = out.read_text()
    assert "| LoRA-MoLE (LID: MoLE classifier) (test) | mole | 50.0 | 50.0 | 2 |" in text
    assert text.count("| mole |") == 1          # the other runs' decode dirs have no lid.json
    assert report_cli.main(["--out", str(out), *dirs, score_dir]) == 0
    assert "## Language identification" not in out.read_text()


# ----------------------------------------------------------------------------- row labels

def stage2(kind, **adapter):
    return {"stage": 2, "adapter": {"kind": kind, "init_b_from": None, **adapter}, "distill": None}


@pytest.mark.parametrize("config, label", [
    ({"stage": 1, "adapter": None}, "Foundation (stage 1)"),
    (stage2("lora"), "Vanilla-LoRA"),
    (stage2("independent"), "Independent-LoRA"),
    (stage2("flylora"), "FlyLoRA"),
    (stage2("zipper-static"), "Zipper-LoRA-Static"),
    (stage2("zipper-hard"), "Zipper-LoRA-Hard"),
    (stage2("zipper-soft"), "Zipper-LoRA-Soft"),
    (stage2("zipper-soft", init_b_from="exp/zs/final/adapter.safetensors"), "Zipper-LoRA-Soft + initial-B"),
    (stage2("mole"), "LoRA-MoLE"),
    ({**stage2("lora"), "distill": {"mode": "layerwise"}}, "LoRA-KD"),
    ({**stage2("lora"), "distill": {"mode": "output"}}, "LoRA-KD output-only"),
])
def test_method_label_is_the_papers_name(config, label):
    """The paper's row names (Tables IV-V; arXiv 2506.21555), pinned here: every recipe and test
    gets them from method_label, so a renamed kind shows up as this test failing."""
    assert method_label(config) == label


def test_method_label_of_a_train_config_and_unknown_kind():
    from zlora.train.config import load_train_config

    conf = Path(__file__).resolve().parents[2] / "egs/mini12/asr1/conf/stage2"
    cfg = load_train_config(["--config", str(conf / "zipper-soft-initb.yaml"),
                             "--adapter.init_b_from", "x/adapter.safetensors"])
    assert method_label(cfg) == "Zipper-LoRA-Soft + initial-B"
    with pytest.raises(ValueError, match="no-such-kind"):
        method_label(stage2("no-such-kind"))
    with pytest.raises(UserError, match="adapter.kind"):
        method_label({"stage": 2, "adapter": None})


def test_decode_label_names_the_lid_source():
    assert decode_label(stage2("lora")) == "Vanilla-LoRA"
    assert decode_label(stage2("zipper-soft"), "whisper_lid") == "Zipper-LoRA-Soft (LID: Whisper)"
    assert decode_label(stage2("zipper-soft"), "whisper_lid", "mixture") == \
        "Zipper-LoRA-Soft (LID: Whisper, mixture)"
    assert decode_label(stage2("mole"), "mole") == "LoRA-MoLE (LID: MoLE classifier)"
    assert decode_label({**stage2("lora"), "distill": {"mode": "layerwise"}}, "whisper_lid") == \
        "LoRA-KD (LID: Whisper)"
