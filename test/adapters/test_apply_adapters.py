import pytest
import torch
from torch import nn

from adapter_testlib import make_cfg, tiny_mlp
from zlora.adapters import AdapterLayer, apply_adapters, language_context


def test_wraps_matching_linears_and_freezes_only_their_weights():
    model = nn.Sequential(tiny_mlp(), nn.LayerNorm(6))
    names = apply_adapters(model, make_cfg("lora", target_modules=r"0\.2"))
    assert names == ["0.2"]
    assert isinstance(model[0][2], AdapterLayer) and isinstance(model[0][0], nn.Linear)
    assert model[0][0].weight.requires_grad and model[1].weight.requires_grad   # untouched
    assert not model[0][2].base_layer.weight.requires_grad


def test_regex_is_fullmatch_and_no_match_is_an_error():
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        apply_adapters(tiny_mlp(), make_cfg("lora", target_modules=r"2\.x"))
    with pytest.raises(ValueError, match="not a valid regex"):
        apply_adapters(tiny_mlp(), make_cfg("lora", target_modules=r"("))
    names = apply_adapters(tiny_mlp(), make_cfg("lora", target_modules=r"\d"))
    assert names == ["0", "2"]


def test_applying_twice_is_an_error():
    model = tiny_mlp()
    apply_adapters(model, make_cfg("lora"))
    with pytest.raises(ValueError, match="already has adapters"):
        apply_adapters(model, make_cfg("lora"))


def test_multihead_attention_out_proj_is_refused():
    model = nn.ModuleDict({"mha": nn.MultiheadAttention(8, 2)})
    with pytest.raises(ValueError, match="MultiheadAttention"):
        apply_adapters(model, make_cfg("lora"))


def test_training_step_changes_output_and_keeps_base():
    model = tiny_mlp()
    apply_adapters(model, make_cfg("zipper-soft"))
    w0 = model[0].base_layer.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 8)
    for _ in range(2):
        with language_context(model, ["en", "fr", "ja", "en"]):
            loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(model[0].base_layer.weight, w0)
    assert model[0].B_spec.abs().sum() > 0 and model[0].B_shared.abs().sum() > 0
