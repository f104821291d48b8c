"""Bad configs and checkpoints (issue 10, "Configs and checkpoints"): every case ends with exit code
2 and one line naming the key or the file. Library-level variants: test/test_config.py,
test/train/test_train_config.py, test/train/test_checkpoint.py, test/adapters/test_adapter_io.py."""
import copy
import shutil

import pytest
import torch
from safetensors.torch import save_file

from rel_testlib import error_line, run_cli, run_module, stage2_config, stage2_final
from train_testlib import single_process_env, write_config

from zlora.bin.decode import main as decode_main
from zlora.bin.train import main as train_main


def train_cli(monkeypatch, tmp_path, cfg, *args):
    single_process_env(monkeypatch)
    return run_cli(train_main, ["--config", write_config(tmp_path / "c.yaml", cfg), *args])


def test_config_typo_wrong_type_and_missing_key_exit_2_naming_the_key(tmp_path, trained, monkeypatch):
    _, cfg = trained
    cfg = {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / "exp")}
    path = write_config(tmp_path / "c.yaml", cfg)
    # the real command line, once: exit status 2 and a single line on stderr
    proc = run_module("zlora.bin.train", "--config", path, "--optim.lr_rate", "1e-3")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "train.py: error: command line: --optim.lr_rate: unknown key 'lr_rate' for OptimConfig; valid keys: betas, "
        "clip_grad, epochs, eps, grad_accum, lr, max_steps, min_lr_ratio, scheduler, warmup_ratio, weight_decay"]
    code, err = train_cli(monkeypatch, tmp_path, cfg, "--data.batch_size", "two")
    assert code == 2 and "data.batch_size: expected an integer, got 'two'" in error_line(err)
    del cfg["data"]["train_feats"]
    code, err = train_cli(monkeypatch, tmp_path, cfg)
    assert code == 2 and f"{tmp_path / 'c.yaml'}.data.train_feats: required key is missing" in error_line(err)
    assert not (tmp_path / "exp").exists()      # nothing was started


def test_nonexistent_checkpoint_exits_2_naming_it(tmp_path, corpus):
    data, feats, _ = corpus
    missing = tmp_path / "no such exp"
    code, err = run_cli(decode_main, ["--exp", missing, "--data", data, "--feats", feats, "--out", tmp_path / "d"])
    assert code == 2
    assert f"{missing / 'final' / 'model.safetensors'} does not exist: has training of {missing} finished?" \
        in error_line(err)


def test_truncated_or_corrupt_checkpoint_files_exit_2_naming_the_file(tmp_path, exp_copy, corpus, monkeypatch):
    exp, cfg = exp_copy
    # the optimizer state of the checkpoint to resume from (torch.load(weights_only=True))
    opt = exp / "checkpoints" / "step-2" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])
    code, err = train_cli(monkeypatch, tmp_path, cfg, "--resume", "true", "--optim.max_steps", "4")
    assert code == 2
    assert f"{opt}: cannot load (truncated or corrupt?)" in error_line(err)
    assert (exp / "checkpoints" / "latest").read_text().strip() == "step-2"     # nothing overwritten
    # the final weights a decoder loads (safetensors), overwritten with garbage
    weights = exp / "final" / "model.safetensors"
    weights.write_bytes(b"\x00garbage" * 64)
    data, feats, _ = corpus
    code, err = run_cli(decode_main, ["--exp", exp, "--data", data, "--feats", feats, "--out", tmp_path / "d"])
    assert code == 2
    assert f"{weights}: not a readable safetensors file (truncated or corrupt?)" in error_line(err)
    assert not (tmp_path / "d" / "text").exists()


def test_checkpoint_or_adapter_file_of_another_kind_rank_or_language_set_is_refused(
        tmp_path, trained, corpus, monkeypatch):
    from zlora.train.trained import CheckpointError, load_model_for_inference

    data, feats, _ = corpus
    lora2 = stage2_final(trained, tmp_path, "lora2")
    lora4 = stage2_final(trained, tmp_path, "lora4", rank=4)
    indep = stage2_final(trained, tmp_path, "indep", kind="independent")
    # model weights of another run copied over a run's own: decoding refuses them, naming the file
    # and what they were trained as (recorded with the weights), before building anything
    target = tmp_path / "target"
    shutil.copytree(lora2, target)
    weights = target / "final" / "model.safetensors"
    shutil.copy(lora4 / "final" / "model.safetensors", weights)
    code, err = run_cli(decode_main, ["--exp", target, "--data", data, "--feats", feats, "--out", tmp_path / "d"])
    assert code == 2
    assert f"{weights}: trained with adapter.rank 4, but {target / 'final' / 'config.yaml'} says 2" in error_line(err)
    shutil.copy(indep / "final" / "model.safetensors", weights)
    with pytest.raises(CheckpointError, match=r"model.safetensors: trained with adapter.kind 'independent', "
                                              r"but .*config.yaml says 'lora'"):
        load_model_for_inference(target)
    # weights without a record (written before records existed) are still checked by shape
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(weights)), str(weights))
    with pytest.raises(CheckpointError, match=r"model.safetensors: does not fit the model of .*config.yaml: "
                                              r"shape mismatch for encoder.layers.0.fc1.lora_A"):
        load_model_for_inference(target)
    # an Initial-B adapter file of another kind, rank or language set: training stops before step 1
    lid = tmp_path / "lid.safetensors"
    save_file({"en": torch.randn(8), "fr": torch.randn(8), "de": torch.randn(8)}, str(lid))
    soft4 = stage2_final(trained, tmp_path, "soft4", kind="zipper-soft", rank=4, lid_embeddings=str(lid))
    soft_de = stage2_final(trained, tmp_path, "soft_de", kind="zipper-soft", rank=2, lid_embeddings=str(lid))
    cases = [(lora2, ["en", "fr"], "Initial-B needs a zipper-soft or zipper-hard adapter file, this one is 'lora'"),
             (soft4, ["en", "fr"], "adapter rank differs: the file has 4, the model has 2"),
             (soft_de, ["en", "de"], "no B_spec for language(s) de (the file has en, fr)")]
    for src, langs, needle in cases:
        cfg = stage2_config(trained, tmp_path, "initb", kind="zipper-soft", lid_embeddings=str(lid),
                            init_b_from=str(src / "final" / "adapter.safetensors"))
        cfg["languages"] = langs
        shutil.rmtree(tmp_path / "initb", ignore_errors=True)
        code, err = train_cli(monkeypatch, tmp_path, cfg)
        assert code == 2, err
        line = error_line(err)
        assert str(src / "final" / "adapter.safetensors") in line and needle in line, line
        assert not (tmp_path / "initb" / "checkpoints").exists()


def test_stage2_config_pointing_at_a_missing_stage1_model_exits_2(tmp_path, trained, monkeypatch):
    cfg = stage2_config(trained, tmp_path, "s2")
    cfg["init_from"] = str(tmp_path / "stage1")
    code, err = train_cli(monkeypatch, tmp_path, cfg)
    assert code == 2 and f"init_from: {tmp_path / 'stage1'} does not exist" in error_line(err)
    (tmp_path / "stage1" / "checkpoints").mkdir(parents=True)        # started but never finished
    code, err = train_cli(monkeypatch, tmp_path, cfg)
    assert code == 2 and "holds no stage-1 model" in error_line(err) and "did stage 1 finish?" in error_line(err)
    assert not (tmp_path / "s2").exists()
