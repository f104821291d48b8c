"""Two-stage training (§IV-F): stage 2 starts from stage 1, Initial-B warm start, and
load_model_for_inference rebuilds exactly what was trained."""
import shutil

import pytest
import torch
import yaml
from safetensors.torch import save_file

from train_testlib import final_weights, read_metrics, train_config, train_inprocess

from zlora.adapters import read_adapter_file
from zlora.train.trained import CheckpointError, load_model_for_inference


@pytest.fixture(scope="module")
def stages(tmp_path_factory, corpus):
    """Stage 1, then stage 2 zipper-soft from it: {name: exp dir}."""
    tmp = tmp_path_factory.mktemp("stages")
    mp = pytest.MonkeyPatch()
    data, feats, sp = corpus
    try:
        train_inprocess(mp, train_config(tmp / "s1", data, feats, sp, **{"optim.max_steps": 2}), tmp / "s1.yaml")
        g = torch.Generator().manual_seed(0)
        save_file({"en": torch.randn(8, generator=g), "fr": torch.randn(8, generator=g)}, str(tmp / "lid.safetensors"))
        cfg2 = train_config(tmp / "s2", data, feats, sp, stage=2, init_from=str(tmp / "s1"), **{
            "adapter": {"kind": "zipper-soft", "rank": 4, "alpha": 8.0,
                        "lid_embeddings": str(tmp / "lid.safetensors")},
            "optim.max_steps": 3, "optim.lr": 1e-2})
        train_inprocess(mp, cfg2, tmp / "s2.yaml")
    finally:
        mp.undo()
    return {"s1": tmp / "s1", "s2": tmp / "s2", "lid": tmp / "lid.safetensors", "tmp": tmp}


def test_stage2_freezes_the_stage1_encoder_and_trains_adapters(stages):
    w1, w2 = final_weights(stages["s1"]), final_weights(stages["s2"])
    assert "encoder.conv1.weight" in w1 and "encoder.layers.0.fc1.weight" in w1     # stage 1 trains it
    assert not any(k.startswith("encoder.") and "B_" not in k and "lora_A" not in k and "router" not in k
                   for k in w2)                                                     # stage 2: adapters only
    assert any(k.endswith("B_spec") for k in w2) and any(k.startswith("projector.") for k in w2)
    model, cfg = load_model_for_inference(stages["s2"])
    assert cfg.stage == 2 and cfg.adapter.kind == "zipper-soft" and not model.training
    sd = model.state_dict()
    assert torch.equal(sd["encoder.conv1.weight"], w1["encoder.conv1.weight"])
    assert torch.equal(sd["encoder.layers.0.fc1.base_layer.weight"], w1["encoder.layers.0.fc1.weight"])
    assert all(torch.equal(sd[k], w2[k]) for k in w2)
    assert any(float(w2[k].abs().max()) > 0 for k in w2 if k.endswith("B_spec"))   # B moved from 0
    tensors, file_cfg = read_adapter_file(stages["s2"] / "final" / "adapter.safetensors")
    assert file_cfg["kind"] == "zipper-soft" and file_cfg["languages"] == ["en", "fr"]
    assert all(torch.equal(tensors[k], w2["encoder." + k]) for k in tensors if k.endswith("B_shared"))
    p = read_metrics(stages["s2"])[-1]["router_mean_p"]
    assert set(p) == {"en", "fr"} and all(0 < v < 1 for v in p.values())


def test_initial_b_warm_starts_from_a_zipper_soft_run(stages, corpus, monkeypatch):
    data, feats, sp = corpus
    tmp, src = stages["tmp"], stages["s2"] / "final" / "adapter.safetensors"
    cfg = train_config(tmp / "s3", data, feats, sp, stage=2, init_from=str(stages["s1"]), **{
        "adapter": {"kind": "zipper-hard", "rank": 4, "alpha": 8.0, "lid_embeddings": str(stages["lid"]),
                    "init_b_from": str(src)},
        "optim.max_steps": 1, "optim.lr": 1e-9})
    train_inprocess(monkeypatch, cfg, tmp / "s3.yaml")
    banks, _ = read_adapter_file(src)
    w3 = final_weights(tmp / "s3")
    keys = [k for k in banks if k.endswith(("B_shared", "B_spec"))]
    assert keys and any(float(banks[k].abs().max()) > 1e-4 for k in keys)
    for k in keys:      # one step at lr 1e-9: still the warm-start values
        torch.testing.assert_close(w3["encoder." + k], banks[k], atol=1e-6, rtol=0)


def test_a_rebuild_with_different_frozen_weights_is_refused(stages):
    copy = stages["tmp"] / "s1-other-seed"
    shutil.copytree(stages["s1"], copy)
    cfg_path = copy / "final" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["seed"] += 1        # the frozen from-scratch LLM would come out different
    cfg_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="frozen tensor llm.* differs"):
        load_model_for_inference(copy)
    model, _ = load_model_for_inference(stages["s1"])
    assert torch.equal(model.state_dict()["projector.out.weight"], final_weights(stages["s1"])["projector.out.weight"])


def test_an_older_runs_config_with_top_level_projector_options_still_loads(stages):
    """EXP/config.yaml written before model.projector.conf held gated_conv's options at the top
    level; decoding and stage 2 (init_from) read it back with read_train_config."""
    from zlora.config import to_dict
    from zlora.train.config import read_train_config

    copy = stages["tmp"] / "s1-older-projector-form"
    shutil.copytree(stages["s1"], copy)
    cfg_path = copy / "final" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["model"]["projector"]["conf"] == {"downsample": 4, "hidden_size": None}
    cfg["model"]["projector"] = {"kind": "gated_conv", "downsample": 4, "hidden_size": None}
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert to_dict(read_train_config(cfg_path)) == to_dict(read_train_config(stages["s1"] / "final" / "config.yaml"))
    model, _ = load_model_for_inference(copy)
    w1 = final_weights(stages["s1"])
    assert model.projector.k == 4 and all(torch.equal(model.state_dict()[k], w1[k]) for k in w1)
