"""LoRA-KD (arXiv 2506.21555): distil per-language LoRA experts into one multilingual student LoRA,
plus the training term of LoRA-MoLE's LID classifier. Both plug into the training loop as "loss
extensions": callables ``ext(model, batch, out) -> out`` that the engine applies after the forward
and before backward (``engine.loss_extensions``), adding terms to ``out["loss"]``.

KD loss (the paper's layer-wise distillation):

    L = L_ASR + layer_weight * mean_k (1 - cos(h_k^S, h_k^T))  + logit_weight * JS(p^S || p^T)

- h_k: output of encoder layer k (every encoder layer that runs; cached bottom layers do not),
  compared frame by frame over valid frames; the teacher of an utterance is the expert of its
  language. ``mode: output`` drops the layer term (the paper's output-only ablation).
- JS on the LLM's next-token distributions at the transcript positions (the paper's Whisper
  decoder logits; ours come from the LLM). The experts are full stage-2 runs (encoder LoRA +
  projector + LLM-LoRA on the frozen LLM), loaded from their exp dirs: the teacher logits are each
  expert model's own. The student's LLM-LoRA and projector train with the ASR + JS terms; the
  LLM-side layers are not distilled layer-wise (the experts differ there only through LLM-LoRA).

Cost: one forward of each expert present in a batch, on the whole batch (no grad).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zlora.config import ConfigError
from zlora.utils.log import get_logger

LossExtension = Callable[[nn.Module, dict, dict], dict]
log = get_logger("train.distill")


@dataclass
class DistillConfig:
    """The ``distill:`` section of a training config."""
    experts: list[str] = field(default_factory=list)   # expert exp dirs, one per language, same order
    mode: Literal["layerwise", "output"] = "layerwise"   # output: no layer-wise term (ablation)
    layer_weight: float = 1.0           # weight of the layer-wise cosine distance to the expert
    logit_weight: float = 1.0           # weight of the JS divergence of the LLM's token distributions
    temperature: float = 1.0            # softmax temperature of the JS term

    def __post_init__(self):
        if self.layer_weight < 0 or self.logit_weight < 0 or not self.temperature > 0:
            raise ConfigError("distill: weights must be >= 0 and temperature > 0")


# ---- losses ------------------------------------------------------------------------------------
def cosine_distance(student: torch.Tensor, teacher: torch.Tensor,
                    valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of 1 - cos over frames: student/teacher (B, T, d), valid (B, T) {0,1} or None."""
    d = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)
    if valid is None:
        return d.mean()
    return (d * valid).sum() / valid.sum().clamp_min(1.0)


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """Jensen-Shannon divergence, mean over rows: logits (N, V). 0.5 KL(P||M) + 0.5 KL(Q||M)."""
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    lp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    lq = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    lm = torch.logsumexp(torch.stack([lp, lq]), dim=0) - torch.log(torch.tensor(2.0))
    kl_p = (lp.exp() * (lp - lm)).sum(-1)
    kl_q = (lq.exp() * (lq - lm)).sum(-1)
    return (0.5 * (kl_p + kl_q)).mean()


