"""Inputs that used to be accepted although they were wrong (issue 22): duplicate YAML keys, YAML 1.1
booleans for language codes, command-line overrides blamed on the file, outputs that overwrite
inputs, adapter ranks wider than the layer, unchecked utt2num_frames, Kaldi files that shell tools
read differently, subsets larger than their source."""
import copy
import shutil

import numpy as np
import pytest
import soundfile as sf

from rel_testlib import decode_inprocess, error_line, run_cli, stage2_config
from tiny_datadir import make_datadir
from train_testlib import single_process_env, write_config

from zlora.bin.dump_encoder import main as dump_encoder_main
from zlora.bin.dump_feats import main as dump_feats_main
from zlora.bin.fix_data_dir import main as fix_main
from zlora.bin.score import main as score_main
from zlora.bin.subset_data_dir import main as subset_main
from zlora.bin.train import main as train_main
from zlora.bin.validate_data_dir import main as validate_main


def train_cli(monkeypatch, path, *args):
    single_process_env(monkeypatch)
    return run_cli(train_main, ["--config", path, *args])


# ---- config reading -----------------------------------------------------------------------------------------
def test_a_duplicate_yaml_key_is_an_error_naming_both_lines(tmp_path, trained, monkeypatch):
    import yaml

    cfg = stage2_config(trained, tmp_path, "dup", kind="zipper-soft", rank=2)
    soft = yaml.safe_dump({"adapter": cfg.pop("adapter")}, sort_keys=False)
    text = soft + yaml.safe_dump(cfg, sort_keys=False) + "adapter:\n  kind: lora\n  rank: 2\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    code, err = train_cli(monkeypatch, path)
    assert code == 2, err
    line = error_line(err)
    last = text.splitlines().index("adapter:", 1) + 1
    assert f"{path}:{last}" in line and "'adapter'" in line and "line 1" in line, line
    assert not (tmp_path / "dup").exists()


def test_command_line_overrides_are_blamed_on_the_command_line(tmp_path, trained, monkeypatch):
    _, cfg = trained
    cfg = {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / "exp")}
    path = write_config(tmp_path / "c.yaml", cfg)
    code, err = train_cli(monkeypatch, path, "--optim.lrr", "1e-3")
    assert code == 2, err
    line = error_line(err)
    assert "command line" in line and "--optim.lrr" in line and str(path) not in line, line
    # "no" is YAML 1.1's false: the message says so, and how to quote it
    code, err = train_cli(monkeypatch, path, "--languages", "[en,no]")
    assert code == 2, err
    line = error_line(err)
    assert "command line" in line and "--languages" in line and "'no'" in line and "quote" in line, line
    # the same value in the file is blamed on the file, with the same hint
    bad = {**cfg, "languages": ["en", False]}
    path2 = tmp_path / "b.yaml"
    path2.write_text(write_config(tmp_path / "x.yaml", bad).read_text().replace("false", "no"))
    code, err = train_cli(monkeypatch, path2)
    assert code == 2 and str(path2) in error_line(err) and "quote" in error_line(err), err
    assert not (tmp_path / "exp").exists()


# ---- outputs never overwrite inputs ---------------------------------------------------------------------------
def test_an_output_that_is_or_holds_an_input_is_refused(tmp_path, trained, corpus, monkeypatch):
    data0, feats, _ = corpus
    data = tmp_path / "data"
    shutil.copytree(data0, data)
    reference = (data / "text").read_text()
    base = ["--exp", trained[0], "--feats", feats, "--decoding.max_new_tokens", 2, "--data", data]
    for out in (data, tmp_path):                    # the data dir itself, and a dir holding it
        code, err = decode_inprocess(monkeypatch, [*base, "--out", out])
        assert code == 2, err
        line = error_line(err)
        assert "--out" in line and "--data" in line and str(data) in line, line
    assert (data / "text").read_text() == reference
    code, err = run_cli(score_main, ["--ref", data / "text", "--hyp", data / "text", "--utt2lang",
                                     data / "utt2lang", "--out", data])
    assert code == 2 and "--out" in error_line(err), err
    code, err = run_cli(dump_feats_main, ["--data", data, "--out", data])
    assert code == 2 and "--out" in error_line(err), err
    code, err = run_cli(dump_encoder_main, ["--whisper_dir", tmp_path, "--feats", feats, "--layers", 1,
                                            "--out", feats.parent])
    assert code == 2 and "--out" in error_line(err) and "--feats" in error_line(err), err
    # data-dir tools: a destination holding a source (rewriting it while reading it)
    from zlora.bin.combine_data import main as combine_main
    from zlora.bin.combine_text import main as combine_text_main
    from zlora.bin.subset_data_dir import main as subset_main

    code, err = run_cli(subset_main, ["--utt_list", data / "text", data, tmp_path])
    assert code == 2 and "contains the input src" in error_line(err), err
    code, err = run_cli(combine_main, [tmp_path, data])
    assert code == 2 and "must not be or contain a source" in error_line(err), err
    code, err = run_cli(combine_text_main, ["--out", data / "text", data / "text"])
    assert code == 2 and "is the input" in error_line(err), err
    assert (data / "text").read_text() == reference


