"""Class-balanced language classifiers (zlora.models.lid_probe): every step sees every language,
so a 100:1 two-language setting reaches perfect LID (language-homogeneous ASR packs give an
in-training LID loss one language per batch)."""
import torch
import torch.nn.functional as F

from zlora.models.lid_probe import LinearProbe, balanced_batches, fit_classifier, mean_pool


def two_languages(n_major=300, n_minor=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_major + n_minor, d, generator=g)
    x[n_major:, 0] += 8.0                         # the minority language differs along one axis
    y = torch.cat([torch.zeros(n_major), torch.ones(n_minor)]).long()
    return x, y


def test_every_balanced_batch_holds_every_language():
    _, y = two_languages()
    batches = balanced_batches(y, 2, 4, 50, torch.Generator().manual_seed(0))
    assert all(set(y[b].tolist()) == {0, 1} and len(b) == 8 for b in batches)


def test_balanced_training_reaches_perfect_lid_at_100_to_1():
    x, y = two_languages()
    probe = LinearProbe(x.shape[1], 2)
    probe.set_scale(x)
    fit = fit_classifier(probe, x, y, 2, steps=200, lr=5e-2, per_class=8)
    assert fit["balanced_accuracy"] == 1.0 and fit["train_accuracy"] == 1.0


def test_mean_pool_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert mean_pool(x, torch.tensor([2])).item() == 2.0
