"""Typed configuration of the Speech-LLM (yaml section ``model:``), paper §III-A, §IV-F and §V-B.

One dataclass per component, loaded with :func:`zlora.config.from_dict`, so a misspelled key fails
with its name. Example (tiny, from scratch)::

    encoder: {config: {d_model: 64, encoder_layers: 2, encoder_attention_heads: 2,
                       encoder_ffn_dim: 128, num_mel_bins: 80, max_source_positions: 1500}}
    projector: {}
    llm: {config: {model_type: qwen3, hidden_size: 64, ...}, tokenizer: data/lang/bpe.model}
    llm_lora: {enabled: false}
"""
from __future__ import annotations

from dataclasses import dataclass, field

from zlora.config import ConfigError

# Whisper's log-mel runs at 100 frames per second (hop 160 at 16 kHz).
MEL_FRAMES_PER_SECOND = 100

# Target regexes are matched with re.fullmatch against module names (zlora.adapters' rule).
# Every nn.Linear of a Whisper encoder layer: attention q/k/v/out and the FFN (paper §V-B).
DEFAULT_ENCODER_ADAPTER_TARGETS = r"layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)"
# Every linear layer of a Llama/Qwen-style decoder block (attention and MLP), paper §V-B.
DEFAULT_LLM_LORA_TARGETS = r"(.*\.)?layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


@dataclass
class EncoderConfig:
    """Whisper encoder: from a local HF checkpoint dir (``whisper_dir``) or a WhisperConfig dict."""
    kind: str = "whisper"                 # encoder implementation (zlora.models.registry)
    whisper_dir: str | None = None        # local Hugging Face Whisper checkpoint dir
    config: dict | None = None            # WhisperConfig kwargs for a from-scratch encoder
    n_mels: int = 80                      # log-mel bins of the input features (large-v3: 128)
    attn_implementation: str = "sdpa"     # eager | sdpa
    chunked: bool = False                 # §IV-F segment-wise encoding
    # chunked training: each utterance's chunk duration is drawn from these (seconds)
    train_chunk_seconds: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    decode_chunk_seconds: float = 8.0     # chunk duration when decoding chunked (seconds)
    chunk_seed: int = 0                   # seeds chunk sampling when the batch carries none
    cached_layers: int = 0                # bottom layers precomputed by zlora.bin.dump_encoder
    stage1_trainable: bool = True         # paper: stage 1 trains the encoder; false = frozen
    # Pieces (rows, or chunks) are encoded in <= max_groups length groups, the fewest reaching
    # real/computed frames >= group_target (zlora.models.pieces); max_groups 1 = one padded batch.
    max_groups: int = 8
    group_target: float = 0.95            # see max_groups
    # Full-context rows longer than Whisper's 30-s window: "error", or "chunk" them with
    # decode_chunk_seconds (decoding sets this: it never skips an utterance).
    long_inputs: str = "error"
    activation_checkpointing: bool = False   # recompute each encoder layer in backward

    def __post_init__(self):
        if (self.whisper_dir is None) == (self.config is None):
            raise ConfigError("model.encoder: give exactly one of whisper_dir (a local Hugging Face "
                              "checkpoint dir) or config (WhisperConfig keyword arguments)")
        if self.cached_layers < 0:
            raise ConfigError(f"model.encoder.cached_layers: must be >= 0, got {self.cached_layers}")
        if self.chunked and self.cached_layers > 0:
            raise ConfigError(
                "model.encoder: chunked=true cannot be combined with cached_layers>0: a cache of the "
                "bottom layers is computed once per utterance with full context, but chunked training "
                "samples a new chunk duration every step, so no cache can match the chunks; use "
                "chunked encoding without a cache, or a cache without chunking")
        for sec in [*self.train_chunk_seconds, self.decode_chunk_seconds]:
            chunk_frames(sec, "model.encoder")
        if not self.train_chunk_seconds:
            raise ConfigError("model.encoder.train_chunk_seconds: must not be empty")
        if self.max_groups < 1 or not 0.0 < self.group_target <= 1.0:
            raise ConfigError("model.encoder: max_groups must be >= 1 and group_target in (0, 1]")
        if self.long_inputs not in ("error", "chunk"):
            raise ConfigError(f"model.encoder.long_inputs: must be error or chunk, got {self.long_inputs!r}")


def chunk_frames(seconds: float, where: str = "chunk_seconds") -> int:
    """Mel frames of one chunk; must be a positive even count so chunks align with the 2x conv."""
    frames = round(seconds * MEL_FRAMES_PER_SECOND)
    if frames <= 0 or frames % 2 or abs(frames - seconds * MEL_FRAMES_PER_SECOND) > 1e-3:
        raise ConfigError(f"{where}: chunk duration {seconds} s is not a positive multiple of 0.02 s "
                          "(an even number of 10-ms mel frames)")
    return frames