# ---- models -----------------------------------------------------------------------------------------------------
def test_an_adapter_rank_wider_than_the_layer_is_refused(tmp_path, trained, monkeypatch):
    cfg = stage2_config(trained, tmp_path, "wide", rank=2)
    path = write_config(tmp_path / "w.yaml", cfg)
    code, err = train_cli(monkeypatch, path, "--adapter.rank", "4096")
    assert code == 2, err
    line = error_line(err)
    assert "4096" in line and "layers.0" in line and "32" in line and "adapter.rank" in line, line
    assert not (tmp_path / "wide" / "checkpoints").exists()
    _, cfg1 = trained
    cfg1 = {**copy.deepcopy(cfg1), "exp_dir": str(tmp_path / "s1")}
    code, err = train_cli(monkeypatch, write_config(tmp_path / "s1.yaml", cfg1), "--model.llm_lora.rank", "64")
    assert code == 2 and "model.llm_lora.rank" in error_line(err) and "64" in error_line(err), err


def test_a_stage2_language_that_stage1_never_saw_gets_a_warning(tmp_path, trained, monkeypatch):
    cfg = stage2_config(trained, tmp_path, "newlang", rank=2)
    cfg["languages"] = ["en", "fr", "de"]
    cfg["optim"]["max_steps"] = 1
    code, err = train_cli(monkeypatch, write_config(tmp_path / "n.yaml", cfg))
    assert code == 0, err
    warning = [l for l in err.splitlines() if "stage 1 never saw" in l]
    assert warning and "de" in warning[0] and str(trained[0]) in warning[0], err


# ---- data -------------------------------------------------------------------------------------------------------
def test_utt2num_frames_is_checked_against_the_features(tmp_path, corpus, trained, monkeypatch):
    data, feats, _ = corpus
    dump = tmp_path / "dump"
    shutil.copytree(feats.parent, dump)
    (dump / "feats.scp").write_text((feats.parent / "feats.scp").read_text())    # same arks
    lines = (dump / "utt2num_frames").read_text().splitlines()
    utt, n = lines[0].split()
    lines[0] = f"{utt} {int(n) + 7}"
    (dump / "utt2num_frames").write_text("\n".join(lines) + "\n")
    _, cfg = trained
    cfg = {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / "exp")}
    cfg["data"]["train_feats"] = str(dump / "feats.scp")
    code, err = train_cli(monkeypatch, write_config(tmp_path / "c.yaml", cfg))
    assert code == 2, err
    line = error_line(err)
    assert str(dump / "utt2num_frames") in line and utt in line and str(int(n) + 7) in line and n in line, line
    # an entry the up-front sample skips is caught when its matrix is read
    from zlora.data.inputs import feats_index
    from zlora.utils.cli import UserError

    index = feats_index(dump / "feats.scp", [line.split()[0] for line in lines])
    with pytest.raises(UserError, match=f"utterance '{utt}' has {int(n) + 7} frames there, but its matrix"):
        index.read(0)


def test_the_validator_rejects_what_kaldi_tools_or_dump_feats_would_read_otherwise(tmp_path):
    def fresh(name):
        return make_datadir(tmp_path / name, langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.3)

    def invalid(data, *needles):
        code, err = run_cli(validate_main, [data])
        assert code == 2, err
        line = error_line(err)
        assert all(n in line for n in needles), (needles, line)

    data = fresh("nbsp")
    lines = (data / "utt2lang").read_text().splitlines()
    lines[1] = lines[1].replace(" ", "\u00a0")                      # a no-break space as separator
    (data / "utt2lang").write_text("\n".join(lines) + "\n", encoding="utf-8")
    invalid(data, f"{data / 'utt2lang'}:2", "U+00A0")
    data = fresh("trailing")
    lines = (data / "utt2lang").read_text().splitlines()
    lines[2] += " "
    (data / "utt2lang").write_text("\n".join(lines) + "\n")
    invalid(data, f"{data / 'utt2lang'}:3", "trailing")
    data = fresh("short")
    wav = (data / "wav.scp").read_text().splitlines()[0].split()[1]
    sf.write(wav, np.zeros(120, np.float32) + 0.1, 16000)             # 7.5 ms: no log-mel frame
    invalid(data, "enspk0-000", "too short")
    assert run_cli(dump_feats_main, ["--data", data, "--out", tmp_path / "dump"])[0] == 2   # as dump_feats


def test_a_byte_order_mark_is_named_and_fix_data_dir_keeps_the_utterance(tmp_path):
    data = make_datadir(tmp_path / "bom", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.3)
    text = (data / "text").read_bytes()
    (data / "text").write_bytes(b"\xef\xbb\xbf" + text)
    code, err = run_cli(validate_main, ["--no_audio_check", data])
    assert code == 2 and f"{data / 'text'}:1" in error_line(err) and "byte-order mark" in error_line(err), err
    code, err = run_cli(fix_main, [data])
    assert code == 0, err
    assert (data / "text").read_bytes() == text and len((data / "utt2spk").read_text().splitlines()) == 3
    assert run_cli(validate_main, ["--no_audio_check", data])[0] == 0


def test_a_subset_larger_than_its_source_is_an_error(tmp_path):
    data = make_datadir(tmp_path / "src", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.3)
    code, err = run_cli(subset_main, ["--hours", 100, data, tmp_path / "dst"])
    assert code == 2, err
    line = error_line(err)
    assert "100" in line and str(data) in line and "--allow_fewer" in line, line
    assert not (tmp_path / "dst").exists()
    code, err = run_cli(subset_main, ["--hours", 100, "--allow_fewer", data, tmp_path / "dst"])
    assert code == 0 and len((tmp_path / "dst" / "utt_list").read_text().split()) == 3, err
