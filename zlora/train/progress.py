"""Progress on rank 0: tqdm bar, EXP/metrics.jsonl (one JSON per step), TensorBoard scalars and
periodic lines in EXP/train.log."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger("train")

METRICS = "metrics.jsonl"


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop lines past ``last_step`` (written by a run killed after its last checkpoint), so a
    resumed run's metrics.jsonl has each step exactly once."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:    # a line cut by the kill
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def router_mean_p(model: torch.nn.Module, languages: list[str]) -> dict[str, float]:
    """Mean router output p(l) (Eq. 18) over ranks and Zipper layers, per language; {} without routers."""
    from zlora.adapters.router import LIDRouter

    routers = [m for m in model.modules() if isinstance(m, LIDRouter)]
    if not routers:
        return {}
    with torch.no_grad():
        p = torch.stack([r().float().mean(dim=1) for r in routers]).mean(dim=0)   # (L,)
    return {lang: float(v) for lang, v in zip(languages, p.tolist())}


class Progress:
    def __init__(self, exp_dir: str | Path, enabled: bool, total_steps: int, start_step: int,
                 log_every: int, bar: bool, tensorboard: bool):
        self.enabled, self.log_every = enabled, log_every
        self.metrics_path = Path(exp_dir) / METRICS
        self.bar = self.tb = None
        if not enabled:
            return
        truncate_metrics(self.metrics_path, start_step)
        self.metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, file=sys.stderr, dynamic_ncols=True,
                            desc="train", mininterval=1.0)
            self._route_log_through_bar(True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                log.warning("tensorboard disabled: %s (pip install tensorboard)", e)
            else:
                self.tb = SummaryWriter(str(Path(exp_dir) / "tensorboard"), purge_step=start_step + 1)

    def record(self, step: int, metrics: dict, extra_scalars: dict | None = None) -> None:
        """One finished optimizer step: metrics.jsonl always, log/TensorBoard every log_every."""
        if not self.enabled:
            return
        self.metrics_file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.metrics_file.flush()
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                 tok_s=f"{metrics['tokens_per_s']:.0f}",
                                 audio_s_s=f"{metrics['audio_s_per_s']:.1f}", refresh=False)
        if step % self.log_every and "valid_loss" not in metrics:
            return
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        if self.tb is not None:
            for k, v in {**shown, **(extra_scalars or {})}.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def _route_log_through_bar(self, on: bool) -> None:
        """Log lines to stderr go through tqdm.write while the bar is shown, so they do not cut it."""
        import logging

        for h in logging.getLogger("zlora").handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setStream(_TqdmStream() if on else sys.stderr)

    def close(self) -> None:
        if not self.enabled:
            return
        self.metrics_file.close()
        if self.bar is not None:
            self._route_log_through_bar(False)
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


class _TqdmStream:
    def write(self, text: str) -> None:
        from tqdm import tqdm

        if text.strip():
            tqdm.write(text.rstrip("\n"), file=sys.stderr)

    def flush(self) -> None:
        sys.stderr.flush()
