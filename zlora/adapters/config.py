"""AdapterConfig: the YAML ``adapter:`` section (typed; unknown keys fail via zlora.config.from_dict)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import torch

KINDS = ("lora", "independent", "flylora", "zipper-static", "zipper-hard", "zipper-soft")
# Kinds of the second paper (arXiv 2506.21555). Kept out of KINDS, which the generic adapter tests
# iterate over: mole needs a model with transformer blocks (its LID tap), not any nn.Linear stack.
EXTRA_KINDS = ("mole",)
ROUTED_KINDS = ("zipper-hard", "zipper-soft")          # need a LID router (Eq. 16-18)
LANGUAGE_FREE_KINDS = ("lora", "flylora")               # may be used with languages=[]


@dataclass
class AdapterConfig:
    """Everything that defines an encoder adapter; ``languages`` order defines language indices.

    Paper ambiguities resolved here (see each kind's module for the why):
      - ``router_per_layer`` (default True): Fig. 4 draws a router inside every Zipper module,
        so each wrapped layer owns its router; False shares one router across all layers.
      - ``center_lid`` (default False, as in the paper): subtract the mean of the configured
        languages' LID embeddings before the router's LayerNorm (raw Whisper language-token
        embeddings share a large common component: mean off-diagonal cosine 0.72 -> 0.09).
      - ``zipper_static_shared_rank`` r_s (default rank // 2, the paper's 16/16 example).
      - ``flylora_*``: defaults follow the FlyLoRA authors' code (k=8, rho=k/r, u=1e-3).
    """

    # the adapter method (zlora/adapters/<kind>.py)
    kind: Literal["lora", "independent", "flylora", "zipper-static", "zipper-hard",
                  "zipper-soft", "mole"] = "lora"
    rank: int = 32                                         # LoRA rank r
    alpha: float = 64.0                                    # scaling: update x alpha / r
    # order = language indices; in a training config it defaults to the top-level languages
    languages: list[str] = field(default_factory=list)
    # Regex matched with re.fullmatch against qualified module names (like PEFT's string form);
    # every matching nn.Linear is wrapped.
    target_modules: str = r".*"
    dropout: float = 0.0                                   # dropout on the adapter branch's input
    seed: int = 0                                          # seeds the adapters' initialisation
    # zipper-hard / zipper-soft router (Eq. 16-18)
    lid_embeddings: Optional[Union[str, dict]] = None   # safetensors path {lang: (d_lid,)} or dict
    center_lid: bool = False
    router_per_layer: bool = True
    tau: float = 0.5                                       # Eq. 12 threshold (zipper-hard)
    # zipper-static (Eq. 11): r_s shared + r_p = rank - r_s language-specific columns
    zipper_static_shared_rank: Optional[int] = None
    # flylora (Eq. 9)
    flylora_k: int = 8
    flylora_sparsity: Optional[float] = None              # rho = nonzeros per A row / d_in; None = k/r
    flylora_nonzeros: Optional[int] = None                # overrides flylora_sparsity when set
    flylora_bias_lr: float = 1e-3                         # u in d += u * sign(mean(c) - c)
    # Initial-B warm start (Sec. IV-F)
    init_b_from: Optional[str] = None                     # converged zipper-soft/-hard adapter file
    init_router_from: Optional[str] = None                # adapter file to take routers from
    init_a_from_b_file: bool = False                      # also copy shared A (not in the paper)
    # mole (LoRA language experts, arXiv 2506.21555; see zlora/adapters/mole.py)
    mole_experts: list[str] = field(default_factory=list)  # one `lora` adapter file per language
    mole_fused: str = ""                                   # regex: wrapped layers whose experts are fused
    mole_fusion: Literal["output", "weights"] = "output"   # fuse the experts' outputs or their A/B
    mole_lid_tap: Optional[str] = None                    # module whose output feeds the LID MLP
    mole_lid_hidden: int = 256                            # hidden width of the LID MLP
    mole_lid_loss_weight: float = 1.0                     # weight of the LID cross-entropy in the loss

    def __post_init__(self) -> None:
        self._check_basic()
        self._check_kind_specific()

    def _check_basic(self) -> None:
        if self.kind not in KINDS + EXTRA_KINDS:
            raise ValueError(f"adapter kind {self.kind!r} unknown; known: {', '.join(KINDS + EXTRA_KINDS)}")
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(set(self.languages)) != len(self.languages):
            dups = sorted({c for c in self.languages if self.languages.count(c) > 1})
            raise ValueError(f"languages has duplicates: {', '.join(dups)}")
        if not self.languages and self.kind not in LANGUAGE_FREE_KINDS:
            raise ValueError(f"adapter kind {self.kind!r} needs a non-empty 'languages' list")

    def _check_kind_specific(self) -> None:
        if self.kind in ROUTED_KINDS and self.lid_embeddings is None:
            raise ValueError(f"adapter kind {self.kind!r} needs lid_embeddings (router input)")
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau must be in (0, 1), got {self.tau}")
        if self.kind == "flylora" and not 1 <= self.flylora_k <= self.rank:
            raise ValueError(f"flylora_k must be in [1, rank={self.rank}], got {self.flylora_k}")
        if self.flylora_sparsity is not None and not 0.0 < self.flylora_sparsity <= 1.0:
            raise ValueError(f"flylora_sparsity must be in (0, 1], got {self.flylora_sparsity}")
        if self.flylora_nonzeros is not None and self.flylora_nonzeros < 1:
            raise ValueError(f"flylora_nonzeros must be >= 1, got {self.flylora_nonzeros}")
        r_s = self.static_shared_rank
        if not 0 <= r_s <= self.rank:
            raise ValueError(f"zipper_static_shared_rank must be in [0, rank={self.rank}], got {r_s}")
        if self.init_router_from is not None and self.kind not in ROUTED_KINDS:
            raise ValueError(f"init_router_from needs a routed kind {ROUTED_KINDS}, not {self.kind!r}")
        if self.mole_experts and len(self.mole_experts) != len(self.languages):
            raise ValueError(f"mole_experts has {len(self.mole_experts)} files but languages has "
                             f"{len(self.languages)}: give one expert file per language, same order")
        if self.init_b_from is not None and self.kind == "flylora":
            raise ValueError("init_b_from is not supported for flylora: its A is a frozen random "
                             "projection, so B from another adapter has no matching subspace")

    @property
    def scaling(self) -> float:
        """alpha / r (Eq. 7-10)."""
        return self.alpha / self.rank

    @property
    def static_shared_rank(self) -> int:
        """r_s of zipper-static; the paper's example splits r=32 into 16 + 16."""
        if self.zipper_static_shared_rank is None:
            return self.rank // 2
        return self.zipper_static_shared_rank

    def flylora_nonzeros_for(self, d_in: int) -> int:
        """Non-zeros per row of FlyLoRA's sparse A: p = rho * d_in (authors' default rho = k/r)."""
        if self.flylora_nonzeros is not None:
            return min(self.flylora_nonzeros, d_in)
        rho = self.flylora_sparsity if self.flylora_sparsity is not None else self.flylora_k / self.rank
        return max(1, min(d_in, int(math.floor(d_in * rho))))

    def to_metadata(self) -> str:
        """JSON for safetensors metadata; embedded LID tensors are stored in the file, not here."""
        data: dict[str, Any] = dataclasses.asdict(self)
        if isinstance(self.lid_embeddings, dict):
            data["lid_embeddings"] = "<embedded tensors>"
        return json.dumps(data, sort_keys=True)


def load_lid_embeddings(cfg: AdapterConfig) -> torch.Tensor:
    """(L, d_lid) float32 LID embeddings in ``cfg.languages`` order, centred if ``cfg.center_lid``."""
    src = cfg.lid_embeddings
    where = "adapter.lid_embeddings"
    if isinstance(src, (str, os.PathLike)):
        from safetensors.torch import load_file

        if not os.path.isfile(src):
            raise FileNotFoundError(f"{where}: LID embedding file {src!r} does not exist")
        src, where = load_file(str(src)), str(src)
    if not isinstance(src, dict):
        raise ValueError(f"{where}: expected a path or a dict of tensors, got {type(src).__name__}")
    missing = [c for c in cfg.languages if c not in src]
    if missing:
        raise ValueError(f"{where}: no LID embedding for language(s) {', '.join(missing)} "
                         f"(has: {', '.join(sorted(src))})")
    rows = [torch.as_tensor(src[c]).detach().float().reshape(-1) for c in cfg.languages]
    dims = {r.numel() for r in rows}
    if len(dims) != 1:
        raise ValueError(f"{where}: LID embeddings have different sizes {sorted(dims)}")
    emb = torch.stack(rows)
    if cfg.center_lid:
        # Mean over the configured languages (the router only ever sees these).
        emb = emb - emb.mean(dim=0, keepdim=True)
    return emb