@dataclass
class ProjectorConfig:
    """Modality projector: ``kind`` names a registered projector (zlora.models.registry.PROJECTORS;
    the paper's is gated_conv, §V-B), ``conf`` its keyword options, checked against that
    projector's ``Options`` dataclass and completed with its defaults (so a saved config states
    every value), e.g. ``{kind: gated_conv, conf: {downsample: 4, hidden_size: null}}``."""
    kind: str = "gated_conv"              # projector implementation (zlora.models.registry)
    conf: dict = field(default_factory=dict)   # its options, e.g. downsample 4 (12.5 Hz), hidden_size

    def __post_init__(self):
        from zlora.models.projector import resolve_projector_conf

        self.conf = resolve_projector_conf(self.kind, self.conf)

    @classmethod
    def migrate_config(cls, data: dict, where: str = "model.projector") -> dict:
        """The older form, ``{kind: gated_conv, downsample: 4, hidden_size: null}`` (recipe YAMLs,
        and the EXP/config.yaml of earlier runs, which stage 2 and decoding read back): gated_conv's
        options at the top level, moved into ``conf``."""
        old = {k: data[k] for k in ("downsample", "hidden_size") if k in data}
        if not old:
            return data
        kind = data.get("kind", "gated_conv")
        if kind != "gated_conv":
            raise ConfigError(f"{where}: top-level {', '.join(old)} is gated_conv's older form; give "
                              f"projector {kind}'s options under {where}.conf")
        conf = data.get("conf") or {}
        if not isinstance(conf, dict):
            return data                   # from_dict reports conf's type
        conf = dict(conf)
        for key, value in old.items():
            if conf.get(key, value) != value:
                raise ConfigError(f"{where}: {key} given twice ({value} at the top level, the older "
                                  f"form, and {conf[key]} under conf); give it once, under conf")
            conf[key] = value
        return {**{k: v for k, v in data.items() if k not in old}, "conf": conf}


@dataclass
class LLMConfig:
    """Decoder-only LLM: from a local HF dir (tokenizer from the dir) or a config dict."""
    model_dir: str | None = None          # local Hugging Face LLM dir (weights and tokenizer)
    config: dict | None = None            # AutoConfig.for_model kwargs incl. model_type (e.g. qwen3)
    tokenizer: str | None = None          # sentencepiece .model for a from-scratch config
    dtype: str = "float32"                # float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"     # eager | sdpa (packing works with both; tested)
    trainable: bool = False               # train the whole LLM (from-scratch LLMs); paper: frozen
    activation_checkpointing: bool = False   # recompute each decoder layer in backward

    def __post_init__(self):
        if (self.model_dir is None) == (self.config is None):
            raise ConfigError("model.llm: give exactly one of model_dir (a local Hugging Face dir) "
                              "or config (with model_type) plus tokenizer")
        if self.config is not None:
            if "model_type" not in self.config:
                raise ConfigError("model.llm.config: needs model_type (e.g. qwen3)")
            if self.tokenizer is None:
                raise ConfigError("model.llm.tokenizer: a from-scratch LLM config needs a "
                                  "sentencepiece model (python -m zlora.bin.train_tokenizer)")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.llm.dtype: must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class LLMLoRAConfig:
    """Plain LoRA on the LLM (§IV-F), through zlora.adapters kind ``lora`` (Eq. 7)."""
    enabled: bool = True                  # false: no LLM-LoRA (the LLM stays as loaded)
    rank: int = 32                        # LoRA rank r
    alpha: float = 64.0                   # LoRA scaling alpha (update scaled by alpha / r)
    dropout: float = 0.0                  # dropout on the LoRA branch's input
    # regex matched with re.fullmatch against module names; default: every linear of every block
    target_modules: str = DEFAULT_LLM_LORA_TARGETS


@dataclass
class SpeechLLMConfig:
    """The Speech-LLM (§III-A): Whisper encoder -> projector -> LLM, with LoRA on the LLM."""
    encoder: EncoderConfig
    llm: LLMConfig
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm_lora: LLMLoRAConfig = field(default_factory=LLMLoRAConfig)
    prompts_file: str | None = None       # default: zlora/resources/prompts.yaml
    # Auxiliary CTC on the projected speech tokens, read through the LLM's output embedding (blank =
    # the pad piece), added to the loss with this weight while training. NOT in the paper (0 = off,
    # the paper's setting): a from-scratch demo LLM learns to read the speech much sooner with it.
    ctc_weight: float = 0.0
