"""The training configuration (``python -m zlora.bin.train --config conf/x.yaml``): one dataclass per
YAML section, loaded with :func:`zlora.config.from_dict`, so a misspelled key or a wrong type fails
with its name before anything is built.

Example (stage 2, Zipper-LoRA-Soft, paper §IV-F / §V-B; every key not shown has the default)::

    exp_dir: exp/zipper_soft
    stage: 2                          # 1: encoder + projector + LLM-LoRA; 2: + encoder adapters
    init_from: exp/stage1             # stage-1 exp dir (uses its final/) or .../checkpoints/step-N
    languages: [en, fr, ja]           # order = language indices
    seed: 0
    model: {encoder: {whisper_dir: models/whisper}, llm: {model_dir: models/llm}}  # SpeechLLMConfig
    adapter:                          # AdapterConfig; languages default to the list above
      kind: zipper-soft
      rank: 32
      alpha: 64
      conf: {lid_embeddings: exp/lid.safetensors}   # the kind's own options (zlora.adapters.registry)
      init_b_from: null               # Initial-B: EXP/final/adapter.safetensors of a zipper-soft run
    data:
      train: data/train               # Kaldi data dir (text, utt2lang, utt2spk; utt2dur optional)
      feats_type: dumped              # or raw: audio (dump_audio shards or wav.scp), log-mel on the device
      train_feats: dump/train/feats.scp   # dump_feats (mel) / dump_encoder (cached layers) output;
                                      # raw: dump_audio's audio.scp, or null for data/train/wav.scp
      valid: data/dev                 # optional, with valid_feats
      valid_feats: dump/dev/feats.scp
      max_tokens: 2048                # per pack: speech tokens + prompt + transcript + eos
      batch_size: 16                  # packs per rank per micro-step
      sampling: proportional          # or temperature (p_l ∝ n_l^(1/T))
      temperature: 1.0
      max_duration: 30.0              # seconds; longer training utterances skipped and counted
      num_workers: 2
    optim: {lr: 2.0e-5, betas: [0.9, 0.999], weight_decay: 0.01, warmup_ratio: 0.1,
            scheduler: cosine, grad_accum: 1, clip_grad: 1.0, max_steps: 20000, epochs: null}
    engine: {engine: deepspeed, deepspeed_config: conf/deepspeed/zero2.json, bf16: true,
             timeout_s: 1800}
    checkpoint: {every_n_steps: 1000, keep_last: 2}
    log_every: 10
    resume: false                     # true: continue from EXP/checkpoints/latest

:func:`check_config` adds the checks that need files (languages with prompts, init_from,
Initial-B files, the DeepSpeed JSON), all run before any process group or model exists.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from zlora.adapters.config import AdapterConfig
from zlora.config import ConfigError, check_overrides, deep_merge, from_dict, parse_overrides, read_yaml
from zlora.models.assembly import resolve_init_from
from zlora.models.config import SpeechLLMConfig
from zlora.train.distill import DistillConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DataConfig:
    """Kaldi data dirs plus their inputs: dumped features (mel from dump_feats, or encoder states
    from dump_encoder when ``model.encoder.cached_layers > 0``) or raw audio (log-mel computed on
    the model's device, zlora.data.frontend)."""
    train: str                          # Kaldi data dir (text, utt2lang, utt2spk; utt2dur optional)
    # dumped: its feats.scp (dump_feats mel or dump_encoder states); raw: dump_audio's audio.scp
    # (FLAC shards, read sequentially), or null = the data dir's wav.scp + segments
    train_feats: str | None = None
    valid: str | None = None            # validation data dir (optional; dumped: with valid_feats)
    valid_feats: str | None = None      # its feats.scp (dumped) or audio.scp (raw; null = its wav.scp)
    # dumped: train on the feature dump; raw: read audio (lengths from utt2num_samples or utt2dur,
    # never by decoding files) and compute Whisper log-mel in the training step, on the device
    feats_type: Literal["raw", "dumped"] = "dumped"
    # raw audio in shards (dump_audio): packs are built within runs of this many consecutive
    # utterances of one shard, and an epoch reads each run's packs together, so reads go forward
    # through one stretch of a shard instead of seeking per utterance; 0 = pack globally, any order
    shard_block_utts: int = 512
    token_cache: bool = True            # keep transcript tokens in <data dir>/.tokens/ (reused while
                                        # the text and the tokenizer are unchanged)
    # §V-B: a pack (one LLM row) holds speech tokens + prompt + transcript + eos of several
    # same-language utterances, at most this many tokens.
    max_tokens: int = 2048
    batch_size: int = 16                # packs per rank per micro-step (§V-B: 16 chunked, 10 not)
    sampling: Literal["proportional", "temperature"] = "proportional"   # how languages are mixed
    temperature: float = 1.0            # p_l ∝ n_l^(1/T) when sampling: temperature (T>1 flattens)
    max_duration: float | None = 30.0   # seconds; longer training utterances are skipped + counted
    # DataLoader worker processes (0: in the training process); persistent across epochs, with
    # pinned batches on CUDA
    num_workers: int = 0
    check_finite: bool = True           # NaN/Inf in a feature matrix is an error naming the utt

    @classmethod
    def migrate_config(cls, data: dict, where: str) -> dict:
        """Called by from_dict with the key's location: train_feats is required only for dumped
        features, and the error names the file like any missing key."""
        if data.get("feats_type", "dumped") == "dumped" and data.get("train_feats") is None:
            raise ConfigError(f"{where}.train_feats: required key is missing (the feats.scp of data.train "
                              "with feats_type dumped; python -m zlora.bin.dump_feats writes it)")
        return data

    def __post_init__(self):
        if self.max_tokens < 1 or self.batch_size < 1:
            raise ConfigError("data.max_tokens and data.batch_size must be >= 1")
        if not self.temperature > 0:
            raise ConfigError(f"data.temperature must be > 0, got {self.temperature}")
        if self.feats_type == "dumped":
            if self.train_feats is None:
                raise ConfigError("data.train_feats: required key is missing (the feats.scp of data.train, "
                                  "with data.feats_type: dumped; python -m zlora.bin.dump_feats writes it)")
            if (self.valid is None) != (self.valid_feats is None):
                raise ConfigError("data.valid and data.valid_feats go together (give both or neither)")
        elif self.valid_feats is not None and self.valid is None:
            raise ConfigError("data.valid_feats needs data.valid (the data dir it belongs to)")
        if self.num_workers < 0 or self.shard_block_utts < 0:
            raise ConfigError("data.num_workers and data.shard_block_utts must be >= 0")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay (§V-B: lr 2e-5, warmup 10 %, cosine)."""
    lr: float = 2e-5                    # peak learning rate, reached after the warmup
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])   # AdamW beta1, beta2
    eps: float = 1e-8                   # AdamW epsilon
    weight_decay: float = 0.01          # not applied to biases and norms (tensors with ndim < 2)
    warmup_ratio: float = 0.1           # linear warmup over this share of the optimizer steps
    scheduler: Literal["cosine", "constant"] = "cosine"   # after the warmup: decay or keep lr
    min_lr_ratio: float = 0.0           # cosine decays to lr * min_lr_ratio
    grad_accum: int = 1                 # micro-steps (batches) per optimizer step
    clip_grad: float = 1.0              # max global grad norm; 0 disables clipping
    max_steps: int | None = None        # optimizer steps; with epochs too, whichever comes first
    epochs: int | None = None           # passes over the training data

    def __post_init__(self):
        if self.max_steps is None and self.epochs is None:
            raise ConfigError("optim: give max_steps or epochs (or both: the first reached ends training)")
        if (self.max_steps is not None and self.max_steps < 1) or (self.epochs is not None and self.epochs < 1):
            raise ConfigError("optim.max_steps and optim.epochs must be >= 1")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: expected two numbers, got {self.betas}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.grad_accum < 1 or self.clip_grad < 0 or self.lr <= 0:
            raise ConfigError("optim: grad_accum >= 1, clip_grad >= 0 and lr > 0 are required")


@dataclass
class EngineConfig:
    """How the model is trained across processes: torch DDP or DeepSpeed ZeRO, and in which precision."""
    engine: Literal["ddp", "deepspeed"] = "deepspeed"   # ddp: torch DistributedDataParallel
    # Relative paths are looked up in the working directory, then in the zlora repository root.
    deepspeed_config: str = "conf/deepspeed/zero2.json"
    # bf16 compute (DDP: autocast over float32 parameters; DeepSpeed: bf16 parameters + float32
    # master weights), on any device, CPU included; null = bf16 on CUDA, float32 on CPU.
    bf16: bool | None = None
    backend: str | None = None          # default: nccl on GPU, gloo on CPU
    timeout_s: float = 1800.0           # collective timeout: a dead rank ends the run with an error
    find_unused_parameters: bool = False  # DDP only; adapters keep every bank used (stacked tensors)
    # DeepSpeed JIT-compiles a shared-memory all-reduce op on CPU (~65-110 s on first use) that only
    # tensor-parallel *inference* uses (deepspeed.comm.inference_all_reduce); ZeRO training never
    # calls it, so by default it is not built.
    deepspeed_shm_comm: bool = False
    # Dense bf16 peak of one device for the logged MFU; null = from the GPU's name (H100/H200,
    # A100, ...; zlora.train.telemetry), no MFU on a CPU.
    peak_tflops: float | None = None

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ConfigError(f"engine.timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class CheckpointConfig:
    """Resumable checkpoints in EXP/checkpoints/step-N/ (EXP/checkpoints/latest points to the newest)."""
    every_n_steps: int = 1000           # optimizer steps between checkpoints
    keep_last: int = 2                  # 0 keeps every checkpoint

    def __post_init__(self):
        if self.every_n_steps < 1 or self.keep_last < 0:
            raise ConfigError("checkpoint.every_n_steps must be >= 1 and keep_last >= 0")


@dataclass
class DebugConfig:
    """Diagnostics for distributed runs (off by default)."""
    log_utts: bool = False              # each rank appends "epoch batch utt" to EXP/debug/utts.rankR.txt
    dump_rank_params: bool = False      # each rank writes its trainable tensors at the end to
                                        # EXP/debug/params.rankR.safetensors (ranks must agree)


@dataclass
class TrainConfig:
    exp_dir: str                        # experiment dir: config, logs, checkpoints, final/
    languages: list[str]                # language codes; their order = the language indices
    model: SpeechLLMConfig
    data: DataConfig
    stage: int = 1                      # 1: encoder + projector + LLM-LoRA; 2: + encoder adapters
    adapter: AdapterConfig | None = None   # the encoder adapter (stage 2 only)
    init_from: str | None = None        # stage 2: stage-1 exp dir (its final/) or a checkpoints/step-N
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(max_steps=1000))
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0                       # seeds model init, data order and chunk sampling
    log_every: int = 10                 # log metrics (train.log, metrics.jsonl) every N optimizer steps
    resume: bool = False                # true: continue from EXP/checkpoints/latest
    progress_bar: bool = True           # tqdm bar on stderr (main rank)
    tensorboard: bool = True            # also write EXP/tensorboard/ (needs the tensorboard package)
    debug: DebugConfig = field(default_factory=DebugConfig)
    distill: DistillConfig | None = None      # LoRA-KD from language experts (zlora/train/distill.py)

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ConfigError(f"stage: must be 1 or 2, got {self.stage}")
        if not self.languages:
            raise ConfigError("languages: must list at least one language code")
        dups = sorted({c for c in self.languages if self.languages.count(c) > 1})
        if dups:
            raise ConfigError(f"languages: duplicate code(s) {', '.join(dups)}")
        if self.stage == 1 and self.adapter is not None:
            raise ConfigError("stage 1 has no encoder adapters (paper §IV-F); remove the adapter: "
                              "section or set stage: 2")
        if self.stage == 2 and self.adapter is None:
            raise ConfigError("stage 2 needs an adapter: section (the encoder adapter kind)")
        if self.stage == 2 and not self.init_from:
            raise ConfigError("stage 2 needs init_from: the stage-1 exp dir (paper §IV-F)")
        if self.adapter is not None and list(self.adapter.languages) != list(self.languages):
            raise ConfigError(f"adapter.languages {list(self.adapter.languages)} must equal languages "
                              f"{list(self.languages)} (same order: it defines the language indices)")
        if self.log_every < 1:
            raise ConfigError("log_every must be >= 1")
        if self.data.feats_type == "raw" and self.model.encoder.cached_layers > 0:
            raise ConfigError("data.feats_type: raw computes log-mel, but model.encoder.cached_layers > 0 "
                              "reads cached encoder states: use feats_type dumped with a dump_encoder cache")


def load_train_config(argv: Sequence[str]) -> TrainConfig:
    """``--config x.yaml --a.b v ...`` -> TrainConfig. ``adapter.languages`` defaults to
    ``languages`` so a config names its languages once."""
    path, overrides = parse_overrides(argv, TrainConfig)
    check_overrides(TrainConfig, overrides)     # blamed on the command line, not on the file
    data = deep_merge(read_yaml(path) if path else {}, overrides)
    where = str(path) if path else "config"
    adapter = data.get("adapter")
    if isinstance(adapter, dict):
        if "languages" not in adapter and "languages" in data:
            adapter = data["adapter"] = {**adapter, "languages": data["languages"]}
        # Built here first: through the Optional field a bad key would only say "expected
        # AdapterConfig | None"; this names the key (e.g. adapter.kind) and the allowed values.
        data["adapter"] = from_dict(AdapterConfig, adapter, f"{where}: adapter")
    return from_dict(TrainConfig, data, where)


def read_train_config(path: Path) -> TrainConfig:
    """The resolved config a run wrote (EXP/config.yaml, EXP/final/config.yaml)."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: config of the trained model does not exist")
    return from_dict(TrainConfig, read_yaml(path), str(path))


