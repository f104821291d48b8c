"""Per-step telemetry for metrics.jsonl and TensorBoard: memory, data wait, throughput, MFU.

- ``peak_mem_gb``: peak allocated device memory during the step (CUDA; reset every step). On a
  CPU, ``max_rss_gb``: the process's peak resident memory so far (it never resets).
- ``data_wait_s``: time the loop waited for the step's micro-batches (DataLoader), measured
  before the step timer starts, so ``step_time_s`` is compute only.
- ``enc_frames_per_s`` (real encoder frames per second of the step) and
  ``enc_padding_efficiency`` (real / computed encoder frames, zlora.models.pieces), next to the
  LLM's ``tokens_per_s`` and ``packing_efficiency``.
- ``mfu`` (GPU only, when the device's peak is known or ``engine.peak_tflops`` is set): model
  FLOPs per second / peak. Model FLOPs are an estimate: 6 x (parameters a frame or token passes
  through) per computed encoder frame and per padded LLM token (forward 2, backward 4 -- frozen
  weights need only input gradients, so this overstates a PEFT step by up to a third) plus the
  attention score/value products, 12 x layers x T x d per token over each padded sequence T.
"""
from __future__ import annotations

import resource
import sys

import torch
from torch import nn

# Dense bf16 peak TFLOPS by device-name fragment (vendor data sheets, without sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0,
                    "4090": 165.0, "V100": 125.0}


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _layer_width(layers) -> tuple[int, int]:
    """(parameters, hidden width) of one block of ``layers`` (an nn.ModuleList)."""
    if not len(layers):
        return 0, 0
    block = layers[0]
    width = max((m.in_features for m in block.modules() if isinstance(m, nn.Linear)), default=0)
    return sum(p.numel() for p in block.parameters()), width


class StepTelemetry:
    """Measures one optimizer step at a time; ``metrics(...)`` returns the step's numbers."""

    def __init__(self, model: nn.Module, device: torch.device, configured_peak: float | None = None):
        self.model, self.device = model, device
        self.peak = peak_tflops(device, configured_peak)
        enc = getattr(model, "encoder", None)
        cached = enc.cfg.cached_layers if enc is not None else 0
        enc_layers = enc.layers[cached:] if enc is not None else []
        self.enc_params, self.enc_width = _layer_width(enc_layers)
        self.enc_layers = len(enc_layers)
        llm_layers = getattr(getattr(model, "llm", None), "base_model", None)
        llm_layers = getattr(llm_layers, "layers", [])
        self.llm_params, self.llm_width = _layer_width(llm_layers)
        self.llm_layers = len(llm_layers)

    def start(self) -> None:
        stats = getattr(getattr(self.model, "encoder", None), "frame_stats", None)
        if stats is not None:
            stats.take()                   # drop what validation / eval forwards counted
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def model_flops(self, enc_computed: int, enc_attn: int, llm_tokens: int, llm_seq: int) -> float:
        """Estimated training FLOPs of a step (see the module docstring). enc_attn = sum over
        encoder groups of n x T^2; the LLM's rows are all llm_seq tokens wide."""
        enc = self.enc_layers * (6 * self.enc_params * enc_computed + 12 * self.enc_width * enc_attn)
        llm = self.llm_layers * llm_tokens * (6 * self.llm_params + 12 * self.llm_width * llm_seq)
        return float(enc + llm)

    def metrics(self, dt: float, data_wait: float, padded_tokens: int, longest_row: int) -> dict:
        out = {"data_wait_s": data_wait}
        enc = getattr(self.model, "encoder", None)
        stats = getattr(enc, "frame_stats", None)
        if stats is not None:
            real, computed, attn = stats.take()
            if computed:
                out["enc_frames_per_s"] = real / dt
                out["enc_padding_efficiency"] = real / computed
                if self.peak:
                    flops = self.model_flops(computed, attn, padded_tokens, longest_row)
                    out["mfu"] = flops / dt / (self.peak * 1e12)
        if self.device.type == "cuda":
            out["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        else:
            scale = 1 if sys.platform == "darwin" else 1024       # ru_maxrss: bytes on macOS, KiB on Linux
            out["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 30
        return out
