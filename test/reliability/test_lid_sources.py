"""Language classifiers that learn, end to end on the two-language test corpus (en, fr): the linear
LID probe (zlora.bin.train_lid_probe) and LoRA-MoLE's classifier with its class-balanced LID
phase both reach perfect LID, and language-agnostic decoding with a perfect LID equals
known-language decoding."""
import copy
import json

from rel_testlib import run_cli
from test_decode_lang_modes import _decode
from train_testlib import train_inprocess

from zlora.bin.train_lid_probe import main as probe_main


def test_probe_learns_and_decodes_like_the_known_language(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    probe = tmp_path / "probe.safetensors"
    code, err = run_cli(probe_main, ["--data", str(data), "--feats", str(feats), "--languages", "en,fr",
                                     "--out", str(probe), "--steps", "100"])
    assert code == 0, err
    common = ["--exp", trained[0], "--data", data, "--feats", feats, "--decoding.max_new_tokens", 4]
    assert _decode(monkeypatch, [*common, "--out", tmp_path / "known"])[0] == 0
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "probe", "--lang.mode", "probe",
                                      "--lang.probe", probe, "--lang.router_input", "mixture"])
    assert code == 0, err
    assert json.loads((tmp_path / "probe" / "lid.json").read_text())["accuracy"] == 1.0
    assert (tmp_path / "probe" / "text").read_text() == (tmp_path / "known" / "text").read_text()
    assert (tmp_path / "probe" / "lid_posteriors.jsonl").is_file()
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "x", "--lang.mode", "probe"])
    assert code == 2 and "needs --lang.probe" in err
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "y", "--lang.mode", "probe",
                                      "--lang.probe", tmp_path / "nope.safetensors"])
    assert code == 2 and "no such file" in err


def mole_config(trained, tmp_path, experts, phase_steps):
    exp1, cfg = trained
    return {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / f"mole{phase_steps}"), "stage": 2,
            "init_from": str(exp1), "optim": {**cfg["optim"], "max_steps": 2},
            "adapter": {"kind": "mole", "rank": 2, "alpha": 4.0, "target_modules": r"layers\.(0|1)\.fc1",
                        "conf": {"experts": experts, "fused": r"layers\.0\..*", "lid_hidden": 16,
                                 "lid_phase_steps": phase_steps, "lid_phase_lr": 1e-2}}}


def expert_files(trained, tmp_path, monkeypatch):
    """Two `lora` experts (en, fr): short stage-2 runs on the same data."""
    exp1, cfg = trained
    paths = []
    for lang in ("en", "fr"):
        ecfg = {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / f"expert_{lang}"), "stage": 2,
                "init_from": str(exp1), "optim": {**cfg["optim"], "max_steps": 1},
                "adapter": {"kind": "lora", "rank": 2, "alpha": 4.0, "target_modules": r"layers\.(0|1)\.fc1"}}
        assert train_inprocess(monkeypatch, ecfg, tmp_path / f"expert_{lang}.yaml") == 0
        paths.append(str(tmp_path / f"expert_{lang}" / "final" / "adapter.safetensors"))
    return paths


def test_mole_lid_phase_reaches_perfect_lid(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    experts = expert_files(trained, tmp_path, monkeypatch)
    cfg = mole_config(trained, tmp_path, experts, 200)
    assert train_inprocess(monkeypatch, cfg, tmp_path / "mole.yaml") == 0
    log = (tmp_path / "mole200" / "train.log").read_text()
    assert "MoLE LID phase:" in log and "balanced 1.0000" in log
    common = ["--exp", tmp_path / "mole200", "--data", data, "--feats", feats, "--decoding.max_new_tokens", 4]
    assert _decode(monkeypatch, [*common, "--out", tmp_path / "known"])[0] == 0
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "agnostic", "--lang.mode", "mole"])
    assert code == 0, err
    assert json.loads((tmp_path / "agnostic" / "lid.json").read_text())["accuracy"] == 1.0
    assert (tmp_path / "agnostic" / "text").read_text() == (tmp_path / "known" / "text").read_text()


def test_mole_lid_phase_learns_a_language_from_lid_phase_data_alone(tmp_path, trained, corpus, monkeypatch):
    """ASR data of one language (en) plus adapter.conf.lid_phase_data holding both: the LID phase
    draws fr from the extra data only, and the classifier then recognises fr too."""
    from zlora.bin.subset_data_dir import main as subset_main

    data, feats, _ = corpus
    assert run_cli(subset_main, ["--lang", "en", str(data), str(tmp_path / "en_only")])[0] == 0
    experts = expert_files(trained, tmp_path, monkeypatch)
    cfg = mole_config(trained, tmp_path, experts, 200)
    cfg["data"] = {**cfg["data"], "train": str(tmp_path / "en_only")}
    cfg["adapter"]["conf"].update(lid_phase_data=[str(data)], lid_phase_feats=[str(feats)])
    assert train_inprocess(monkeypatch, cfg, tmp_path / "mole.yaml") == 0
    log = (tmp_path / "mole200" / "train.log").read_text()
    assert "MoLE LID phase: 24 pooled tap states" in log     # 8 en (ASR data), then 8 en + 8 fr
    common = ["--exp", tmp_path / "mole200", "--data", data, "--feats", feats, "--decoding.max_new_tokens", 4]
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "agnostic", "--lang.mode", "mole"])
    assert code == 0, err
    assert json.loads((tmp_path / "agnostic" / "lid.json").read_text())["per_language"]["fr"]["accuracy"] == 1.0


def test_probe_pools_several_data_dirs(tmp_path, corpus, capsys):
    """--data/--feats pairs are one training set: a language only the second dir holds is learnt;
    unpaired lists are refused."""
    from zlora.bin.subset_data_dir import main as subset_main

    data, feats, _ = corpus
    for lang in ("en", "fr"):
        assert run_cli(subset_main, ["--lang", lang, str(data), str(tmp_path / lang)])[0] == 0
    probe = tmp_path / "probe.safetensors"
    code, out = run_cli(probe_main, ["--data", str(tmp_path / "en"), str(tmp_path / "fr"), "--feats", str(feats),
                                     str(feats), "--languages", "en,fr", "--out", str(probe), "--steps", "100",
                                     "--eval_data", str(data), "--eval_feats", str(feats)])
    assert code == 0, out
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["eval"]["per_language"] == {"en": 1.0, "fr": 1.0}
    code, err = run_cli(probe_main, ["--data", str(data), str(data), "--feats", str(feats), "--languages", "en,fr",
                                     "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "one feats.scp per data dir" in err
