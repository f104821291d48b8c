"""Zipper-LoRA static / hard / soft (Eq. 11-15) against their reference readings."""
import copy

import pytest
import torch

from adapter_testlib import LANGS, lid_embeddings, make_cfg, randomize_adapters, tiny_mlp
from zlora.adapters import apply_adapters, language_context, named_adapter_layers

LANG_ROWS = ["ja", "en", "fr", "en"]


def _force_p(model, value: float) -> None:
    """Router output p = sigmoid(0 * e + b) forced to exactly 0 or 1 via a huge bias."""
    with torch.no_grad():
        for _, layer in named_adapter_layers(model):
            layer.router.proj.weight.zero_()
            layer.router.proj.bias.fill_(1e4 if value == 1.0 else -1e4)


def _lora_copy(base, zipper, bank):
    """A plain-lora model whose A = zipper A and B^T = ``bank(layer)`` (rank-major, (r, d_out))."""
    ref = copy.deepcopy(base)
    apply_adapters(ref, make_cfg("lora"))
    with torch.no_grad():
        for (_, z), (_, r) in zip(named_adapter_layers(zipper), named_adapter_layers(ref)):
            r.lora_A.copy_(z.lora_A)
            r.lora_B.copy_(bank(z).t())
    return ref


def _wrapped(kind, **kw):
    base = tiny_mlp(seed=2)
    model = copy.deepcopy(base)
    apply_adapters(model, make_cfg(kind, **kw))
    randomize_adapters(model, seed=9)
    return base, model


def test_all_zipper_kinds_share_one_A():
    for kind in ("zipper-static", "zipper-hard", "zipper-soft"):
        _, model = _wrapped(kind)
        assert model[0].lora_A.shape == (4, 8)


def test_soft_with_p_zero_equals_lora_with_B_shared():
    base, model = _wrapped("zipper-soft")
    _force_p(model, 0.0)
    ref = _lora_copy(base, model, lambda z: z.B_shared)
    x = torch.randn(4, 3, 8)
    with language_context(model, LANG_ROWS), language_context(ref, ["en"] * 4):
        torch.testing.assert_close(model(x), ref(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["zipper-soft", "zipper-hard"])
def test_p_one_equals_per_language_lora_with_shared_A(kind):
    base, model = _wrapped(kind)
    _force_p(model, 1.0)
    x = torch.randn(4, 3, 8)
    with language_context(model, LANG_ROWS):
        y = model(x)
    for i, lang in enumerate(LANG_ROWS):
        l_idx = LANGS.index(lang)
        ref = _lora_copy(base, model, lambda z: z.B_spec[l_idx])
        with language_context(ref, ["en"]):
            torch.testing.assert_close(y[i:i + 1], ref(x[i:i + 1]), atol=1e-6, rtol=1e-5)


def test_soft_mixes_columns_by_p():
    """Eq. 15 column by column, with a hand-set p."""
    _, model = _wrapped("zipper-soft", rank=4)
    layer = model[0]
    p = layer.mixing()[1]
    merged = layer.up_weight(1).t() / layer.scaling          # B_merged(fr): (d_out, r)
    for i in range(4):
        want = (1 - p[i]) * layer.B_shared[i] + p[i] * layer.B_spec[1][i]    # rank-major rows
        torch.testing.assert_close(merged[:, i], want)


def test_hard_forward_uses_binary_mask_and_grad_reaches_router():
    _, model = _wrapped("zipper-hard", tau=0.5)
    layer = model[0]
    with torch.no_grad():                           # p = sigmoid(bias): ranks 0, 2 above tau
        layer.router.proj.weight.zero_()
        layer.router.proj.bias.copy_(torch.tensor([2.0, -2.0, 0.5, -0.1]))
    s = layer.mixing()
    assert torch.equal(s, torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 3))
    merged = layer.up_weight(2) / layer.scaling                # B_merged(ja)^T: (r, d_out)
    torch.testing.assert_close(merged[[0, 2]], layer.B_spec[2][[0, 2]])   # s=1 -> B_spec
    torch.testing.assert_close(merged[[1, 3]], layer.B_shared[[1, 3]])    # s=0 -> B_shared
    x = torch.randn(4, 3, 8)
    with language_context(model, LANG_ROWS):
        model(x).square().sum().backward()
    for _, lay in named_adapter_layers(model):
        assert lay.router.proj.bias.grad is not None
        assert lay.router.proj.bias.grad.abs().sum() > 0
        assert lay.router.proj.weight.grad.abs().sum() > 0


def test_soft_router_gets_gradient():
    _, model = _wrapped("zipper-soft")
    with language_context(model, LANG_ROWS):
        model(torch.randn(4, 3, 8)).square().sum().backward()
    assert model[0].router.proj.weight.grad.abs().sum() > 0
    assert model[0].router.norm.weight.grad.abs().sum() > 0


def test_static_with_no_specific_ranks_equals_lora():
    base, model = _wrapped("zipper-static", zipper_static_shared_rank=4)
    assert model[0].B_spec.shape == (3, 0, 16)
    ref = _lora_copy(base, model, lambda z: z.B_shared)
    x = torch.randn(4, 3, 8)
    with language_context(model, LANG_ROWS), language_context(ref, ["en"] * 4):
        torch.testing.assert_close(model(x), ref(x), atol=1e-6, rtol=1e-5)


def test_static_concatenates_shared_then_specific_columns():
    _, model = _wrapped("zipper-static", rank=4, zipper_static_shared_rank=1)
    layer = model[2]
    merged = layer.up_weight(0).t() / layer.scaling                 # Eq. 11: (d_out, r)
    torch.testing.assert_close(merged, torch.cat([layer.B_shared.t(), layer.B_spec[0].t()], dim=1))


def test_shared_router_option():
    _, model = _wrapped("zipper-soft", router_per_layer=False)
    l0, l2 = model[0], model[2]
    assert l0.router_module is l2.router_module and "router" not in l2._modules
    names = [n for n, _ in model.named_parameters() if "router" in n]
    assert names and all(n.startswith("0.router") for n in names)
    with language_context(model, LANG_ROWS):
        model(torch.randn(4, 3, 8)).square().sum().backward()
    assert l0.router.proj.weight.grad.abs().sum() > 0
    clone = copy.deepcopy(model)
    assert clone[0].router_module is clone[2].router_module


def test_per_layer_routers_are_distinct():
    _, model = _wrapped("zipper-soft")
    assert model[0].router is not model[2].router
    assert not torch.equal(model[0].mixing(), model[2].mixing())
    assert model[0].router.lid_embeddings.shape == (3, 6)
    assert lid_embeddings()["fr"].shape == (6,)
