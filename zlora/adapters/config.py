"""AdapterConfig: the YAML ``adapter:`` section (typed; unknown keys fail via zlora.config.from_dict).

Common options are fields; a kind's own options live under ``conf`` and are checked against
that kind's options dataclass (zlora.adapters.registry), in the manner of ESPnet's ``*_conf``::

    adapter:
      kind: zipper-soft
      rank: 32
      alpha: 64
      conf: {lid_embeddings: exp/lid/lid.safetensors, router_per_layer: true}

Configs and adapter files written before ``conf`` existed used flat, prefixed keys
(``flylora_k: 8``, ``lid_embeddings: ...``); :meth:`AdapterConfig.migrate_config` maps each kind's
old keys into ``conf``. Old keys of *other* kinds are dropped there, as they were ignored before
(recipes set ``lid_embeddings`` for every method).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from zlora.config import ConfigError, from_dict


@dataclass
class AdapterConfig:
    """Everything that defines an encoder adapter; ``languages`` order defines language indices.

    ``init_b_from`` / ``init_router_from`` / ``init_a_from_b_file``: Initial-B warm start (Sec.
    IV-F) from a converged zipper-soft/-hard adapter file; each kind declares how its B banks load
    (``KindSpec.initial_b``). ``conf``: the kind's own options (``cfg.options`` is the typed
    instance).
    """

    kind: str = "lora"                                     # the adapter kind (zlora.adapters.registry)
    rank: int = 32                                         # LoRA rank r
    alpha: float = 64.0                                    # scaling: update x alpha / r
    # order = language indices; in a training config it defaults to the top-level languages
    languages: list[str] = field(default_factory=list)
    # Regex matched with re.fullmatch against qualified module names (like PEFT's string form);
    # every matching nn.Linear is wrapped.
    target_modules: str = r".*"
    dropout: float = 0.0                                   # dropout on the adapter branch's input
    seed: int = 0                                          # seeds the adapters' initialisation
    init_b_from: Optional[str] = None                     # converged zipper-soft/-hard adapter file
    init_router_from: Optional[str] = None                # adapter file to take routers from
    init_a_from_b_file: bool = False                      # also copy shared A (not in the paper)
    conf: dict = field(default_factory=dict)              # the kind's options (its dataclass)

    def __post_init__(self) -> None:
        from zlora.adapters.registry import kind_spec

        try:
            self._spec = kind_spec(self.kind)
        except ValueError as e:
            raise ConfigError(f"adapter.kind: {e}") from None
        self._check_basic()
        self.options = from_dict(self._spec.options, dict(self.conf), f"adapter.conf ({self.kind})")
        check = getattr(self.options, "check", None)
        if check is not None:
            check(self)
        if self.init_b_from is not None and self._spec.initial_b is None:
            raise ConfigError(f"init_b_from is not supported for {self.kind}")
        if self.init_router_from is not None and not self._spec.routed:
            raise ConfigError(f"init_router_from needs a routed kind, not {self.kind!r}")

    def _check_basic(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(set(self.languages)) != len(self.languages):
            dups = sorted({c for c in self.languages if self.languages.count(c) > 1})
            raise ConfigError(f"languages has duplicates: {', '.join(dups)}")
        if not self.languages and not self._spec.language_free:
            raise ConfigError(f"adapter kind {self.kind!r} needs a non-empty 'languages' list")

    # ---- kind information -------------------------------------------------------------------
    @property
    def spec(self):
        """The kind's KindSpec (zlora.adapters.registry)."""
        return self._spec

    @property
    def scaling(self) -> float:
        """alpha / r (Eq. 7-10)."""
        return self.alpha / self.rank

    # ---- old spellings --------------------------------------------------------------------------
    @classmethod
    def migrate_config(cls, data: dict, where: str = "adapter") -> dict:
        """Flat pre-``conf`` keys -> ``conf`` (see the module docstring). Unknown keys are left
        for from_dict to reject."""
        from zlora.adapters.registry import ADAPTER_KINDS, kind_spec

        own = {f.name for f in dataclasses.fields(cls)}
        flat = {k: v for k, v in data.items() if k not in own}
        if not flat:
            return data
        try:
            legacy = kind_spec(data.get("kind", "lora")).legacy
        except ValueError:
            return data                  # the unknown kind is reported by __post_init__
        any_kind = {k for _, s in ADAPTER_KINDS.items() for k in s.legacy}
        out = {k: v for k, v in data.items() if k in own or k not in any_kind}
        conf = dict(out.get("conf") or {})
        for key, value in flat.items():
            if key in legacy:
                conf.setdefault(legacy[key], value)
        if conf:
            out["conf"] = conf
        return out

    @classmethod
    def make(cls, **kwargs: Any) -> "AdapterConfig":
        """Build from keyword arguments, old flat option names included (tests, old code)."""
        return cls(**cls.migrate_config(kwargs))

    def to_metadata(self) -> str:
        """JSON for safetensors metadata; embedded LID tensors are stored in the file, not here."""
        data: dict[str, Any] = dataclasses.asdict(self)
        data["conf"] = {k: ("<embedded tensors>" if isinstance(v, dict) and v and
                            all(isinstance(t, torch.Tensor) for t in v.values()) else v)
                        for k, v in dataclasses.asdict(self.options).items()}
        return json.dumps(data, sort_keys=True, default=str)


def read_lid_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """{lang: (d_lid,)} from a safetensors file; anything else (a text file, a pickle, a truncated
    file, NaN) is a ConfigError naming the file and the command that writes it."""
    from zlora.utils.io import CheckpointError, load_tensors

    try:
        return load_tensors(path, "LID embeddings")
    except CheckpointError as e:
        raise ConfigError(f"adapter.conf.lid_embeddings: {e}; write it with python -m zlora.bin.extract_lid") from None


def load_lid_embeddings(cfg: AdapterConfig) -> torch.Tensor:
    """(L, d_lid) float32 LID embeddings in ``cfg.languages`` order, centred if ``center_lid``.

    Reads ``cfg.options.lid_embeddings``: a safetensors path {lang: (d_lid,)} or such a dict.
    """
    opts = cfg.options
    src = opts.lid_embeddings
    where = "adapter.conf.lid_embeddings"
    if isinstance(src, (str, os.PathLike)):
        if not os.path.isfile(src):
            raise FileNotFoundError(f"{where}: LID embedding file {src!r} does not exist")
        src, where = read_lid_file(src), str(src)
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
    if opts.center_lid:
        # Mean over the configured languages (the router only ever sees these).
        emb = emb - emb.mean(dim=0, keepdim=True)
    return emb
