"""Reader for CTranslate2 ``model.bin`` files and the Whisper -> Hugging Face name mapping.

Written from the format description (binary version 6, little-endian), without CTranslate2:

    u32 binary_version | str spec_name | u32 spec_revision | u32 n_variables
    n_variables x ( str name | u8 rank | rank x u32 dims | u8 dtype | u32 n_bytes | bytes )
    u32 n_aliases | n_aliases x ( str alias | str target )

A ``str`` is a u16 length that counts a trailing NUL, the bytes, then that NUL. dtype ids:
0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. Scalars (e.g. ``encoder/num_heads``) are rank 0.

Only version 6 is accepted: older versions lay out dtypes and sizes differently and we have no
file to check them against, so we refuse rather than guess.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zlora.utils.cli import UserError

SUPPORTED_BINARY_VERSIONS = (6,)

# dtype id -> (name, numpy dtype used to view the bytes, torch dtype of the result)
DTYPES: dict[int, tuple[str, np.dtype, torch.dtype]] = {
    0: ("float32", np.dtype("<f4"), torch.float32),
    1: ("int8", np.dtype("i1"), torch.int8),
    2: ("int16", np.dtype("<i2"), torch.int16),
    3: ("int32", np.dtype("<i4"), torch.int32),
    4: ("float16", np.dtype("<f2"), torch.float16),
    # numpy has no bfloat16: view the bits as int16 and reinterpret them in torch.
    5: ("bfloat16", np.dtype("<i2"), torch.bfloat16),
}


class CT2FormatError(UserError):
    """A model.bin that does not follow the CTranslate2 layout (message names file and offset)."""


@dataclass
class CT2Model:
    """A parsed model.bin: variables by name (torch tensors, stored dtype) plus aliases."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.variables[self.resolve(name)]

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def resolve(self, name: str) -> str:
        """Follow aliases (e.g. a tied output projection) to the stored variable name."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise CT2FormatError(f"alias cycle through {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return name


class _Cursor:
    """Sequential little-endian reader over a bytes buffer; errors name the file and offset."""

    def __init__(self, buf: bytes | memoryview, where: str):
        self.buf = memoryview(buf)
        self.pos = 0
        self.where = where

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.where}: truncated while reading {what}: need {n} bytes at offset {self.pos}, "
                f"file has {len(self.buf)} bytes")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        n = self.u16(f"length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.where}: {what} at offset {self.pos - n} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise CT2FormatError(f"{self.where}: {what} at offset {self.pos - n} is not UTF-8: {e}") from None


def _read_variable(cur: _Cursor, index: int) -> tuple[str, torch.Tensor]:
    name = cur.string(f"name of variable {index}")
    what = f"variable {index} {name!r}"
    rank = cur.u8(f"rank of {what}")
    dims = [cur.u32(f"dim {i} of {what}") for i in range(rank)]
    type_id = cur.u8(f"dtype of {what}")
    if type_id not in DTYPES:
        raise CT2FormatError(f"{cur.where}: {what} has unknown dtype id {type_id} (known: {sorted(DTYPES)})")
    dtype_name, np_dtype, torch_dtype = DTYPES[type_id]
    n_bytes = cur.u32(f"byte count of {what}")
    expected = int(np.prod(dims, dtype=np.int64)) * np_dtype.itemsize
    if n_bytes != expected:
        raise CT2FormatError(
            f"{cur.where}: {what} declares {n_bytes} bytes but shape {dims} of {dtype_name} needs {expected}")
    raw = cur.take(n_bytes, f"data of {what}")
    arr = np.frombuffer(raw, dtype=np_dtype).reshape(dims).copy()
    tensor = torch.from_numpy(arr)
    if type_id == 5:
        tensor = tensor.view(torch.bfloat16)
    return name, tensor


def parse_ct2(buf: bytes | memoryview, where: str = "model.bin") -> CT2Model:
    """Parse a complete model.bin held in memory. ``where`` names it in error messages."""
    cur = _Cursor(buf, where)
    version = cur.u32("binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(
            f"{where}: CTranslate2 binary version {version} is not supported "
            f"(supported: {list(SUPPORTED_BINARY_VERSIONS)})")
    spec_name = cur.string("spec name")
    spec_revision = cur.u32("spec revision")
    n_vars = cur.u32("variable count")
    variables: dict[str, torch.Tensor] = {}
    for i in range(n_vars):
        name, tensor = _read_variable(cur, i)
        if name in variables:
            raise CT2FormatError(f"{where}: variable {name!r} appears twice")
        variables[name] = tensor
    aliases: dict[str, str] = {}
    for i in range(cur.u32("alias count")):
        alias = cur.string(f"alias {i}")
        aliases[alias] = cur.string(f"target of alias {alias!r}")
    if cur.pos != len(cur.buf):
        raise CT2FormatError(f"{where}: {len(cur.buf) - cur.pos} unexpected trailing bytes at offset {cur.pos}")
    model = CT2Model(version, spec_name, spec_revision, variables, aliases)
    for alias in aliases:
        if model.resolve(alias) not in variables:
            raise CT2FormatError(f"{where}: alias {alias!r} points to missing variable {aliases[alias]!r}")
    return model


def load_ct2(path: str | Path) -> CT2Model:
    """Read and parse a model.bin file."""
    path = Path(path)
    return parse_ct2(path.read_bytes(), where=str(path))


# --------------------------------------------------------------------------------------------
# Whisper: CTranslate2 WhisperSpec -> transformers WhisperForConditionalGeneration
# --------------------------------------------------------------------------------------------

_LN = {"gamma": "weight", "beta": "bias"}
_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
# Per-layer sub-module names; fused projections are handled in _split_fused.
_LAYER_MAP = {
    "self_attention/linear_1": "self_attn.out_proj",
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
    "ffn/layer_norm": "final_layer_norm",
}
_TOP_MAP = {
    "encoder/conv1": "model.encoder.conv1",
    "encoder/conv2": "model.encoder.conv2",
    "encoder/layer_norm": "model.encoder.layer_norm",
    "decoder/layer_norm": "model.decoder.layer_norm",
    "decoder/embeddings": "model.decoder.embed_tokens",
}
_POSITIONS = {
    "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
    "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
}
# Scalars that configure the model rather than hold weights.
_SCALARS = ("encoder/num_heads", "decoder/num_heads")
# Decoder options a transformers Whisper model hard-wires: CT2 must hold exactly these values
# (activation 3 is CTranslate2's ActivationType::GELU; Whisper is pre-norm, unscaled embeddings).
_FIXED_OPTIONS = {
    "decoder/activation": 3,
    "decoder/pre_norm": 1,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,
    "decoder/scale_alibi": 0,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
# CTranslate2's own alignment settings: the heads come from config.json's alignment_heads instead.
_IGNORED = ("decoder/alignment_heads", "decoder/alignment_layer")
# Fused projections: CT2 name -> HF projections stacked along rows, in order.
_FUSED = {
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}


def _split_fused(name: str, tensor: torch.Tensor, hf_prefix: str, parts: tuple[str, ...],
                 out: dict[str, torch.Tensor]) -> None:
    """Split a row-fused projection (q|k|v or k|v). HF's k_proj has no bias: CT2 stores zeros."""
    leaf = name.rsplit("/", 1)[1]
    chunks = tensor.chunk(len(parts), dim=0)
    if chunks[0].shape[0] * len(parts) != tensor.shape[0]:
        raise CT2FormatError(f"fused {name!r} has {tensor.shape[0]} rows, not divisible by {len(parts)}")
    for part, chunk in zip(parts, chunks):
        if part.endswith("k_proj") and leaf == "bias":
            if torch.count_nonzero(chunk) != 0:
                raise CT2FormatError(f"{name!r}: key bias is not zero, but HF's k_proj has no bias")
            continue
        out[f"{hf_prefix}.{part}.{leaf}"] = chunk.clone()


