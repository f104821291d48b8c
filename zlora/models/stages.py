"""Training-stage policies (paper §IV-F), parameter accounting and the adapter glue.

- Stage 1 (foundation): the encoder (unless ``encoder.stage1_trainable: false``), the projector and
  the LLM-side LoRA train; the LLM backbone stays frozen (``llm.trainable: true`` trains it all,
  for from-scratch LLMs). No encoder adapters.
- Stage 2 (PEFT SFT): the encoder is frozen, encoder adapters of the configured kind are inserted
  with ``zlora.adapters.apply_adapters`` (default: every encoder linear layer, attention q/k/v/out
  and fc1/fc2), and the encoder adapters, the projector and the LLM-side LoRA train.

Bottom layers whose outputs are cached (``encoder.cached_layers``) never run, so they stay frozen
in every stage and adapters may not target them.

A stage-2 run initialised from stage 1 goes through zlora.models.assembly: build, load the stage-1
weights (under the stage-1 policy), insert the adapters, set the stage-2 policy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from zlora.config import ConfigError
from zlora.models.projector import conv_to_linear

if TYPE_CHECKING:  # pragma: no cover
    from zlora.models.speech_llm import SpeechLLM

PARTS = ("encoder", "encoder adapters", "projector", "llm", "llm lora")


def adapter_layer_class():
    from zlora.adapters.base import AdapterLayer

    return AdapterLayer


def adapter_layers(module: nn.Module) -> list[nn.Module]:
    cls = adapter_layer_class()
    return [m for m in module.modules() if isinstance(m, cls)]


def has_adapters(module: nn.Module) -> bool:
    return bool(adapter_layers(module))


def adapter_language_context(module: nn.Module, lang_ids: torch.Tensor | None):
    """``zlora.adapters.language_context`` over ``module``, one language per input row.

    A no-op when ``module`` has no adapter layers or only language-free ones (``languages: []``),
    which need no routing. Without ``lang_ids`` routed layers raise, by design.
    """
    layers = adapter_layers(module)
    if lang_ids is None or not layers or not layers[0].languages:
        return contextlib.nullcontext()
    from zlora.adapters import language_context

    return language_context(module, lang_ids)


def adapter_subset_routing(module: nn.Module, rows: torch.Tensor):
    """``zlora.adapters.context.subset_routing`` over ``module`` (a sub-batch of the routed
    batch: input row i is outer row rows[i]); a no-op without adapter layers."""
    if not has_adapters(module):
        return contextlib.nullcontext()
    from zlora.adapters.context import subset_routing

    return subset_routing(module, rows)


def adapter_valid_tokens(module: nn.Module, valid: torch.Tensor):
    """``zlora.adapters.context.valid_tokens_context`` over ``module``; a no-op without adapters."""
    if not has_adapters(module):
        return contextlib.nullcontext()
    from zlora.adapters.context import valid_tokens_context

    return valid_tokens_context(module, valid)


def adapter_names(module: nn.Module) -> dict[str, set[str]]:
    """{param or buffer name: ...}: names (relative to ``module``) of adapter tensors -- everything
    inside an adapter layer except its wrapped ``base_layer``."""
    cls = adapter_layer_class()
    params, buffers = set(), set()
    for qual, m in module.named_modules():
        if not isinstance(m, cls):
            continue
        prefix = f"{qual}." if qual else ""
        for n, _ in m.named_parameters():
            if not n.startswith("base_layer."):
                params.add(prefix + n)
        param_names = {n for n, _ in m.named_parameters()}
        for n in m.state_dict():
            if not n.startswith("base_layer.") and n not in param_names:
                buffers.add(prefix + n)
    return {"params": params, "buffers": buffers}


def named_parts(model: "SpeechLLM") -> Iterator[tuple[str, str, nn.Parameter]]:
    """(part, qualified name, parameter) for every parameter, ``part`` one of PARTS."""
    for top, module in (("encoder", model.encoder), ("projector", model.projector), ("llm", model.llm)):
        adapter = adapter_names(module)["params"] if top != "projector" else set()
        for n, p in module.named_parameters():
            part = top
            if n in adapter:
                part = "encoder adapters" if top == "encoder" else "llm lora"
            yield part, f"{top}.{n}", p


def apply_stage(model: "SpeechLLM", stage: int, adapter_cfg=None) -> None:
    """Stage 2 inserts the encoder adapters; then requires_grad per the policy of ``stage``."""
    if stage == 2:
        insert_encoder_adapters(model, adapter_cfg)
    set_trainable(model, stage)


def set_trainable(model: "SpeechLLM", stage: int) -> None:
    """Set requires_grad per the §IV-F policy of ``stage`` (1 or 2)."""
    if stage not in (1, 2):
        raise ConfigError(f"stage must be 1 or 2, got {stage}")
    if stage == 1 and has_adapters(model.encoder):
        raise ConfigError("stage 1 has no encoder adapters, but this model already has some "
                          "(set_stage(2) was called before set_stage(1))")
    enc_cfg, llm_cfg = model.cfg.encoder, model.cfg.llm
    cached = {id(p) for m in model.encoder.bottom_modules() for p in m.parameters()}
    for part, _, p in named_parts(model):
        if part in ("encoder adapters", "llm lora", "projector"):
            p.requires_grad_(True)
        elif part == "encoder":
            p.requires_grad_(stage == 1 and enc_cfg.stage1_trainable and id(p) not in cached)
        else:
            p.requires_grad_(llm_cfg.trainable)
    # Whisper's sinusoidal position table is fixed (transformers freezes it too).
    model.encoder.embed_positions.weight.requires_grad_(False)


def insert_encoder_adapters(model: "SpeechLLM", adapter_cfg) -> list[str]:
    """Stage 2: wrap the encoder's linear layers matched by ``adapter_cfg.target_modules``."""
    from zlora.adapters import apply_adapters
    from zlora.adapters.apply import check_rank_fits

    if adapter_cfg is None:
        raise ConfigError("stage 2 needs an adapter config (the yaml 'adapter:' section)")
    if has_adapters(model.encoder):
        raise ConfigError("the encoder already has adapters; set_stage(2) was called twice")
    if not adapter_cfg.languages:
        # A language-free kind (lora, flylora) still gets the model's languages, so that one
        # language_context / merge_for_language can span the whole model (LLM LoRA carries them too).
        adapter_cfg = dataclasses.replace(adapter_cfg, languages=list(model.languages))
    if list(adapter_cfg.languages) != list(model.languages):
        raise ConfigError(f"adapter.languages {list(adapter_cfg.languages)} must equal the model's "
                          f"languages {list(model.languages)} (same order: it defines the indices)")
    targets = matching_linear_names(model.encoder, adapter_cfg.target_modules)
    n_cached = model.cfg.encoder.cached_layers
    in_cache = [n for n in targets if _layer_index(n) is not None and _layer_index(n) < n_cached]
    if in_cache:
        raise ConfigError(
            f"adapter.target_modules {adapter_cfg.target_modules!r} matches {in_cache[0]}, but layers "
            f"0..{n_cached - 1} are cached (model.encoder.cached_layers={n_cached}) and never run; "
            f"restrict it to the top layers, e.g. {top_layers_regex(n_cached, model.encoder.n_layers)!r}")
    if not targets:
        raise ConfigError(f"adapter.target_modules {adapter_cfg.target_modules!r} matches no linear "
                          "layer of the encoder (names look like layers.0.self_attn.q_proj)")
    try:
        check_rank_fits(model.encoder, adapter_cfg, "adapter.rank")
        return apply_adapters(model.encoder, adapter_cfg)
    except ValueError as e:
        # zlora.adapters reports config/file mismatches (an init_b_from file of another kind, rank
        # or language set, a corrupt adapter file) as ValueError naming the file; they are the
        # user's input, so surface them as a one-line config error rather than a traceback.
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"adapter: {e}") from e


