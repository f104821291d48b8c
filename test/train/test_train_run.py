"""Single-process training runs in this process: outputs, exact resume, checkpoint faults."""
import errno
import json

import pytest
import torch

from train_testlib import final_weights, read_metrics, train_config, train_inprocess

from zlora.train import checkpoint as ckpt_io
from zlora.utils.cli import UserError, run_main


def cfg_for(tmp_path, corpus, name="exp", **over):
    data, feats, sp = corpus
    # LoRA dropout makes the run depend on the RNG, so exact resume must restore it too.
    return train_config(tmp_path / name, data, feats, sp, **{"model.llm_lora.dropout": 0.1, **over})


def test_a_run_writes_every_output(tmp_path, corpus, monkeypatch):
    data, feats, _ = corpus
    cfg = cfg_for(tmp_path, corpus, **{"tensorboard": True, "optim.max_steps": 3,
                                       "data.valid": str(data), "data.valid_feats": str(feats)})
    assert train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml") == 0
    exp = tmp_path / "exp"
    assert (exp / "config.yaml").is_file()
    log = (exp / "train.log").read_text()
    for needle in ("trainable", "llm lora", "language-homogeneous packs", "batch padding efficiency",
                   "language probabilities", "final model written"):
        assert needle in log, needle
    metrics = read_metrics(exp)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "audio_s_per_s", "packing_efficiency"} <= set(metrics[0])
    # telemetry: data wait measured apart from the step, encoder frames, memory (CPU: peak RSS)
    for m in metrics:
        assert 0 <= m["data_wait_s"] < m["step_time_s"] + 60 and m["enc_frames_per_s"] > 0
        assert 0.5 < m["enc_padding_efficiency"] <= 1.0 and m["max_rss_gb"] > 0.1
        assert "mfu" not in m and "peak_mem_gb" not in m            # GPU only
    assert "packing check: attn_implementation=sdpa" in log
    assert metrics[0]["lr"] == pytest.approx(3e-3)         # warmup ceil(0.25 * 3) = 1 step
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    ckpts = exp / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-3"   # every 2 steps and at the end
    assert {p.name for p in ckpts.iterdir()} == {"latest", "step-2", "step-3"}
    files = {p.name for p in (ckpts / "step-3").iterdir()}
    assert files == {"model.safetensors", "optimizer.pt", "rng-rank0.pt", "trainer.pt", "frozen.json", "meta.json"}
    meta = json.loads((ckpts / "step-3" / "meta.json").read_text())
    assert meta["step"] == 3 and meta["loss"] == pytest.approx(metrics[-1]["loss"])
    for name in ("optimizer.pt", "trainer.pt", "rng-rank0.pt"):   # no pickled objects
        torch.load(ckpts / "step-3" / name, weights_only=True)
    assert {p.name for p in (exp / "final").iterdir()} == {"model.safetensors", "config.yaml",
                                                            "frozen.json", "meta.json"}
    # trainable tensors only: the frozen LLM base weights are not in the file
    w = final_weights(exp)
    assert any("lora" in k for k in w) and not any(k.startswith("llm.model.embed_tokens") for k in w)
    # validation at checkpoint steps = the token-weighted loss of the saved model, one utterance at a time
    assert "valid_loss" not in metrics[0] and "valid_loss" in metrics[1]
    assert metrics[2]["valid_loss"] == pytest.approx(utterance_by_utterance_loss(exp, data, feats), rel=1e-4)


def test_the_loss_terms_of_the_model_reach_the_metrics(tmp_path, corpus, monkeypatch):
    """With the auxiliary CTC on, metrics.jsonl and train.log show ce_loss and ctc_loss, and the
    logged total is CE + ctc_weight x CTC, step by step."""
    cfg = cfg_for(tmp_path, corpus, **{"model.ctc_weight": 0.5, "optim.max_steps": 2})
    assert train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml") == 0
    metrics = read_metrics(tmp_path / "exp")
    for m in metrics:
        assert m["ctc_loss"] > 0
        assert m["loss"] == pytest.approx(m["ce_loss"] + 0.5 * m["ctc_loss"], rel=1e-5)
    assert "ctc_loss=" in (tmp_path / "exp" / "train.log").read_text()
    plain = cfg_for(tmp_path, corpus, name="plain", **{"optim.max_steps": 1})
    assert train_inprocess(monkeypatch, plain, tmp_path / "p.yaml") == 0
    assert not any(k.endswith("_loss") for k in read_metrics(tmp_path / "plain")[0])


def utterance_by_utterance_loss(exp, data, feats):
    import kaldiio

    from zlora.data.kaldi import DataDir
    from zlora.train.trained import load_model_for_inference

    model, cfg = load_model_for_inference(exp)
    dd, mats = DataDir(data), kaldiio.load_scp(str(feats))
    total = n = 0.0
    with torch.no_grad():
        for utt, text in dd.text.items():
            mat = torch.tensor(mats[utt])[None]
            out = model({"feats": mat, "feat_lens": torch.tensor([mat.shape[1]]),
                         "lang_ids": torch.tensor([cfg.languages.index(dd.utt2lang[utt])]),
                         "text_ids": [model.tokenizer.encode(text)]})
            total += float(out["loss"]) * out["n_target_tokens"]
            n += out["n_target_tokens"]
    return total / n


