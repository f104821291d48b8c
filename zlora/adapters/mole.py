"""LoRA-MoLE (arXiv 2506.21555, "Efficient Multilingual ASR Finetuning via LoRA Language Experts").

One LoRA expert per language (a `lora` adapter trained on that language alone) is loaded into
every wrapped layer as frozen stacked banks ``expert_A`` (L, r, d_in) and ``expert_B`` (L, r, d_out)
(rank-major, each expert's own alpha/r folded into its B, so the experts' outputs are reproduced
exactly). Two layer roles:

- fused (shallow) layers, names matching ``adapter.conf.fused``: the experts are combined with
  learnable per-layer weights w = softmax(fusion_logits) (L,), initialised uniform. The paper
  says the experts' "A and B are linearly combined"; combining A and B separately creates cross
  terms B_k A_l between independently trained experts whose subspaces do not match, so the default
  ``fusion: output`` combines the experts' outputs, dW = sum_l w_l s_l B_l A_l; ``weights``
  is the literal reading, dW = (sum_l w_l s_l B_l)(sum_l w_l A_l). Softmax keeps the combination
  convex (our choice; the paper does not say how the weights are normalised).
- routed (deep) layers, all other wrapped layers: row b uses expert l_b only (like `independent`).

Routing (no language needed at inference). An MLP LID classifier (Linear-ReLU-Linear, owned by the
first MoLE layer so it is saved, counted and optimised once) reads the output of the module
``conf.lid_tap`` (default: the encoder layer holding the last fused linear, e.g. ``layers.4``),
mean-pooled over valid frames. It obtains it through a forward hook that ``post_apply`` registers
on that module; valid frames come from the layer's attention-mask argument (Whisper layers are
called as ``layer(x, mask)``; no mask = no padding). The decision reaches the deeper layers in the
same forward pass through a shared :class:`MoLEState` object: the hook writes the logits and
argmax there, the routed layers read it. ``state.mode``: ``true`` routes by the language_context
(training, with the classifier trained by a cross-entropy term, see zlora.train.distill), while
``predicted`` routes by the classifier's argmax; ``auto`` (default) = true in train mode, predicted
in eval mode. The classifier must see the tap before the first routed layer runs, so the tap must
come before every routed layer (checked at the first forward).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zlora.adapters.base import AdapterLayer, layer_generator, lora_a_init_
from zlora.adapters.config import AdapterConfig
from zlora.adapters.context import LanguageBatch
from zlora.adapters.registry import register_kind
from zlora.config import ConfigError


@dataclass
class MoLEOptions:
    """``adapter.conf`` of mole (see the module docstring)."""
    experts: list[str] = field(default_factory=list)   # one `lora` adapter file per language, same order
    fused: str = ""                                     # regex: wrapped layers whose experts are fused
    fusion: Literal["output", "weights"] = "output"
    lid_tap: Optional[str] = None                       # module whose output feeds the LID MLP
    lid_hidden: int = 256
    lid_loss_weight: float = 1.0
    # LID phase after training (zlora.train.distill.MoLELIDExtension.finish): refit the classifier
    # on pooled tap states of up to lid_phase_utts utterances per language, class-balanced. The
    # ASR packs are language-homogeneous, so the in-training LID loss sees one class per pack.
    lid_phase_steps: int = 0                            # 0 = off
    lid_phase_utts: int = 500                           # utterances per language (at most)
    lid_phase_lr: float = 1e-3
    # more labelled data for the LID phase only (data dirs, and their inputs as the model reads
    # them: the same encoder cache layers): the ASR data may hold a language's 1-2 utterances (a
    # long tail), too few to recognise it in new voices. Drawn after the training data, within
    # lid_phase_utts per language.
    lid_phase_data: list[str] = field(default_factory=list)
    lid_phase_feats: list[str] = field(default_factory=list)

    def check(self, cfg) -> None:
        if self.experts and len(self.experts) != len(cfg.languages):
            raise ConfigError(f"adapter.conf.experts has {len(self.experts)} files but languages has "
                              f"{len(cfg.languages)}: give one expert file per language, same order")
        if len(self.lid_phase_data) != len(self.lid_phase_feats):
            raise ConfigError(f"adapter.conf.lid_phase_data has {len(self.lid_phase_data)} data dirs but "
                              f"lid_phase_feats {len(self.lid_phase_feats)} feats.scp: give one per data dir")


class MoLEState:
    """Per-model routing state shared by every MoLE layer of one model (one forward at a time)."""

    def __init__(self, n_languages: int):
        self.n_languages = n_languages
        self.mode = "auto"                       # auto | true | predicted
        self.logits: Optional[torch.Tensor] = None    # (B, L) of the last forward
        self.targets: Optional[torch.Tensor] = None   # (B,) language_context indices, if any
        self.pred: Optional[LanguageBatch] = None
        self.history: list = []                  # (logits, targets) of every tap call since reset
        self.collect = False                     # keep history (set by the training extension)
        # Per input row of the model's forward, summed over the tap calls that covered it (an
        # encoder runs a batch as several pieces/groups, zlora.models.pieces): frame-weighted
        # logits (B, L) and valid frames (B,). Read by row_prediction(); cleared by reset().
        self.row_logits: Optional[torch.Tensor] = None
        self.row_frames: Optional[torch.Tensor] = None
        self._forward_id: object = None
        self.keep_pooled = False                 # record (pooled tap states, true languages) per call
        self.pooled: list = []

    def reset(self) -> None:
        self.logits = self.targets = self.pred = None
        self.row_logits = self.row_frames = None
        self.history = []

    def accumulate_rows(self, logits: torch.Tensor, frames: torch.Tensor, rows: torch.Tensor,
                        n_rows: int, forward_id: object = None) -> None:
        """Add a tap call's logits (n, L), weighted by its rows' valid frames (n,), to outer rows
        ``rows`` (n,) of an n_rows batch. A new ``forward_id`` (or None) starts afresh."""
        if forward_id is None or forward_id != self._forward_id or self.row_logits is None \
                or self.row_logits.shape[0] != n_rows:
            self._forward_id = forward_id
            self.row_logits = logits.new_zeros(n_rows, logits.shape[1])
            self.row_frames = frames.new_zeros(n_rows)
        self.row_logits.index_add_(0, rows, logits * frames[:, None])
        self.row_frames.index_add_(0, rows, frames)

    def row_prediction(self) -> torch.Tensor:
        """(B,) language index per input row: argmax of the frame-weighted mean logits over its
        pieces (one piece per row with full context; every chunk of the row when chunked)."""
        if self.row_logits is None:
            raise RuntimeError("MoLE: no classifier decision recorded; run the encoder first")
        return (self.row_logits / self.row_frames.clamp_min(1.0)[:, None]).argmax(-1)

    def use_predicted(self, training: bool) -> bool:
        if self.mode == "auto":
            return not training
        return self.mode == "predicted"


class LIDClassifier(nn.Module):
    """(B, d) pooled hidden state -> (B, L) language logits, computed in float32 (its weights are
    cast to float32 at use, so a bf16 model under DeepSpeed or autocast classifies alike)."""

    def __init__(self, d_in: int, hidden: int, n_languages: int, gen: torch.Generator, **factory):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden, **factory), nn.ReLU(),
                                 nn.Linear(hidden, n_languages, **factory))
        with torch.no_grad():
            for lin in (self.net[0], self.net[2]):
                bound = 1.0 / lin.in_features ** 0.5
                for p in (lin.weight, lin.bias):
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        first, last = self.net[0], self.net[2]
        with torch.autocast(pooled.device.type, enabled=False):
            h = F.relu(F.linear(pooled.float(), first.weight.float(), first.bias.float()))
            return F.linear(h, last.weight.float(), last.bias.float())


@register_kind(display="LoRA-MoLE", options=MoLEOptions, mergeable=False, compared=False,
               legacy={"mole_experts": "experts", "mole_fused": "fused", "mole_fusion": "fusion",
                       "mole_lid_tap": "lid_tap", "mole_lid_hidden": "lid_hidden",
                       "mole_lid_loss_weight": "lid_loss_weight"})
class MoLELayer(AdapterLayer):
    """expert_A: (L, r, d_in) and expert_B: (L, r, d_out) frozen buffers; fused layers also own
    fusion_logits: (L,) trainable."""

    kind = "mole"
    shared_down = False
    shared_up = False
    mergeable = False                 # routed layers depend on the classifier's decision

    def __init__(self, base_layer: nn.Linear, cfg: AdapterConfig, name: str, **_: object):
        super().__init__(base_layer, cfg, name)
        f = self._factory()
        self.register_buffer("expert_A", torch.zeros(self.n_languages, self.rank, self.in_features, **f))
        self.register_buffer("expert_B", torch.zeros(self.n_languages, self.rank, self.out_features, **f))
        lora_a_init_(self.expert_A, layer_generator(cfg, name))
        self.fused = bool(cfg.options.fused) and re.fullmatch(cfg.options.fused, name) is not None
        if self.fused:
            self.fusion_logits = nn.Parameter(torch.zeros(self.n_languages, **f))
        self.__dict__["state"] = None          # set by post_apply (shared, not a submodule)

    # ---- wiring ------------------------------------------------------------------------------
    @staticmethod
    def post_apply(model: nn.Module, cfg: AdapterConfig, names: list[str]) -> None:
        """Load the experts, build the shared state and the LID classifier, hook the tap module."""
        layers = [model.get_submodule(n) for n in names]
        if cfg.options.experts:
            load_experts(layers, cfg)
        state = MoLEState(len(cfg.languages))
        for layer in layers:
            layer.__dict__["state"] = state
        tap_name = cfg.options.lid_tap or default_tap(names, cfg)
        tap = model.get_submodule(tap_name)
        d_in = _tap_width(model, tap_name, names)
        owner = layers[0]
        owner.lid_classifier = LIDClassifier(d_in, cfg.options.lid_hidden, len(cfg.languages),
                                             layer_generator(cfg, "mole.lid"), **owner._factory())
        owner.__dict__["tap_name"] = tap_name
        tap.register_forward_hook(lambda m, args, out: _on_tap(owner, state, args, out, model))

    # ---- forward -------------------------------------------------------------------------------
    def fusion_weights(self) -> torch.Tensor:
        """(L,) convex combination weights of a fused layer."""
        return torch.softmax(self.fusion_logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ..., d_in) -> (B, ..., d_out)."""
        if self.fused:
            return self._forward_fused(x)
        prev = self._language_batch
        self._language_batch = self._routing_batch(x)
        try:
            return super().forward(x)
        finally:
            self._language_batch = prev

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        y = self.base_layer(x2)
        xd = self.dropout(x2).to(self.expert_A.dtype)
        w = self.fusion_weights().to(self.expert_A.dtype)
        n, r = self.n_languages, self.rank
        if self.cfg.options.fusion == "weights":
            a = torch.einsum("l,lrd->rd", w, self.expert_A)
            bt = torch.einsum("l,lrd->rd", w, self.expert_B)
            y = y.addmm_(F.linear(xd, a).to(y.dtype), bt.to(y.dtype))
        else:
            h = F.linear(xd, self.expert_A.reshape(n * r, -1))            # (N, L*r)
            h = h * w.repeat_interleave(r)
            y = y + h.to(y.dtype) @ self.expert_B.reshape(n * r, -1).to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def _routing_batch(self, x: torch.Tensor) -> LanguageBatch:
        state = self.state
        if state.use_predicted(self.training):
            if state.pred is None or state.pred.size != x.shape[0]:
                raise RuntimeError(
                    f"MoLE layer {self.adapter_name!r} needs the LID classifier's decision, but the tap "
                    f"module did not run before it in this forward (conf.lid_tap must precede every "
                    f"routed layer)")
            return state.pred
        batch = self._batch_for(x)
        if batch is None:
            raise RuntimeError(f"MoLE layer {self.adapter_name!r}: true-language routing needs a "
                               "language_context")
        return batch

    # ---- AdapterLayer hooks (routed layers behave like `independent` with frozen experts) --------
    def down_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.expert_A[lang]

    def down_bank(self) -> torch.Tensor:
        return self.expert_A

    def up_weight(self, lang: Optional[int]) -> torch.Tensor:
        return self.expert_B[lang]                 # expert scaling already folded in

    def split_hidden(self, h3: torch.Tensor, rows: torch.Tensor) -> tuple:
        return None, None, h3, self.expert_B


