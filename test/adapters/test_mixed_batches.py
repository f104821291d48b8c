"""Every kind: starts as the base model; a mixed batch equals each language's rows run alone."""
import pytest
import torch

from adapter_testlib import LANGS, adapted, randomize_adapters
from zlora.adapters import KINDS, language_context

LANG_ROWS = ["fr", "en", "ja", "fr", "fr", "en"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_starts_as_the_base_model(kind):
    base, model = adapted(kind)
    x = torch.randn(6, 5, 8)
    with language_context(model, LANG_ROWS):
        assert torch.equal(model(x), base(x))


# (6, 8): rows of one token (grouped path); (6, 5, 8) and (6, 2, 3, 8): several tokens;
# rank 4 <= 5 tokens takes the gather + bmm path.
# A batch with every language, and one with a subset (exercises the present-language mapping).
@pytest.mark.parametrize("lang_rows", [LANG_ROWS, ["ja", "fr", "ja", "ja", "fr", "ja"]])
@pytest.mark.parametrize("shape", [(6, 8), (6, 2, 8), (6, 5, 8), (6, 2, 3, 8)])
@pytest.mark.parametrize("kind", KINDS)
def test_mixed_batch_equals_rows_run_per_language(kind, shape, lang_rows):
    _, model = adapted(kind)
    randomize_adapters(model, seed=3)
    x = torch.randn(*shape)
    with language_context(model, lang_rows):
        mixed = model(x)
    for lang in sorted(set(lang_rows)):
        rows = [i for i, c in enumerate(lang_rows) if c == lang]
        with language_context(model, [lang] * len(rows)):
            alone = model(x[rows])
        torch.testing.assert_close(mixed[rows], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["independent", "zipper-static", "zipper-soft", "zipper-hard"])
def test_languages_really_differ(kind):
    """Guards the test above against a kind that ignores the language."""
    _, model = adapted(kind)
    randomize_adapters(model, seed=4)
    x = torch.randn(2, 5, 8)
    with language_context(model, ["en", "en"]):
        a = model(x)
    with language_context(model, ["ja", "ja"]):
        b = model(x)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["independent", "zipper-soft"])
def test_mixed_batch_gradients_equal_per_language_sums(kind):
    _, model = adapted(kind)
    randomize_adapters(model, seed=5)
    x = torch.randn(6, 5, 8)
    params = [p for p in model.parameters() if p.requires_grad]
    with language_context(model, LANG_ROWS):
        model(x).pow(2).sum().backward()
    mixed = [p.grad.clone() for p in params]
    model.zero_grad()
    for lang in LANGS:
        rows = [i for i, c in enumerate(LANG_ROWS) if c == lang]
        with language_context(model, [lang] * len(rows)):
            model(x[rows]).pow(2).sum().backward()
    for g_mixed, p in zip(mixed, params):
        torch.testing.assert_close(g_mixed, p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [(6, 8), (6, 5, 8)])
@pytest.mark.parametrize("kind", KINDS)
def test_inference_path_matches_training_path(kind, shape):
    """Without autograd the per-row update runs in place; it must give the same output."""
    _, model = adapted(kind)
    randomize_adapters(model, seed=6)
    x = torch.randn(*shape)
    with language_context(model, LANG_ROWS):
        with_grad = model(x)
        with torch.inference_mode():
            inference = model(x)
        with torch.no_grad():
            no_grad = model(x)
    assert with_grad.requires_grad
    torch.testing.assert_close(inference, with_grad.detach())
    torch.testing.assert_close(no_grad, with_grad.detach())


@pytest.mark.parametrize("kind", ["independent", "zipper-soft"])
def test_rows_without_tokens(kind):
    _, model = adapted(kind)
    with language_context(model, LANG_ROWS):
        assert model(torch.randn(6, 0, 8)).shape == (6, 0, 6)
