import pytest
import torch
from torch import nn

from adapter_testlib import LANGS, MERGEABLE, adapted, randomize_adapters
from zlora.adapters import AdapterLayer, language_context, merge_for_language


@pytest.mark.parametrize("kind", MERGEABLE)
def test_merged_equals_unmerged_for_every_language(kind):
    _, model = adapted(kind)
    randomize_adapters(model, seed=11)
    x = torch.randn(3, 4, 8)
    for lang in LANGS:
        merged = merge_for_language(model, lang)
        assert not any(isinstance(m, AdapterLayer) for m in merged.modules())
        assert type(merged[0]) is nn.Linear and type(merged[2]) is nn.Linear
        with language_context(model, [lang] * 3):
            want = model(x)
        torch.testing.assert_close(merged(x), want, atol=1e-5, rtol=1e-5)


def test_merge_leaves_the_original_untouched_and_checks_the_code():
    base, model = adapted("zipper-soft")
    randomize_adapters(model)
    w_before = model[0].base_layer.weight.clone()
    merge_for_language(model, "fr")
    assert torch.equal(model[0].base_layer.weight, w_before)
    assert isinstance(model[0], AdapterLayer)
    with pytest.raises(ValueError, match="'de'"):
        merge_for_language(model, "de")
    merged = merge_for_language(model, 1)
    assert not torch.equal(merged[0].weight, base[0].weight)