def _on_tap(owner: MoLELayer, state: MoLEState, args: tuple, out, model: nn.Module) -> None:
    """Forward hook on the tap module: pool its output, classify, store the routing decision.

    The classifier computes in float32 whatever the model's precision (docs: precision policy).
    A recomputation under activation checkpointing records nothing (its forward already did).
    """
    from zlora.adapters.checkpointing import is_recomputing

    if is_recomputing():
        return
    h = out[0] if isinstance(out, (tuple, list)) else out        # (B, T, d)
    mask = args[1] if len(args) > 1 else None
    valid = _valid_frames(mask, h)                               # (B, T) float
    pooled = (h.float() * valid.float()[..., None]).sum(1) / valid.float().sum(1, keepdim=True).clamp_min(1.0)
    logits = owner.lid_classifier(pooled)
    state.logits = logits
    batch = owner._language_batch
    state.targets = None if batch is None else batch.on(logits.device).expand(logits.shape[0])
    if state.keep_pooled and state.targets is not None:
        state.pooled.append((pooled.detach().float().cpu(), state.targets.detach().cpu()))
    if state.collect:
        state.history.append((logits, state.targets))
    pred = logits.detach().argmax(dim=-1)
    state.pred = LanguageBatch(pred, state.n_languages)
    rows = getattr(model, "group_rows", None)           # set by an encoder running length groups
    if rows is None:
        rows, n_rows, fid = torch.arange(len(pred), device=pred.device), len(pred), None
    else:
        n_rows, fid = model.group_batch_size, model.forward_count
    state.accumulate_rows(logits.detach().float(), valid.float().sum(1), rows.to(pred.device), n_rows, fid)