def whisper_ct2_to_hf(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """Map every stored WhisperSpec variable to its transformers name; unknown names are errors.

    Weights are used as stored (no query rescaling). ``proj_out`` is tied to ``embed_tokens`` by
    the HF config (tie_word_embeddings), so the alias ``decoder/projection/weight`` adds nothing.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in ct2.variables.items():
        if name in _SCALARS or name in _IGNORED:
            continue
        if name in _FIXED_OPTIONS:
            if int(tensor.item()) != _FIXED_OPTIONS[name]:
                raise CT2FormatError(f"{name} = {int(tensor.item())}: transformers' Whisper needs "
                                     f"{_FIXED_OPTIONS[name]}")
            continue
        if name in _POSITIONS:
            out[_POSITIONS[name]] = tensor
            continue
        module, leaf = name.rsplit("/", 1)
        if module in _TOP_MAP:
            out[f"{_TOP_MAP[module]}.{_LN.get(leaf, leaf)}"] = tensor
            continue
        m = _LAYER_RE.match(module)
        if m is None:
            raise CT2FormatError(f"unmapped Whisper variable {name!r}")
        side, idx, sub = m.groups()
        prefix = f"model.{side}.layers.{idx}"
        if sub in _FUSED:
            _split_fused(name, tensor, prefix, _FUSED[sub], out)
        elif sub in _LAYER_MAP:
            out[f"{prefix}.{_LAYER_MAP[sub]}.{_LN.get(leaf, leaf)}"] = tensor
        else:
            raise CT2FormatError(f"unmapped Whisper variable {name!r}")
    for alias, target in ct2.aliases.items():
        if (alias, target) != ("decoder/projection/weight", "decoder/embeddings/weight"):
            raise CT2FormatError(f"unexpected alias {alias!r} -> {target!r} (only a tied projection is supported)")
    if any(n.endswith("weight_scale") for n in ct2.variables):
        raise CT2FormatError("quantized (int8) CTranslate2 model: convert a float16/float32 model instead")
    return out


def whisper_dims(ct2: CT2Model) -> dict[str, int]:
    """WhisperConfig sizes read off the stored shapes (works for any Whisper size)."""
    def count_layers(side: str) -> int:
        idx = {int(m.group(2)) for n in ct2.variables if (m := _LAYER_RE.match(n)) and m.group(1) == side}
        if idx != set(range(len(idx))):
            raise CT2FormatError(f"{side} layer indices are not contiguous: {sorted(idx)}")
        return len(idx)

    for req in ("encoder/conv1/weight", "decoder/embeddings/weight", *_SCALARS, *_POSITIONS):
        if req not in ct2:
            raise CT2FormatError(f"not a Whisper model: variable {req!r} is missing (spec {ct2.spec_name!r})")
    d_model, n_mels, _ = ct2["encoder/conv1/weight"].shape
    return dict(
        d_model=int(d_model),
        num_mel_bins=int(n_mels),
        vocab_size=int(ct2["decoder/embeddings/weight"].shape[0]),
        encoder_layers=count_layers("encoder"),
        decoder_layers=count_layers("decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"].item()),
        decoder_attention_heads=int(ct2["decoder/num_heads"].item()),
        encoder_ffn_dim=int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(ct2["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(ct2["decoder/position_encodings/encodings"].shape[0]),
    )