# ---- capturing hidden states and logits ----------------------------------------------------------
class Capture:
    """Forward hooks on a SpeechLLM's encoder layers and LM head; stores outputs while enabled.

    ``layers[i]`` lists one (hidden (n, T, d), key mask, input rows (n,)) per call of encoder layer
    i in the last forward: the encoder runs a batch as several length groups (and chunks), each
    group a call, and ``rows`` maps a call's rows to the batch's utterances. A teacher and the
    student see the same calls for the same batch (the grouping depends on lengths only).
    A recomputation under activation checkpointing records nothing.
    """

    def __init__(self, model: nn.Module, always: bool = False):
        self.layers: dict[int, list] = {}
        self.logits: Optional[torch.Tensor] = None
        self.always = always
        self.encoder = model.encoder
        for i, layer in enumerate(model.encoder.layers):
            layer.register_forward_hook(self._layer_hook(i))
        model.llm.get_output_embeddings().register_forward_hook(self._logit_hook)

    def _on(self) -> bool:
        from zlora.adapters.checkpointing import is_recomputing

        return (self.always or torch.is_grad_enabled()) and not is_recomputing()

    def _layer_hook(self, i: int):
        def hook(module, args, out):
            if self._on():
                h = out[0] if isinstance(out, (tuple, list)) else out
                rows = getattr(self.encoder, "group_rows", None)
                if rows is None:
                    rows = torch.arange(h.shape[0], device=h.device)
                self.layers.setdefault(i, []).append((h, args[1] if len(args) > 1 else None, rows))
        return hook

    def _logit_hook(self, module, args, out):
        if self._on():
            self.logits = out

    def take(self) -> tuple[dict, Optional[torch.Tensor]]:
        layers, logits = self.layers, self.logits
        self.layers, self.logits = {}, None
        return layers, logits


def token_languages(batch: dict) -> torch.Tensor:
    """(N,) language of every target token, in SpeechLLM.forward's order (row-major over LLM rows,
    each utterance contributing len(text) + 1 (EOS) tokens)."""
    from zlora.models.speech_llm import pack_rows

    lang_ids = batch["lang_ids"]
    rows = pack_rows(lang_ids, batch.get("pack_ids"))
    langs = [int(lang_ids[u]) for row in rows for u in row for _ in range(len(batch["text_ids"][u]) + 1)]
    return torch.tensor(langs, dtype=torch.long)


# ---- the KD extension ------------------------------------------------------------------------------
class DistillExtension:
    """Adds the KD terms; ``teachers[l]``: a frozen SpeechLLM (the expert of language index l)."""

    def __init__(self, model: nn.Module, teachers: dict[int, nn.Module], cfg: DistillConfig):
        self.cfg, self.teachers = cfg, teachers
        self.student = Capture(model)
        self.captures = {l: Capture(t, always=True) for l, t in teachers.items()}
        for t in teachers.values():
            t.requires_grad_(False)
        self.last: dict = {}

    def __call__(self, model: nn.Module, batch: dict, out: dict) -> dict:
        s_layers, s_logits = self.student.take()
        lang_ids = batch["lang_ids"]
        layer_terms, tok_langs = [], token_languages(batch).to(lang_ids.device)
        js_sum = s_logits.new_zeros(()) if s_logits is not None else None
        for lang in sorted(set(lang_ids.tolist())):
            t_layers, t_logits = self._teacher_forward(lang, batch)
            if self.cfg.mode == "layerwise":
                terms = (self._layer_term(s_layers[k], t_layers[k], lang_ids, lang) for k in s_layers)
                layer_terms += [t for t in terms if t is not None]
            if s_logits is not None and t_logits is not None:
                sel = tok_langs.to(s_logits.device) == lang
                js_sum = js_sum + js_divergence(s_logits[sel], t_logits[sel], self.cfg.temperature) * sel.sum()
        loss = out["loss"]
        layer = torch.stack(layer_terms).mean() if layer_terms else loss.new_zeros(())
        js = js_sum / max(len(tok_langs), 1) if js_sum is not None else loss.new_zeros(())
        self.last = {"kd_layer": float(layer.detach()), "kd_js": float(js.detach())}
        out = dict(out)
        out["loss"] = loss + self.cfg.layer_weight * layer + self.cfg.logit_weight * js
        return out

    @torch.no_grad()
    def _teacher_forward(self, lang: int, batch: dict) -> tuple[dict, Optional[torch.Tensor]]:
        teacher = self.teachers.get(lang)
        if teacher is None:
            raise ConfigError(f"distill: no expert for language index {lang}")
        teacher(batch)
        return self.captures[lang].take()

    @staticmethod
    def _layer_term(s_calls: list, t_calls: list, lang_ids: torch.Tensor, lang: int) -> torch.Tensor:
        """1 - cos over the valid frames of language ``lang``'s rows, pooled over the layer's calls
        (length groups / chunks) of the student and of this language's teacher."""
        from zlora.adapters.mole import _valid_frames

        if len(s_calls) != len(t_calls):
            raise RuntimeError(f"KD: the student ran an encoder layer {len(s_calls)} times but the "
                               f"teacher {len(t_calls)} times for the same batch")
        sums, frames = [], []
        for (hs, mask, rows), (ht, _, _) in zip(s_calls, t_calls):
            sel = lang_ids.to(rows.device)[rows] == lang
            if bool(sel.any()):
                valid = _valid_frames(mask, hs)[sel].float()
                sums.append(cosine_distance(hs[sel], ht[sel], valid) * valid.sum())
                frames.append(valid.sum())
        if not sums:
            return None
        return torch.stack(sums).sum() / torch.stack(frames).sum().clamp_min(1.0)