def _valid_frames(mask: Optional[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """(B, T) 1 for real frames from a (B, 1, 1, T) key mask (bool: True valid; additive: 0 valid)."""
    if mask is None:
        return h.new_ones(h.shape[0], h.shape[1])
    m = mask.reshape(mask.shape[0], -1)[:, -h.shape[1]:]
    valid = m if m.dtype == torch.bool else m == 0
    return valid.to(h.dtype)


def default_tap(names: list[str], cfg: AdapterConfig) -> str:
    """The block (``...layers.K``) holding the last fused linear; without fused layers, the block
    before the first routed one."""
    fused = [n for n in names if cfg.options.fused and re.fullmatch(cfg.options.fused, n)]
    ref = fused[-1] if fused else names[0]
    m = re.match(r"(.*layers\.)(\d+)\.", ref)
    if m is None:
        raise ValueError(f"mole: cannot infer the LID tap from {ref!r}; set adapter.conf.lid_tap")
    k = int(m.group(2)) if fused else int(m.group(2)) - 1
    if k < 0:
        raise ValueError("mole: no fused layers and the first routed layer is layer 0: the LID "
                         "classifier has nothing to read; set adapter.conf.fused or conf.lid_tap")
    return f"{m.group(1)}{k}"


def _tap_width(model: nn.Module, tap_name: str, names: list[str]) -> int:
    """Width of the tap's output: in_features of the first wrapped q/k/v-like linear after it
    (a transformer block's input and output have the same width)."""
    for n in names:
        layer = model.get_submodule(n)
        if n.endswith(("q_proj", "k_proj", "v_proj", "fc1")):
            return layer.in_features
    return model.get_submodule(names[0]).in_features


def load_experts(layers: list[MoLELayer], cfg: AdapterConfig) -> None:
    """Copy every language's `lora` expert file (cfg.options.experts[l]) into the stacked banks."""
    from zlora.adapters.io import read_adapter_file

    for li, path in enumerate(cfg.options.experts):
        tensors, fcfg = read_adapter_file(path)
        if fcfg.get("kind") != "lora" or fcfg.get("rank") != cfg.rank:
            raise ValueError(f"{path}: a MoLE expert must be a `lora` adapter of rank {cfg.rank}; "
                             f"this file has kind {fcfg.get('kind')!r}, rank {fcfg.get('rank')!r}")
        scale = float(fcfg["alpha"]) / float(fcfg["rank"])
        with torch.no_grad():
            for layer in layers:
                a = _find(tensors, layer.adapter_name + ".lora_A", path)
                b = _find(tensors, layer.adapter_name + ".lora_B", path)
                layer.expert_A[li].copy_(a)
                layer.expert_B[li].copy_(b.t() * scale)


def _find(tensors: dict, key: str, path: str) -> torch.Tensor:
    hits = [k for k in tensors if k == key or k.endswith("." + key)]
    if len(hits) != 1:
        raise ValueError(f"{path}: expected one tensor named like {key!r}, found {len(hits)}; "
                         "was the expert trained with the same adapter.target_modules?")
    return tensors[hits[0]]


def lid_owner(model: nn.Module) -> Optional["MoLELayer"]:
    """The MoLE layer that owns the LID classifier (the first one), or None."""
    return next((m for m in model.modules() if isinstance(m, MoLELayer) and "lid_classifier" in m._modules), None)


def mole_state(model: nn.Module) -> Optional[MoLEState]:
    """The MoLEState of a model's MoLE layers, or None."""
    for m in model.modules():
        if isinstance(m, MoLELayer):
            return m.state
    return None


def lid_loss(model: nn.Module) -> Optional[torch.Tensor]:
    """Cross-entropy of the LID classifier over every tap call since the last reset (only calls
    made inside a language_context count), or None when there is nothing to train."""
    state = mole_state(model)
    if state is None:
        return None
    calls = [(lg, t) for lg, t in state.history if t is not None]
    state.history = []
    if not calls:
        return None
    # Mean over rows (a batch encoded as several length groups counts each row once).
    total = sum(F.cross_entropy(lg.float(), t, reduction="sum") for lg, t in calls)
    return total / sum(len(t) for _, t in calls)
