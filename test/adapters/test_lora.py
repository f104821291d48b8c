"""lora (Eq. 7) against HF PEFT's LoRA, with the same A and B copied in and the same scaling."""
import copy

import pytest
import torch

from adapter_testlib import tiny_mlp
from zlora.adapters import AdapterConfig, apply_adapters, language_context

peft = pytest.importorskip("peft")


def _pair(rank=4, alpha=12.0):
    base = tiny_mlp(seed=7)
    ours = copy.deepcopy(base)
    apply_adapters(ours, AdapterConfig(kind="lora", rank=rank, alpha=alpha, languages=["en"],
                                       target_modules=r"0|2"))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=["0", "2"], lora_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for idx in ("0", "2"):
            layer = ours.get_submodule(idx)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))
            peft_layer = theirs.base_model.model.get_submodule(idx)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
            assert peft_layer.scaling["default"] == layer.scaling
    return ours, theirs


def test_lora_matches_peft_forward_and_backward():
    ours, theirs = _pair()
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    with language_context(ours, ["en"] * 3):
        y_ours = ours(x)
    y_theirs = theirs(x)
    # fp32 sums in another order (our addmm_ vs PEFT's separate add): |y| ~ 30, so ~4 ulp.
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-5, rtol=1e-5)
    y_ours.square().sum().backward()
    y_theirs.square().sum().backward()
    for idx in ("0", "2"):
        layer = ours.get_submodule(idx)
        peft_layer = theirs.base_model.model.get_submodule(idx)
        torch.testing.assert_close(layer.lora_A.grad, peft_layer.lora_A["default"].weight.grad,
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.lora_B.grad, peft_layer.lora_B["default"].weight.grad,
                                   atol=1e-5, rtol=1e-4)


def test_lora_init_law_matches_peft():
    """A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) like PEFT's kaiming_uniform_(a=sqrt(5)); B = 0."""
    ours, _ = _pair(rank=64)
    a = ours.get_submodule("0").lora_A
    bound = 1 / 8 ** 0.5
    assert a.abs().max() <= bound and a.abs().max() > 0.9 * bound
    fresh = tiny_mlp()
    apply_adapters(fresh, AdapterConfig(kind="lora", rank=4, languages=["en"]))
    assert torch.count_nonzero(fresh.get_submodule("0").lora_B) == 0


def test_only_adapters_are_trainable_and_base_frozen():
    ours, _ = _pair()
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"}


def test_same_seed_same_init_regardless_of_global_rng():
    cfg = AdapterConfig(kind="lora", rank=4, languages=["en"], seed=3)
    m1, m2 = tiny_mlp(), tiny_mlp()
    apply_adapters(m1, cfg)
    torch.manual_seed(1234)
    apply_adapters(m2, cfg)
    assert torch.equal(m1[0].lora_A, m2[0].lora_A)
    assert not torch.equal(m1[0].lora_A, m1[2].lora_A[:, :8])
