"""Learning-rate schedule (§V-B): linear warmup over ``warmup_ratio`` of the steps, then cosine."""
from __future__ import annotations

import math


class WarmupCosine:
    """lr(step) for optimizer step ``step`` (0-based, the step about to run).

    Warmup: lr * (step + 1) / warmup_steps, so the first step already moves (lr / warmup_steps).
    Then cosine from lr down to lr * min_lr_ratio at ``total_steps`` ("constant" stays at lr).
    The schedule is a pure function of the step, which a checkpoint stores, so resuming cannot
    drift; ``state_dict()`` (its arguments) is saved only to warn when a resumed run changes it.
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_ratio: float = 0.1,
                 min_lr_ratio: float = 0.0, kind: str = "cosine"):
        self.base_lr, self.total_steps = base_lr, max(1, total_steps)
        self.warmup_steps = int(math.ceil(warmup_ratio * self.total_steps))
        self.min_lr_ratio, self.kind = min_lr_ratio, kind

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.base_lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        scale = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.base_lr * scale

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr_ratio": self.min_lr_ratio, "kind": self.kind}