class MoLELIDExtension:
    """Adds weight * CE(LID classifier logits, true language) for a `mole` encoder adapter, and
    after training (``finish``) the LID phase of ``adapter.conf.lid_phase_steps``."""

    def __init__(self, model: nn.Module, weight: float, options=None):
        from zlora.adapters.mole import mole_state

        self.weight, self.options = weight, options
        mole_state(model).collect = True

    def finish(self, trainer) -> None:
        """LID phase: pooled tap states of up to ``lid_phase_utts`` training utterances per
        language (the trained fusion, true-language routing), then the classifier refitted on them
        class-balanced (zlora.models.lid_probe.fit_classifier): every step sees every language."""
        import copy

        from zlora.adapters.mole import lid_owner
        from zlora.models.lid_probe import fit_classifier

        opts = self.options
        if opts is None or opts.lid_phase_steps <= 0:
            return
        from zlora.train.data import build_pack_dataset

        model = trainer.engine.model
        extra = [build_pack_dataset(trainer.cfg, model, d, f, trainer.dist)
                 for d, f in zip(opts.lid_phase_data, opts.lid_phase_feats)]
        x, y = tap_states(model, [trainer.data.dataset, *extra], opts.lid_phase_utts, trainer.engine)
        owner = lid_owner(model)
        clf = copy.deepcopy(owner.lid_classifier).float().cpu()
        fit = fit_classifier(clf, x, y, len(owner.languages), opts.lid_phase_steps, opts.lid_phase_lr)
        trainer.engine.overwrite_params(list(zip(owner.lid_classifier.parameters(), clf.parameters())))
        log.info("MoLE LID phase: %d pooled tap states, %d class-balanced steps: train accuracy %.4f "
                 "(balanced %.4f)", len(y), opts.lid_phase_steps, fit["train_accuracy"], fit["balanced_accuracy"])

    def __call__(self, model: nn.Module, batch: dict, out: dict) -> dict:
        from zlora.adapters.mole import lid_loss

        term = lid_loss(model)
        if term is None:
            return out
        return {**out, "loss": out["loss"] + self.weight * term, "lid_loss": float(term.detach())}


