"""Training engines behind one small interface: plain DDP, or DeepSpeed ZeRO (stage 2 by default).

Precision (``engine.bf16``; the policy table is in the README): DDP keeps float32 parameters
and runs the forward under bf16 autocast; DeepSpeed casts the parameters to bf16 and keeps float32
master weights in its optimizer. Either way the loss, the router and the MoLE classifier compute
in float32, and checkpoints and ``final/`` hold float32 weights (``full_weights``).

Both take the unwrapped model, a client ``torch.optim.AdamW`` (so DeepSpeed never JIT-compiles
fused_adam) and run micro-steps::

    for k, batch in enumerate(micro_batches):                   # grad_accum of them
        out = engine.micro_step(batch, last=k == grad_accum - 1)  # forward + backward (loss/grad_accum)
    grad_norm = engine.step(lr)          # clip, optimizer step, zero grads, adapter hooks

Per-step adapter hooks (FlyLoRA's bias update, or any wrapped layer exposing
``on_optimizer_step()``) come from ``zlora.adapters.adapter_step_hooks(model)`` and run after every
optimizer step on every rank -- generic, no kind is special-cased.

Optimizer state for checkpoints: DDP's optimizer is identical on every rank, so rank 0 saves it;
ZeRO partitions it, so every rank saves its own partition (the inner torch AdamW state over the
rank's flat fp32 partition) and resuming needs the same number of ranks. Both are plain tensor
dicts that ``torch.load(weights_only=True)`` accepts -- DeepSpeed's own ``save_checkpoint`` pickles
Python objects and loads them with ``weights_only=False``, which we do not allow.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from zlora.data.frontend import to_features
from zlora.train.distill import LossExtension, apply_loss_extensions
from zlora.train.config import EngineConfig, OptimConfig, TrainConfig, load_deepspeed_json
from zlora.train.distributed import DistInfo
from zlora.utils.log import get_logger

log = get_logger("train.engine")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters; no weight decay on biases and norms (ndim < 2)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters: check the stage policy")
    # torch picks the implementation: per-tensor on CPU, multi-tensor (foreach) on GPU.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def use_bf16(eng_cfg: EngineConfig, device: torch.device) -> bool:
    """``engine.bf16``: true/false as given, on any device (CPU too: DeepSpeed runs bf16 there and
    torch has CPU autocast, so the GPU precision path is testable on a CPU); null = bf16 on CUDA,
    float32 elsewhere."""
    return eng_cfg.bf16 if eng_cfg.bf16 is not None else device.type == "cuda"


def compute_dtype(eng_cfg: EngineConfig, device: torch.device) -> torch.dtype:
    """The parameters' dtype during training: bf16 under DeepSpeed bf16 (it casts them), float32
    otherwise (autocast keeps float32 parameters)."""
    return torch.bfloat16 if eng_cfg.engine == "deepspeed" and use_bf16(eng_cfg, device) else torch.float32


def step_hooks(model: nn.Module) -> list:
    from zlora.adapters import adapter_step_hooks

    return list(adapter_step_hooks(model))


def mel_bins(model: nn.Module) -> int | None:
    """Log-mel bins the model's encoder takes (for raw-audio batches); None if it has no config."""
    enc = getattr(getattr(model, "cfg", None), "encoder", None)
    return getattr(enc, "n_mels", None)


