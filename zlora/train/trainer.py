"""The training loop: micro-batches -> optimizer steps, logging, validation, checkpoints, resume."""
from __future__ import annotations

import math
import time
from itertools import islice
from pathlib import Path

import torch

from zlora.train import checkpoint as ckpt_io
from zlora.train.config import TrainConfig
from zlora.train.data import TrainData
from zlora.train.debug import maybe_kill
from zlora.train.distributed import DistInfo, all_reduce_sum
from zlora.train.progress import Progress, router_mean_p
from zlora.train.schedule import WarmupCosine
from zlora.train.telemetry import StepTelemetry
from zlora.utils.cli import UserError
from zlora.utils.log import get_logger

log = get_logger("train")


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: max_steps, epochs x steps/epoch, or the smaller of the two."""
    limits = [cfg.optim.max_steps] if cfg.optim.max_steps is not None else []
    if cfg.optim.epochs is not None:
        limits.append(cfg.optim.epochs * steps_per_epoch)
    return min(limits)


class Trainer:
    def __init__(self, cfg: TrainConfig, engine, dist: DistInfo, data: TrainData, valid_loader,
                 frozen: dict | None):
        self.cfg, self.engine, self.dist, self.data, self.valid_loader = cfg, engine, dist, data, valid_loader
        self.exp_dir = Path(cfg.exp_dir)
        self.frozen = frozen
        self.steps_per_epoch = data.sampler.batches_per_epoch() // cfg.optim.grad_accum
        self.total_steps = total_steps(cfg, self.steps_per_epoch)
        o = cfg.optim
        self.schedule = WarmupCosine(o.lr, self.total_steps, o.warmup_ratio, o.min_lr_ratio, o.scheduler)
        self.telemetry = StepTelemetry(engine.model, dist.device, cfg.engine.peak_tflops)
        self.step = 0
        self.saved_step: int | None = None
        self.last: dict = {}
        self.utt_log = None
        if cfg.debug.log_utts:
            (self.exp_dir / "debug").mkdir(parents=True, exist_ok=True)
            self.utt_log = open(self.exp_dir / "debug" / f"utts.rank{dist.rank}.txt", "a", encoding="utf-8")

    # ---- resume --------------------------------------------------------------------------------
    def restore(self, ckpt: Path) -> None:
        """Optimizer, sampler, step and RNG from ``ckpt`` (weights were loaded before the engine)."""
        meta = ckpt_io.read_meta(ckpt)
        for key, now in (("world_size", self.dist.world_size), ("engine", self.engine.name)):
            if meta.get(key) != now:
                raise UserError(f"{ckpt}: written with {key}={meta.get(key)!r}, this run has {now!r}; "
                                "an exact resume needs the same engine and number of ranks")
        states = ckpt_io.load_rank_states(ckpt, self.dist.rank, self.engine.per_rank_optimizer)
        self.engine.load_optimizer_state(states["optimizer"])
        trainer = states["trainer"]
        self.step = int(trainer["step"])
        self.data.sampler.load_state_dict(trainer["sampler"])
        if trainer["schedule"] != self.schedule.state_dict():
            log.warning("the LR schedule differs from the checkpoint's (%s vs %s): continuing with this "
                        "run's config (the result will differ from an uninterrupted run)",
                        self.schedule.state_dict(), trainer["schedule"])
        ckpt_io.set_rng_state(states["rng"])
        self.last = {k: meta[k] for k in ("loss", "lr") if k in meta}
        self.saved_step = self.step
        log.info("resumed from %s: step %d, epoch %d (micro-batch %d)", ckpt, self.step,
                 self.data.sampler.epoch, self.data.sampler.consumed)

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        is_main = self.dist.is_main
        progress = Progress(self.exp_dir, is_main, self.total_steps, self.step, self.cfg.log_every,
                            self.cfg.progress_bar, self.cfg.tensorboard)
        log.info("training: %d optimizer steps (%d per epoch), warmup %d, world size %d, engine %s",
                 self.total_steps, self.steps_per_epoch, self.schedule.warmup_steps,
                 self.dist.world_size, self.engine.name)
        try:
            while self.step < self.total_steps:
                self._run_epoch(progress)
            if self.saved_step != self.step:
                self.save()
        finally:
            progress.close()
            if self.utt_log is not None:
                self.utt_log.close()
        if self.cfg.debug.dump_rank_params:
            ckpt_io.save_tensors(self.engine.model.trainable_state_dict(),
                                  self.exp_dir / "debug" / f"params.rank{self.dist.rank}.safetensors")
        return self.last

    def finish(self) -> None:
        """After the last step, before the final model is written: the loss extensions' own end
        of training (MoLE's LID phase). Every rank runs it."""
        for ext in self.engine.loss_extensions:
            finish = getattr(ext, "finish", None)
            if finish is not None:
                finish(self)

    def _run_epoch(self, progress: Progress) -> None:
        sampler, accum = self.data.sampler, self.cfg.optim.grad_accum
        batches = iter(self.data.loader())
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            micro = list(islice(batches, accum))
            if len(micro) < accum:
                break
            metrics = self.train_step(micro, data_wait=time.perf_counter() - t0)
            sampler.advance(len(micro))
            self.step += 1
            self._after_step(metrics, progress)
        if sampler.consumed >= sampler.batches_per_epoch():
            sampler.set_epoch(sampler.epoch + 1)

    def _after_step(self, metrics: dict, progress: Progress) -> None:
        step = self.step
        extra = {}
        due = step % self.cfg.checkpoint.every_n_steps == 0 or step == self.total_steps
        if due and self.valid_loader is not None:
            metrics["valid_loss"] = self.validate()
        if step % self.cfg.log_every == 0 or due:
            extra = {f"router_p/{k}": v for k, v in router_mean_p(self.engine.model, self.cfg.languages).items()}
            if extra:
                metrics["router_mean_p"] = {k.split("/", 1)[1]: v for k, v in extra.items()}
        self.last = metrics
        progress.record(step, metrics, extra)
        if due:
            self.save()
        maybe_kill("after_step", step)

    def train_step(self, micro: list, data_wait: float = 0.0) -> dict:
        """grad_accum micro-batches -> one optimizer step; metrics averaged over ranks
        (telemetry -- memory, data wait, encoder frames, MFU -- is this rank's)."""
        t0 = time.perf_counter()
        self.telemetry.start()
        self.engine.model.train()
        loss_sum = real = padded = audio = bad = 0.0
        widest = 0
        bad_utts: list[str] = []
        parts: dict[str, float] = {}     # the loss's named terms (ce_loss, ctc_loss, lid_loss, ...)
        for k, (batch, meta) in enumerate(micro):
            out = self.engine.micro_step(batch, last=k == len(micro) - 1)
            loss = float(out["loss"].detach())
            if not math.isfinite(loss):
                bad, bad_utts = 1.0, bad_utts + meta.utts
                loss = 0.0
            loss_sum += loss
            for name, value in out.items():
                if name.endswith("_loss") and isinstance(value, float):
                    parts[name] = parts.get(name, 0.0) + value
            real, padded, audio = real + meta.real_tokens, padded + meta.padded_tokens, audio + meta.audio_seconds
            widest = max(widest, meta.padded_tokens // max(meta.n_packs, 1))
            self._log_utts(meta)
        # One collective for the metrics and the divergence check, before the optimizer step so a
        # non-finite loss on any rank stops every rank with the weights still intact.
        names = sorted(parts)            # the same on every rank: the config decides which terms exist
        tot = all_reduce_sum([loss_sum, len(micro), real, padded, audio, bad] + [parts[n] for n in names],
                             self.dist.device)
        if tot[5] > 0:
            raise FloatingPointError(f"step {self.step + 1}: the loss is NaN or Inf on {int(tot[5])} rank(s)"
                                     + (f"; here in a batch with {bad_utts[:5]}" if bad_utts else ""))
        grad_norm = self.engine.step(lr := self.schedule.lr_at(self.step))
        dt = max(time.perf_counter() - t0, 1e-9)
        return {"epoch": self.data.sampler.epoch, "loss": tot[0] / tot[1], "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tot[2] / dt, "audio_s_per_s": tot[4] / dt,
                "packing_efficiency": tot[2] / max(tot[3], 1.0), "step_time_s": dt,
                **{n: tot[6 + i] / tot[1] for i, n in enumerate(names)},
                **self.telemetry.metrics(dt, data_wait, int(padded), widest)}

    def _log_utts(self, meta) -> None:
        if self.utt_log is not None:
            self.utt_log.writelines(f"{meta.epoch}\t{meta.batch}\t{u}\n" for u in meta.utts)
            self.utt_log.flush()

    @torch.no_grad()
    def validate(self) -> float:
        """Token-weighted mean loss over the validation set (each rank its shard)."""
        self.engine.model.eval()
        loss_tok = n_tok = 0.0
        for batch, _ in self.valid_loader:
            out = self.engine.eval_forward(batch)
            loss_tok += float(out["loss"]) * out["n_target_tokens"]
            n_tok += out["n_target_tokens"]
        tot = all_reduce_sum([loss_tok, n_tok], self.dist.device)
        self.engine.model.train()
        return tot[0] / max(tot[1], 1.0)

    # ---- saving --------------------------------------------------------------------------------
    def save(self) -> None:
        is_main = self.dist.is_main
        weights = self.engine.full_weights()          # a collective under DeepSpeed: every rank
        optimizer, per_rank = self.engine.optimizer_state()
        trainer = {"step": self.step, "sampler": self.data.sampler.state_dict(),
                   "schedule": self.schedule.state_dict()}
        meta = ckpt_io.checkpoint_meta(self.step, self.data.sampler.epoch, _scalars(self.last), self.cfg,
                                       self.dist.world_size, self.engine.name)
        payload = ckpt_io.CheckpointPayload(
            step=self.step, weights=weights if is_main else None,
            optimizer=optimizer, optimizer_per_rank=per_rank, trainer=trainer if is_main else None,
            meta=meta if is_main else None, frozen=self.frozen if is_main else None,
            record=ckpt_io.weights_record(self.cfg) if is_main else None)
        path = ckpt_io.save_checkpoint(self.exp_dir, payload, self.dist.rank, self.dist.device,
                                       self.cfg.checkpoint.keep_last)
        self.saved_step = self.step
        log.info("saved checkpoint %s", path)

    def save_final(self) -> None:
        weights = self.engine.full_weights()          # float32, assembled on every rank
        if self.dist.is_main:
            meta = ckpt_io.checkpoint_meta(self.step, self.data.sampler.epoch, _scalars(self.last), self.cfg,
                                           self.dist.world_size, self.engine.name)
            path = ckpt_io.save_final(self.exp_dir, self.engine.model, self.cfg, meta, self.frozen or {}, weights)
            log.info("final model written to %s (loss %.4f)", path, self.last.get("loss", float("nan")))


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