def matching_linear_names(module: nn.Module, regex: str) -> list[str]:
    """Names of nn.Linear modules fully matching ``regex`` (the rule apply_adapters uses)."""
    pat = re.compile(regex)
    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and pat.fullmatch(n)]


def top_layers_regex(first: int, n_layers: int) -> str:
    """Regex for every linear layer of encoder layers first..n_layers-1."""
    idx = "|".join(str(i) for i in range(first, n_layers))
    return rf"layers\.({idx})\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)"


def _layer_index(name: str) -> int | None:
    m = re.match(r"layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def parameter_table(model: "SpeechLLM") -> str:
    """Trainable / frozen parameter counts per part, as a fixed-width text table."""
    rows = {part: [0, 0] for part in PARTS}
    for part, _, p in named_parts(model):
        rows[part][0 if p.requires_grad else 1] += p.numel()
    total_t = sum(r[0] for r in rows.values())
    total_f = sum(r[1] for r in rows.values())
    lines = [f"{'part':<18}{'trainable':>14}{'frozen':>14}", "-" * 46]
    lines += [f"{part:<18}{t:>14,}{f:>14,}" for part, (t, f) in rows.items()]
    pct = 100.0 * total_t / max(1, total_t + total_f)
    lines += ["-" * 46, f"{'total':<18}{total_t:>14,}{total_f:>14,}   ({pct:.2f}% trainable)"]
    return "\n".join(lines)


def trainable_state_dict(model: "SpeechLLM") -> dict[str, torch.Tensor]:
    """Trainable parameters plus adapter buffers (e.g. FlyLoRA's frozen random A and its bias d,
    which a checkpoint must carry to reproduce the model), keyed like ``model.state_dict()``."""
    out = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    state = None
    for top in ("encoder", "llm"):
        bufs = adapter_names(getattr(model, top))["buffers"]
        if bufs:
            state = state if state is not None else model.state_dict()
            out.update({f"{top}.{b}": state[f"{top}.{b}"].detach() for b in bufs})
    return out


def _follow_wrapping(sd: dict[str, torch.Tensor], known: dict) -> dict[str, torch.Tensor]:
    """Rename ``a.b.weight`` to ``a.b.base_layer.weight`` where the model has since wrapped that
    linear layer in an adapter: a stage-1 model whose LLM trained whole (no LLM-LoRA) loads into a
    stage-2 model that adds LLM-LoRA around the same, now frozen, weights."""
    out = {}
    for k, v in sd.items():
        if k not in known:
            head, _, leaf = k.rpartition(".")
            wrapped = f"{head}.base_layer.{leaf}"
            if wrapped in known:
                k = wrapped
        out[k] = v
    return out


def load_trainable_state_dict(model: "SpeechLLM", sd: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load tensors saved by :func:`trainable_state_dict`.

    Keys unknown to the model are always an error. With ``strict`` every trainable tensor of the
    current stage must be present and nothing frozen may be overwritten.
    """
    known = model.state_dict()
    sd = _follow_wrapping(sd, known)
    conv_to_linear(sd, "projector.")     # checkpoints saved before the projector became one linear
    unknown = sorted(set(sd) - set(known))
    if unknown:
        raise ValueError(f"{len(unknown)} tensor(s) not in this model, e.g. {unknown[:3]}")
    if strict:
        expected = set(trainable_state_dict(model))
        missing, frozen = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing:
            raise ValueError(f"{len(missing)} trainable tensor(s) missing, e.g. {missing[:3]}")
        if frozen:
            raise ValueError(f"{len(frozen)} tensor(s) are frozen in this stage, e.g. {frozen[:3]} "
                             "(load with strict=False to initialise them anyway)")
    bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(known[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"shape mismatch for {k}: file {tuple(sd[k].shape)}, model {tuple(known[k].shape)}")
    model.load_state_dict(sd, strict=False)