def move_batch(batch: dict, device: torch.device, float_dtype: torch.dtype | None = None,
               n_mels: int | None = None) -> dict:
    """The batch on ``device``; ``feats`` in ``float_dtype`` when given. A raw-audio batch
    (``wave``) gets its log-mel computed there, in float32 (zlora.data.frontend)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if float_dtype is not None and v.is_floating_point() and k == "feats":
                v = v.to(float_dtype)
        out[k] = v
    if "wave" in out:
        if n_mels is None:
            raise ValueError("a raw-audio batch needs the model's mel bins (model.cfg.encoder.n_mels)")
        out = to_features(out, n_mels, float_dtype)
    return out


class DDPEngine:
    """``loss_extensions``: extra loss terms (KD, MoLE LID; zlora.train.distill), applied after
    the forward of every micro-step."""
    name = "ddp"
    per_rank_optimizer = False

    def __init__(self, model: nn.Module, optim_cfg: OptimConfig, eng_cfg: EngineConfig, dist: DistInfo,
                 loss_extensions: Sequence[LossExtension] = ()):
        self.loss_extensions = list(loss_extensions)
        self.model = model.to(dist.device)
        self.dist = dist
        self.grad_accum, self.clip = optim_cfg.grad_accum, optim_cfg.clip_grad
        self.optimizer = build_optimizer(model, optim_cfg)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.autocast = use_bf16(eng_cfg, dist.device)      # parameters stay float32
        self.n_mels = mel_bins(model)
        ddp_kw = {"device_ids": [dist.local_rank]} if dist.device.type == "cuda" else {}
        self.wrapped = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=eng_cfg.find_unused_parameters, **ddp_kw)
        self.hooks = step_hooks(model)

    def micro_step(self, batch: dict, last: bool) -> dict:
        batch = move_batch(batch, self.dist.device, n_mels=self.n_mels)
        # What DDP.no_sync() sets: all-reduce gradients only in the last micro-step.
        self.wrapped.require_backward_grad_sync = last
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.wrapped(batch)
            out = apply_loss_extensions(self.loss_extensions, self.model, batch, out)
        (out["loss"] / self.grad_accum).backward()
        return out

    def step(self, lr: float) -> float:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        max_norm = self.clip if self.clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for hook in self.hooks:
            hook()
        return norm

    def full_weights(self) -> dict[str, torch.Tensor]:
        """Trainable tensors at full precision (float32 parameters: autocast never casts them)."""
        return self.model.trainable_state_dict()

    @torch.no_grad()
    def overwrite_params(self, pairs: list) -> None:
        """param <- value for (param, value) pairs (e.g. a classifier refitted after training)."""
        for param, value in pairs:
            param.copy_(value.to(param.device, param.dtype))

    def optimizer_state(self) -> tuple[dict | None, bool]:
        """(state to save on this rank or None, per_rank)."""
        return (self.optimizer.state_dict() if self.dist.is_main else None), False

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def eval_forward(self, batch: dict) -> dict:
        batch = move_batch(batch, self.dist.device, n_mels=self.n_mels)
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(batch)


class DeepSpeedEngine:
    """``loss_extensions``: as DDPEngine's."""
    name = "deepspeed"
    per_rank_optimizer = True

    def __init__(self, model: nn.Module, cfg: TrainConfig, dist: DistInfo,
                 loss_extensions: Sequence[LossExtension] = ()):
        import deepspeed

        self.loss_extensions = list(loss_extensions)
        if not cfg.engine.deepspeed_shm_comm:
            import deepspeed.ops

            # See EngineConfig.deepspeed_shm_comm: skip the JIT build of an inference-only op.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.dist = dist
        self.bf16 = use_bf16(cfg.engine, dist.device)
        self.ds_config = deepspeed_config(cfg, self.bf16)
        optimizer = build_optimizer(model, cfg.optim)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=copy.deepcopy(self.ds_config),
            dist_init_required=False)
        self.model = self.engine.module
        self.n_mels = mel_bins(self.model)
        self.hooks = step_hooks(self.model)
        log.info("DeepSpeed ZeRO stage %s, config %s", self.ds_config.get("zero_optimization", {}).get("stage"),
                 self.ds_config)

    def micro_step(self, batch: dict, last: bool) -> dict:
        batch = move_batch(batch, self.engine.device, torch.bfloat16 if self.bf16 else None, self.n_mels)
        if self.engine.is_gradient_accumulation_boundary() != last:
            raise RuntimeError("DeepSpeed's gradient-accumulation counter is out of step with the "
                               "training loop")
        out = self.engine(batch)
        out = apply_loss_extensions(self.loss_extensions, self.model, batch, out)
        self.engine.backward(out["loss"])   # divides by gradient_accumulation_steps itself
        if not last:
            self.engine.step()              # not a boundary: only advances DeepSpeed's counter
        return out

    def step(self, lr: float) -> float:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.engine.step()
        for hook in self.hooks:
            hook()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def full_weights(self) -> dict[str, torch.Tensor]:
        """Trainable tensors at full precision: under bf16 the module holds bf16 copies, so each
        trainable parameter is assembled from ZeRO's float32 master partitions (a collective:
        every rank must call this, in the same order). Buffers come as they are."""
        from deepspeed.utils import safe_get_full_fp32_param

        params = dict(self.model.named_parameters())
        out = {}
        for name, value in sorted(self.model.trainable_state_dict().items()):
            p = params.get(name)
            full = safe_get_full_fp32_param(p) if p is not None and p.requires_grad else None
            out[name] = (full if full is not None else value).detach().cpu()
        return out

    @torch.no_grad()
    def overwrite_params(self, pairs: list) -> None:
        """param <- value, in the bf16 module and in ZeRO's float32 master partition (which
        ``full_weights`` and the next optimizer step read)."""
        from deepspeed.utils import safe_set_full_fp32_param

        for param, value in pairs:
            param.copy_(value.to(param.device, param.dtype))
            safe_set_full_fp32_param(param, value.to(param.device, torch.float32))

    def optimizer_state(self) -> tuple[dict, bool]:
        """This rank's ZeRO partition: the inner AdamW state and the fp32 master partition (which
        differs from the bf16 parameters on GPU)."""
        zero = self.optimizer
        return {"base": zero.optimizer.state_dict(),
                "fp32_partitions": [t.detach().cpu().clone() for t in zero.single_partition_of_fp32_groups]}, True

    def load_optimizer_state(self, state: dict) -> None:
        zero = self.optimizer
        saved = state["fp32_partitions"]
        current = zero.single_partition_of_fp32_groups
        shapes = ([tuple(t.shape) for t in saved], [tuple(t.shape) for t in current])
        if shapes[0] != shapes[1]:
            raise ValueError(f"ZeRO partition shapes differ: checkpoint {shapes[0]}, this run {shapes[1]} "
                             "(resume with the same number of ranks and trainable parameters)")
        zero.optimizer.load_state_dict(state["base"])
        with torch.no_grad():
            for cur, old in zip(current, saved):
                cur.copy_(old.to(cur.device, cur.dtype))

    def eval_forward(self, batch: dict) -> dict:
        batch = move_batch(batch, self.engine.device, torch.bfloat16 if self.bf16 else None, self.n_mels)
        return self.model(batch)


def deepspeed_config(cfg: TrainConfig, bf16: bool) -> dict:
    """The JSON of engine.deepspeed_config with the keys that training config owns filled in."""
    ds = load_deepspeed_json(cfg.engine)
    ds["train_micro_batch_size_per_gpu"] = cfg.data.batch_size
    ds["gradient_accumulation_steps"] = cfg.optim.grad_accum
    ds.pop("train_batch_size", None)
    ds["gradient_clipping"] = cfg.optim.clip_grad
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": bf16}
    ds.setdefault("fp16", {})["enabled"] = False
    # A client torch optimizer under ZeRO is "untested" to DeepSpeed; AdamW is what it wraps.
    ds["zero_allow_untested_optimizer"] = True
    ds.setdefault("steps_per_print", 10 ** 9)
    return ds


def build_engine(cfg: TrainConfig, model: nn.Module, dist: DistInfo,
                 loss_extensions: Sequence[LossExtension] = ()):
    if cfg.engine.engine == "ddp":
        return DDPEngine(model, cfg.optim, cfg.engine, dist, loss_extensions)
    return DeepSpeedEngine(model, cfg, dist, loss_extensions)
