"""Multilingual LoRA adapters for any PyTorch model: lora, independent, flylora and the Zipper-LoRA
family (static / hard / soft with a Whisper-LID router), with per-row language routing.

    cfg = AdapterConfig(kind="zipper-soft", rank=32, alpha=64, languages=["en", "fr"],
                        target_modules=r".*(q_proj|v_proj)", conf={"lid_embeddings": "lid.safetensors"})
    names = apply_adapters(model, cfg)
    with language_context(model, ["fr", "en"]):
        y = model(x)
"""
# The built-in kinds register themselves on import; this order is the registry's (and KINDS') order.
from zlora.adapters import lora, independent, flylora, zipper_static, zipper_soft, zipper_hard, mole  # noqa: F401,I001
from zlora.adapters.apply import (adapter_step_hooks, apply_adapters, get_adapter_config,
                                  named_adapter_layers)
from zlora.adapters.base import AdapterLayer, NoLanguageContextError
from zlora.adapters.config import AdapterConfig, load_lid_embeddings
from zlora.adapters.context import language_context
from zlora.adapters.counting import count_trainable_parameters
from zlora.adapters.io import (adapter_state_dict, load_adapter_file, load_adapter_state_dict,
                               read_adapter_file, save_adapter_file)
from zlora.adapters.merge import merge_for_language
from zlora.adapters.registry import ADAPTER_KINDS, KindSpec, display_name, kind_spec, kinds, register_kind

# The paper's compared kinds, in the paper's order (generic tests and benchmarks iterate over these).
KINDS = kinds(compared=True)

__all__ = [
    "ADAPTER_KINDS", "KINDS", "KindSpec", "AdapterConfig", "display_name", "kind_spec", "kinds",
    "register_kind", "AdapterLayer", "NoLanguageContextError",
    "adapter_state_dict", "adapter_step_hooks", "apply_adapters", "count_trainable_parameters",
    "get_adapter_config", "language_context", "load_adapter_file", "load_adapter_state_dict",
    "load_lid_embeddings", "merge_for_language", "named_adapter_layers", "read_adapter_file",
    "save_adapter_file",
]