@torch.no_grad()
def tap_states(model: nn.Module, datasets: list, per_language: int, engine) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d) pooled MoLE tap states and (N,) their true languages, for up to ``per_language``
    utterances of each language over ``datasets`` in order (packs in dataset order; chunks count
    as the encoder runs them)."""
    from zlora.adapters.mole import mole_state
    from zlora.data.dataset import collate_packs

    state, device = mole_state(model), next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    counts: dict[int, int] = {}
    state.keep_pooled, state.pooled, was_training = True, [], model.training
    model.eval()
    try:
        for dataset, p in ((d, p) for d in datasets for p in range(len(d))):
            items = dataset[(p, 0, 0)]
            lang = items[0]["lang"]
            if counts.get(lang, 0) >= per_language:
                continue
            counts[lang] = counts.get(lang, 0) + len(items)
            batch, _ = collate_packs([items])
            feats = batch["feats"].to(device, dtype)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=getattr(engine, "autocast", False)):
                model.encoder(feats, batch["feat_lens"].to(device), batch["lang_ids"].to(device),
                              batch.get("chunk_seconds"))
    finally:
        state.keep_pooled, pooled, state.pooled = False, state.pooled, []
        model.train(was_training)
    return torch.cat([x for x, _ in pooled]), torch.cat([t for _, t in pooled])


def load_teachers(cfg: DistillConfig, languages: list[str], device,
                  dtype: torch.dtype = torch.float32) -> dict[int, nn.Module]:
    """One frozen expert model per language, on ``device`` in the student's parameter ``dtype``
    (bf16 under DeepSpeed bf16, so a teacher takes the same bf16 batch as the student)."""
    from zlora.train.trained import load_model_for_inference

    if len(cfg.experts) != len(languages):
        raise ConfigError(f"distill.experts has {len(cfg.experts)} exp dirs, languages has "
                          f"{len(languages)}: give one expert per language, same order")
    teachers = {}
    for i, exp in enumerate(cfg.experts):
        model, tcfg = load_model_for_inference(exp)
        if list(tcfg.languages) != list(languages):
            raise ConfigError(f"distill.experts[{i}] {exp}: languages {tcfg.languages} differ from "
                              f"this run's {languages}")
        # Eval mode: no dropout; a chunked encoder still follows the batch's chunk_seconds.
        teachers[i] = model.to(device=device, dtype=dtype).eval()
    return teachers


ENCODING_KEYS = ("chunked", "train_chunk_seconds", "cached_layers", "max_groups", "group_target")


def check_same_encoding(student: nn.Module, teachers: dict[int, nn.Module], cfg: DistillConfig) -> None:
    """Layer-wise KD compares encoder states frame by frame, so every expert must cut a batch
    into the same pieces (chunks) and groups as the student: same chunking and caching."""
    want = {k: getattr(student.encoder.cfg, k) for k in ENCODING_KEYS}
    for lang, teacher in teachers.items():
        have = {k: getattr(teacher.encoder.cfg, k) for k in ENCODING_KEYS}
        diff = [k for k in ENCODING_KEYS if have[k] != want[k]]
        if diff:
            k = diff[0]
            raise ConfigError(f"distill.experts[{lang}] {cfg.experts[lang]}: model.encoder.{k} is "
                              f"{have[k]!r} but this run has {want[k]!r}; layer-wise KD compares "
                              "encoder states frame by frame, so experts must encode (chunk, cache) "
                              "like the student (or use distill.mode: output)")


def build_loss_extensions(cfg, model: nn.Module, device=None,
                          dtype: torch.dtype = torch.float32) -> list[LossExtension]:
    """Extensions for a TrainConfig: MoLE's LID loss and/or KD from experts. ``dtype``: the
    student's parameter dtype during training (zlora.train.engine.compute_dtype); KD teachers are
    cast to it."""
    exts: list[LossExtension] = []
    adapter = getattr(cfg, "adapter", None)
    if adapter is not None and adapter.kind == "mole" and (adapter.options.lid_loss_weight > 0
                                                           or adapter.options.lid_phase_steps > 0):
        exts.append(MoLELIDExtension(model, adapter.options.lid_loss_weight, adapter.options))
    dcfg = getattr(cfg, "distill", None)
    if dcfg is not None:
        teachers = load_teachers(dcfg, list(cfg.languages), device or torch.device("cpu"), dtype)
        if dcfg.mode == "layerwise":
            check_same_encoding(model, teachers, dcfg)
        exts.append(DistillExtension(model, teachers, dcfg))
    return exts


def apply_loss_extensions(exts: list[LossExtension], model: nn.Module, batch: dict, out: dict) -> dict:
    for ext in exts:
        out = ext(model, batch, out)
    return out
