import copy

import pytest
import torch
from safetensors import safe_open

from adapter_testlib import adapted, make_cfg, randomize_adapters, tiny_mlp
from zlora.adapters import (KINDS, adapter_state_dict, apply_adapters, language_context,
                            load_adapter_file, load_adapter_state_dict, save_adapter_file)

X = torch.randn(3, 4, 8)


def _out(model):
    with language_context(model, ["fr", "ja", "en"]):
        return model(X)


@pytest.mark.parametrize("kind", KINDS)
def test_file_round_trip_restores_outputs_exactly(kind, tmp_path):
    _, model = adapted(kind)
    randomize_adapters(model, seed=21)
    if kind == "flylora":
        model[0].expert_bias.fill_(0.25)            # d is state too
    path = tmp_path / "adapter.safetensors"
    save_adapter_file(model, path)
    fresh = tiny_mlp()
    apply_adapters(fresh, make_cfg(kind, seed=99))  # another seed: A differs before loading
    assert not torch.equal(_out(fresh), _out(model))
    load_adapter_file(fresh, path)
    assert torch.equal(_out(fresh), _out(model))
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == "zlora-adapter"
        assert '"kind": "' + kind in f.metadata()["adapter_config"]


def test_state_dict_holds_adapter_tensors_only():
    _, model = adapted("zipper-soft")
    sd = adapter_state_dict(model)
    assert not any("base_layer" in k for k in sd)
    assert {"0.lora_A", "0.B_shared", "0.B_spec", "0.router.proj.weight",
            "0.router.lid_embeddings"} <= set(sd)
    other = copy.deepcopy(model)
    randomize_adapters(other)
    load_adapter_state_dict(model, adapter_state_dict(other))
    assert torch.equal(_out(model), _out(other))
    with pytest.raises(ValueError, match="missing"):
        load_adapter_state_dict(model, {k: v for k, v in sd.items() if k != "0.B_spec"})


@pytest.mark.parametrize("field, value, word", [
    ("kind", "zipper-hard", "kind"),
    ("rank", 8, "rank"),
    ("languages", ["en", "fr", "de"], "languages"),
    ("languages", ["fr", "en", "ja"], "languages"),
])
def test_mismatched_file_names_what_differs(tmp_path, field, value, word):
    _, model = adapted("zipper-soft")
    path = tmp_path / "a.safetensors"
    save_adapter_file(model, path)
    other = tiny_mlp()
    lid = {c: torch.randn(6) for c in ["en", "fr", "ja", "de"]}
    overrides = {"kind": "zipper-soft", "lid_embeddings": lid, field: value}
    apply_adapters(other, make_cfg(**overrides))
    with pytest.raises(ValueError, match=f"adapter {word} differs"):
        load_adapter_file(other, path)


def test_file_from_a_parent_model_loads_into_the_submodule(tmp_path):
    parent = torch.nn.Module()
    parent.encoder = tiny_mlp()
    apply_adapters(parent, make_cfg("independent"))
    randomize_adapters(parent)
    path = tmp_path / "a.safetensors"
    save_adapter_file(parent, path)
    sub = tiny_mlp()
    apply_adapters(sub, make_cfg("independent"))
    load_adapter_file(sub, path)
    assert torch.equal(sub[0].lora_B, parent.encoder[0].lora_B)


def test_not_an_adapter_file(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(path))
    _, model = adapted("lora")
    with pytest.raises(ValueError, match="not a zlora adapter file"):
        load_adapter_file(model, path)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_adapter_file(model, tmp_path / "nope.safetensors")
