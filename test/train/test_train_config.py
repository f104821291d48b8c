"""Bad configs fail before any training work, with the key named (zlora/train/config.py)."""
import json

import pytest

from train_testlib import train_config, train_inprocess, write_config

from zlora.config import ConfigError
from zlora.train.config import load_train_config
from zlora.utils.cli import UserError


def cfg_for(tmp_path, corpus, **over):
    data, feats, sp = corpus
    return train_config(tmp_path / "exp", data, feats, sp, **over)


def stage2(cfg, **adapter):
    cfg.update(stage=2, init_from=str(cfg["exp_dir"]) + "-stage1",
               adapter={"kind": "lora", "rank": 2, "alpha": 4.0, **adapter})
    return cfg


def fails_before_training(tmp_path, monkeypatch, cfg, exc, match):
    with pytest.raises(exc, match=match):
        train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml")
    exp = tmp_path / "exp"
    assert not (exp / "metrics.jsonl").exists() and not (exp / "checkpoints").exists()


def test_unknown_adapter_kind(tmp_path, corpus, monkeypatch):
    cfg = stage2(cfg_for(tmp_path, corpus), kind="zipper-medium")
    fails_before_training(tmp_path, monkeypatch, cfg, ConfigError, r"adapter.kind: unknown adapter kind .zipper-medium.; known: .*zipper-soft")
    assert not (tmp_path / "exp").exists()          # nothing at all was created


def test_unknown_language_code(tmp_path, corpus, monkeypatch):
    cfg = cfg_for(tmp_path, corpus, languages=["en", "xx"])
    fails_before_training(tmp_path, monkeypatch, cfg, ConfigError, "unknown language code.*xx")
    assert not (tmp_path / "exp").exists()


def test_adapter_languages_must_match_the_run(tmp_path, corpus, monkeypatch):
    cfg = stage2(cfg_for(tmp_path, corpus), languages=["fr", "en"])
    fails_before_training(tmp_path, monkeypatch, cfg, ConfigError, r"adapter.languages \['fr', 'en'\] must equal")


def test_a_data_language_outside_the_run_names_the_utterance(tmp_path, corpus, monkeypatch):
    cfg = cfg_for(tmp_path, corpus, languages=["en"])
    fails_before_training(tmp_path, monkeypatch, cfg, UserError,
                          r"utt2lang: utterance 'frspk0-000' has language 'fr'")


def test_missing_stage1_model(tmp_path, corpus, monkeypatch):
    cfg = stage2(cfg_for(tmp_path, corpus))
    fails_before_training(tmp_path, monkeypatch, cfg, ConfigError, r"init_from: .*exp-stage1 does not exist")
    (tmp_path / "exp-stage1").mkdir()    # a dir without a finished stage 1
    fails_before_training(tmp_path, monkeypatch, cfg, ConfigError, r"holds no stage-1 model.*did stage 1 finish")


def test_stage_rules(tmp_path, corpus):
    cfg = cfg_for(tmp_path, corpus)
    with pytest.raises(ConfigError, match="stage 2 needs init_from"):
        load_train_config(["--config", str(write_config(tmp_path / "a.yaml", stage2(dict(cfg)) | {"init_from": None}))])
    bad = dict(cfg, adapter={"kind": "lora"})
    with pytest.raises(ConfigError, match="stage 1 has no encoder adapters"):
        load_train_config(["--config", str(write_config(tmp_path / "b.yaml", bad))])


def test_typos_types_and_missing_keys(tmp_path, corpus):
    cfg = cfg_for(tmp_path, corpus)
    path = write_config(tmp_path / "c.yaml", cfg)
    with pytest.raises(ConfigError, match=r"command line: --optim.lr_rate: unknown key 'lr_rate'"):
        load_train_config(["--config", str(path), "--optim.lr_rate", "1"])
    with pytest.raises(ConfigError, match="optim.grad_accum: expected an integer"):
        load_train_config(["--config", str(path), "--optim.grad_accum", "two"])
    del cfg["data"]["train_feats"]
    with pytest.raises(ConfigError, match="data.train_feats: required key is missing"):
        load_train_config(["--config", str(write_config(tmp_path / "d.yaml", cfg))])


def test_deepspeed_json_may_not_name_an_optimizer(tmp_path, corpus, monkeypatch):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW"}}))
    cfg = cfg_for(tmp_path, corpus, **{"engine.engine": "deepspeed", "engine.deepspeed_config": str(ds)})
    fails_before_training(tmp_path, monkeypatch, cfg, ConfigError, "remove the 'optimizer' section")


def test_adapter_languages_default_to_the_run_languages(tmp_path, corpus):
    cfg = stage2(cfg_for(tmp_path, corpus))
    got = load_train_config(["--config", str(write_config(tmp_path / "e.yaml", cfg))])
    assert got.adapter.languages == ["en", "fr"]


def test_the_documented_example_config_parses(tmp_path):
    import textwrap

    import zlora.train.config as mod

    doc = mod.__doc__
    block = doc.split("every key not shown has the default)::\n\n", 1)[1].split("\n\n", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(textwrap.dedent(block))
    cfg = load_train_config(["--config", str(path)])
    assert cfg.stage == 2 and cfg.adapter.kind == "zipper-soft" and cfg.adapter.languages == ["en", "fr", "ja"]
    assert cfg.data.max_tokens == 2048 and cfg.optim.lr == 2e-5 and cfg.engine.engine == "deepspeed"
