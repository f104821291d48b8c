"""Engine mechanics on a stand-in model (fast): gradient accumulation, clipping, the generic
per-step adapter hook, the LR schedule."""
import copy
import math

import pytest
import torch
from torch import nn

from train_testlib import single_process_env

from zlora.train.config import EngineConfig, OptimConfig
from zlora.train.distributed import cleanup, init_distributed
from zlora.train.engine import DDPEngine
from zlora.train.schedule import WarmupCosine


class Counter(nn.Module):
    """Any module with on_optimizer_step() gets called once per optimizer step (FlyLoRA's d)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def on_optimizer_step(self):
        self.calls += 1


class StandIn(nn.Module):
    """Honours the training batch contract: forward(batch) -> dict(loss=..., n_target_tokens=...)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 1)
        self.frozen = nn.Linear(3, 3).requires_grad_(False)
        self.counter = Counter()

    def forward(self, batch):
        pred = self.proj(self.frozen(batch["feats"])).squeeze(-1)
        return {"loss": ((pred - batch["y"]) ** 2).mean(), "n_target_tokens": int(pred.numel())}


@pytest.fixture
def dist(monkeypatch):
    single_process_env(monkeypatch)
    info = init_distributed("gloo", 30)
    yield info
    cleanup()


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return {"feats": torch.randn(5, 3, generator=g), "y": torch.randn(5, generator=g)}


def test_grad_accumulation_averages_micro_batches(dist):
    model = StandIn()
    ref = copy.deepcopy(model)
    engine = DDPEngine(model, OptimConfig(max_steps=1, grad_accum=2, clip_grad=0.0, weight_decay=0.0),
                       EngineConfig(engine="ddp"), dist)
    engine.micro_step(batch(1), last=False)
    assert model.counter.calls == 0
    engine.micro_step(batch(2), last=True)
    norm = engine.step(lr=0.1)
    assert model.counter.calls == 1                      # the hook ran once, after the step
    # reference: mean of the two micro-batch losses, one plain AdamW step
    opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=0.1, weight_decay=0.0)
    loss = (ref(batch(1))["loss"] + ref(batch(2))["loss"]) / 2
    loss.backward()
    want_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ref.proj.parameters()))
    opt.step()
    assert norm == pytest.approx(want_norm, rel=1e-5)
    for a, b in zip(model.proj.parameters(), ref.proj.parameters()):
        torch.testing.assert_close(a, b)
    assert torch.equal(model.frozen.weight, ref.frozen.weight)


def test_clipping_bounds_the_update(dist):
    model = StandIn()
    engine = DDPEngine(model, OptimConfig(max_steps=1, clip_grad=1e-3), EngineConfig(engine="ddp"), dist)
    seen = {}
    orig = engine.optimizer.step

    def spy():
        seen["norm"] = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in engine.trainable))
        orig()

    engine.optimizer.step = spy
    engine.micro_step(batch(3), last=True)
    reported = engine.step(lr=1e-3)
    assert reported > 1e-2                               # the pre-clip norm is reported
    assert seen["norm"] == pytest.approx(1e-3, rel=1e-4)  # the optimizer saw clipped gradients


def test_warmup_then_cosine():
    s = WarmupCosine(2e-5, total_steps=100, warmup_ratio=0.1)
    assert s.warmup_steps == 10
    assert s.lr_at(0) == pytest.approx(2e-6)                 # first step already moves
    assert s.lr_at(9) == pytest.approx(2e-5)                 # end of warmup: the peak
    assert s.lr_at(55) == pytest.approx(1e-5)                # half way through the cosine
    assert s.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    lrs = [s.lr_at(i) for i in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    floor = WarmupCosine(1.0, 10, 0.0, min_lr_ratio=0.1)
    assert floor.lr_at(10) == pytest.approx(0.1)
    assert WarmupCosine(1.0, 10, 0.2, kind="constant").lr_at(7) == 1.0
