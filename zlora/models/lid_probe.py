"""Language classifiers on pooled encoder states, trained class-balanced.

Two users:
- the LID probe (``python -m zlora.bin.train_lid_probe``): a linear classifier on mean-pooled
  frozen Whisper encoder states (an encoder cache of ``zlora.bin.dump_encoder``). It tells how
  separable the languages are, and it is a language source of its own for decoding
  (``--lang.mode probe``): a cheap language-agnostic router for any adapter kind, Zipper included.
- LoRA-MoLE's LID MLP (zlora.adapters.mole): its LID phase refits the classifier on the pooled tap
  states of the whole training set (zlora.train.distill.MoLELIDExtension.finalize).

Why class-balanced: the training data is long-tailed (100:1 in mini12) and the ASR packs are
language-homogeneous, so a classifier trained on the ASR batches sees one class per pack and is
dominated by the high-resource languages; drawing every minibatch with the same number of
examples per class makes each step see every language.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mean_pool(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """x (B, T, d), lens (B,) -> (B, d) float32 mean over the valid frames."""
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]).float()
    return (x.float() * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)


def balanced_batches(labels: torch.Tensor, n_classes: int, per_class: int, steps: int,
                     gen: torch.Generator) -> list[torch.Tensor]:
    """``steps`` index batches holding ``per_class`` examples of every class present (drawn with
    replacement within a class, so a class with 3 examples is seen as often as one with 3,000)."""
    pools = [torch.nonzero(labels == c).squeeze(1) for c in range(n_classes)]
    pools = [p for p in pools if p.numel()]
    if len(pools) < 2:
        raise ValueError(f"a language classifier needs examples of at least two languages, got {len(pools)}")
    return [torch.cat([p[torch.randint(p.numel(), (per_class,), generator=gen)] for p in pools])
            for _ in range(steps)]


def fit_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300,
                   lr: float = 1e-2, per_class: int = 16, weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """Train ``model`` ((N, d) -> (N, n_classes) logits) on x (N, d), y (N,) with class-balanced
    minibatches and AdamW; returns {"loss": last loss, "train_accuracy": on all of x (unbalanced),
    "balanced_accuracy": mean per-class accuracy}."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    x, y = x.float(), y.long()
    loss = torch.zeros(())
    with torch.enable_grad():
        for idx in balanced_batches(y, n_classes, per_class, steps, gen):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(x).argmax(-1)
    present = [c for c in range(n_classes) if bool((y == c).any())]
    per_class_acc = [float((pred[y == c] == c).float().mean()) for c in present]
    return {"loss": float(loss.detach()), "train_accuracy": float((pred == y).float().mean()),
            "balanced_accuracy": sum(per_class_acc) / len(per_class_acc)}


class LinearProbe(nn.Module):
    """(N, d) pooled states -> (N, L) logits; standardises its input with the training set's mean
    and std (buffers), so one learning rate suits any encoder layer's scale."""

    def __init__(self, d: int, n_languages: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.linear = nn.Linear(d, n_languages)

    def set_scale(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.mean.copy_(x.float().mean(0))
            self.std.copy_(x.float().std(0).clamp_min(1e-4))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear((pooled.float() - self.mean) / self.std)
