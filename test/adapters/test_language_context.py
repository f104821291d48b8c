import pytest
import torch

from adapter_testlib import adapted, randomize_adapters, tiny_mlp
from zlora.adapters import NoLanguageContextError, language_context, named_adapter_layers


def test_unknown_code_raises_naming_it():
    _, model = adapted("zipper-soft")
    with pytest.raises(ValueError, match="'de'"):
        with language_context(model, ["en", "de"]):
            pass


def test_forward_outside_context_raises():
    _, model = adapted("lora")
    with pytest.raises(NoLanguageContextError, match="language_context"):
        model(torch.randn(2, 8))


def test_index_tensor_range_and_dtype_checked():
    _, model = adapted("independent")
    with pytest.raises(ValueError, match="out of range"):
        with language_context(model, torch.tensor([0, 3])):
            pass
    with pytest.raises(ValueError, match="integer"):
        with language_context(model, torch.tensor([0.0, 1.0])):
            pass


def test_codes_and_indices_are_equivalent():
    _, model = adapted("zipper-soft")
    randomize_adapters(model)
    x = torch.randn(3, 5, 8)
    with language_context(model, ["ja", "en", "fr"]):
        a = model(x)
    with language_context(model, torch.tensor([2, 0, 1])):
        b = model(x)
    assert torch.equal(a, b)


def test_nested_contexts_restore_and_exceptions_clean_up():
    _, model = adapted("independent")
    layers = [m for _, m in named_adapter_layers(model)]
    with language_context(model, ["en"]):
        outer = layers[0]._language_batch
        with language_context(model, ["fr", "ja"]):
            assert layers[0]._language_batch.size == 2
        assert layers[0]._language_batch is outer
        with pytest.raises(RuntimeError):
            with language_context(model, ["ja"]):
                raise RuntimeError("boom")
        assert all(m._language_batch is outer for m in layers)
    assert all(m._language_batch is None for m in layers)


def test_batch_size_mismatch_is_an_error():
    _, model = adapted("zipper-static")
    with language_context(model, ["en", "fr"]):
        with pytest.raises(ValueError, match="2 rows"):
            model(torch.randn(3, 8))


def test_single_language_broadcasts_to_any_batch():
    _, model = adapted("zipper-hard")
    randomize_adapters(model)
    x = torch.randn(4, 8)
    with language_context(model, ["fr"]):
        a = model(x)
    with language_context(model, ["fr"] * 4):
        b = model(x)
    torch.testing.assert_close(a, b)


def test_model_without_adapters_accepts_any_context():
    model = tiny_mlp()
    with language_context(model, ["xx", "yy"]):
        assert model(torch.randn(2, 8)).shape == (2, 6)


def test_language_free_lora_needs_no_context():
    _, model = adapted("lora", languages=[])
    assert model(torch.randn(2, 8)).shape == (2, 6)


def test_language_free_layers_are_skipped_and_language_lists_must_agree():
    from torch import nn

    from adapter_testlib import make_cfg
    from zlora.adapters import apply_adapters

    model = nn.ModuleDict({"enc": tiny_mlp(), "llm": tiny_mlp()})
    apply_adapters(model["enc"], make_cfg("zipper-soft"))
    apply_adapters(model["llm"], make_cfg("lora", languages=[]))
    with language_context(model, ["fr", "ja"]):
        assert model["enc"][0]._language_batch.size == 2
        assert model["llm"][0]._language_batch is None
        assert model["enc"](torch.randn(2, 8)).shape == model["llm"](torch.randn(2, 8)).shape
    other = nn.ModuleDict({"a": tiny_mlp(), "b": tiny_mlp()})
    apply_adapters(other["a"], make_cfg("independent"))
    apply_adapters(other["b"], make_cfg("independent", languages=["en", "de"]))
    with pytest.raises(ValueError, match="disagree on languages"):
        with language_context(other, ["en"]):
            pass
