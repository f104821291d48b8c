"""Trainable-parameter counts, so a run shows what it really trains (PEFT's
print_trainable_parameters, split into adapter, router and frozen parts)."""
from __future__ import annotations

from torch import nn

from zlora.adapters.apply import named_adapter_layers


def count_trainable_parameters(model: nn.Module) -> dict[str, int]:
    """Counts of trainable (requires_grad) parameters.

    Returns {"adapter": A/B banks, "router": LID routers (zipper-hard/-soft), "adapter_total":
    adapter + router, "model_trainable": every trainable parameter of ``model``, "model_frozen":
    every frozen one, "adapter_buffers": frozen adapter tensors such as FlyLoRA's A and the
    routers' LID embeddings}. Shared tensors (a shared router) count once.
    """
    adapter = router = buffers = 0
    seen: set[int] = set()
    for _, layer in named_adapter_layers(model):
        for name, p in layer.named_parameters():
            if name.startswith("base_layer.") or id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if name.startswith("router."):
                router += p.numel()
            else:
                adapter += p.numel()
        buffers += sum(v.numel() for k, v in layer.adapter_state().items()
                       if not isinstance(v, nn.Parameter))
    params = {id(p): p for p in model.parameters()}.values()
    return {
        "adapter": adapter,
        "router": router,
        "adapter_total": adapter + router,
        "model_trainable": sum(p.numel() for p in params if p.requires_grad),
        "model_frozen": sum(p.numel() for p in params if not p.requires_grad),
        "adapter_buffers": buffers,
    }