@pytest.fixture
def uninterrupted(tmp_path, corpus, monkeypatch):
    cfg = cfg_for(tmp_path, corpus, "full", **{"optim.max_steps": 5})
    train_inprocess(monkeypatch, cfg, tmp_path / "full.yaml")
    return tmp_path / "full"


def assert_same_run(exp, full):
    assert [m["loss"] for m in read_metrics(exp)] == [m["loss"] for m in read_metrics(full)]
    a, b = final_weights(exp), final_weights(full)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_while_saving_reports_and_keeps_the_previous_checkpoint(
        tmp_path, corpus, monkeypatch, uninterrupted, capsys):
    cfg = cfg_for(tmp_path, corpus, **{"optim.max_steps": 5})
    real = ckpt_io._save_state
    calls = {"n": 0}

    def full_disk(obj, path):
        if "step-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        calls["n"] += 1
        return real(obj, path)

    monkeypatch.setattr(ckpt_io, "_save_state", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda argv: train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml"), [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "previous checkpoint is intact" in err and "step-2" in err
    ckpts = tmp_path / "exp" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-2"
    assert not (ckpts / "step-4").exists() and not (ckpts / ".step-4.partial").exists()
    ckpt_io.load_tensors(ckpts / "step-2" / "model.safetensors")
    ckpt_io.load_rank_states(ckpts / "step-2", 0, per_rank_optimizer=False)
    # space freed: --resume finishes the run, identical to one that never failed
    monkeypatch.setattr(ckpt_io, "_save_state", real)
    train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml", "--resume", "true")
    assert_same_run(tmp_path / "exp", uninterrupted)


def test_abort_midway_through_a_checkpoint_then_resume(tmp_path, corpus, monkeypatch, uninterrupted):
    cfg = cfg_for(tmp_path, corpus, **{"optim.max_steps": 5})
    real = ckpt_io._save_state

    def abort(obj, path):       # the weights are written; the process dies before the rest
        if "step-4" in str(path):
            raise KeyboardInterrupt
        return real(obj, path)

    monkeypatch.setattr(ckpt_io, "_save_state", abort)
    with pytest.raises(KeyboardInterrupt):
        train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml")
    ckpts = tmp_path / "exp" / "checkpoints"
    assert (ckpts / ".step-4.partial" / "model.safetensors").is_file()
    assert (ckpts / "latest").read_text().strip() == "step-2"
    monkeypatch.setattr(ckpt_io, "_save_state", real)
    train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml", "--resume", "true")
    assert not (ckpts / ".step-4.partial").exists()
    assert [m["step"] for m in read_metrics(tmp_path / "exp")] == [1, 2, 3, 4, 5]   # each step once
    assert_same_run(tmp_path / "exp", uninterrupted)


def test_corrupt_latest_checkpoint_is_reported_by_name(tmp_path, corpus, monkeypatch):
    cfg = cfg_for(tmp_path, corpus, **{"optim.max_steps": 2})
    train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml")
    weights = tmp_path / "exp" / "checkpoints" / "step-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cfg["optim"]["max_steps"] = 4
    with pytest.raises(ckpt_io.CheckpointError, match=r"step-2/model.safetensors: not a readable safetensors"):
        train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml", "--resume", "true")


def test_an_existing_run_is_never_clobbered_and_resume_checks_the_config(tmp_path, corpus, monkeypatch):
    cfg = cfg_for(tmp_path, corpus, **{"optim.max_steps": 2})
    train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml")
    with pytest.raises(UserError, match="already holds a run"):
        train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml")
    with pytest.raises(UserError, match="differs from .* in data.batch_size"):
        train_inprocess(monkeypatch, cfg, tmp_path / "c.yaml", "--resume", "true", "--data.batch_size", "1")


def test_a_non_finite_loss_stops_before_the_optimizer_step(tmp_path, corpus, monkeypatch):
    from zlora.train import engine as engine_mod

    real = engine_mod.DDPEngine.micro_step
    seen = {"n": 0, "stepped": 0}

    def nan_on_third(self, batch, last):
        out = real(self, batch, last)
        seen["n"] += 1
        return {**out, "loss": out["loss"] * float("nan")} if seen["n"] == 3 else out

    real_step = engine_mod.DDPEngine.step

    def counting_step(self, lr):
        seen["stepped"] += 1
        return real_step(self, lr)

    monkeypatch.setattr(engine_mod.DDPEngine, "micro_step", nan_on_third)
    monkeypatch.setattr(engine_mod.DDPEngine, "step", counting_step)
    with pytest.raises(FloatingPointError, match=r"step 3: the loss is NaN or Inf on 1 rank\(s\); here in a batch with \['"):
        train_inprocess(monkeypatch, cfg_for(tmp_path, corpus, **{"optim.max_steps": 4}), tmp_path / "c.yaml")
    assert seen["stepped"] == 2
    assert (tmp_path / "exp" / "checkpoints" / "latest").read_text().strip() == "step-2"