def resolve_repo_path(path: str, key: str) -> Path:
    """A config path: as given (relative to the working dir), else relative to the zlora repo."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        if not p.exists():
            raise ConfigError(f"{key}: {path} does not exist")
        return p
    alt = REPO_ROOT / p
    if alt.exists():
        return alt
    raise ConfigError(f"{key}: {path} does not exist (looked in {os.getcwd()} and {REPO_ROOT})")


def load_deepspeed_json(cfg: EngineConfig) -> dict:
    """The DeepSpeed JSON; an optimizer or scheduler in it is refused (the client AdamW and our
    schedule are used: a JSON optimizer would also JIT-compile fused_adam for ~90 s on CPU)."""
    path = resolve_repo_path(cfg.deepspeed_config, "engine.deepspeed_config")
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(ds, dict):
        raise ConfigError(f"{path}: top level must be an object")
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(f"{path}: remove the '{key}' section; zlora passes its own AdamW and "
                              "warmup-cosine schedule (configure them under optim:)")
    return ds


def check_config(cfg: TrainConfig) -> None:
    """Checks that read files; run before any training work (fails fast, names the key)."""
    from zlora.data.kaldi import KNOWN_LANGS
    from zlora.models.prompts import prompts_for

    unknown = [c for c in cfg.languages if c not in KNOWN_LANGS]
    if unknown:
        raise ConfigError(f"languages: unknown language code(s) {', '.join(unknown)} "
                          "(Whisper's codes: en, fr, zh, ja, ...)")
    prompts_for(list(cfg.languages), cfg.model.prompts_file)
    if cfg.stage == 2:
        resolve_init_from(cfg.init_from)
    for key in ("init_b_from", "init_router_from"):
        value = getattr(cfg.adapter, key, None) if cfg.adapter is not None else None
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"adapter.{key}: {value} does not exist (Initial-B takes the "
                              "EXP/final/adapter.safetensors of a finished zipper-soft run)")
    lid = getattr(getattr(cfg.adapter, "options", None), "lid_embeddings", None)
    if isinstance(lid, str) and not Path(lid).is_file():
        raise ConfigError(f"adapter.conf.lid_embeddings: {lid} does not exist "
                          "(python -m zlora.bin.extract_lid writes it)")
    if isinstance(lid, str):
        from zlora.adapters.config import read_lid_file

        read_lid_file(lid)              # a text file or a pickle: named now, not as a traceback later
    for key in ("train", "train_feats", "valid", "valid_feats"):
        value = getattr(cfg.data, key)
        if value is not None and not Path(value).exists():
            raise ConfigError(f"data.{key}: {value} does not exist")
    if cfg.engine.engine == "deepspeed":
        load_deepspeed_json(cfg.engine)
    from zlora.utils.io import check_outputs_apart

    check_outputs_apart({"exp_dir": cfg.exp_dir},
                        {f"data.{k}": getattr(cfg.data, k) for k in ("train", "train_feats", "valid", "valid_feats")}
                        | {"init_from": cfg.init_from})
