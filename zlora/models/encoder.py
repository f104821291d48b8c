"""Whisper speech encoder over variable-length log-mel (paper Eq. 1, §IV-F chunked mode).

transformers' ``WhisperEncoder.forward`` insists on 3000 mel frames (30 s); padding every utterance
to 30 s costs ~17x on CPU. So this module takes the HF encoder's parts (conv1, conv2, positional
table, layers, final LayerNorm) and runs them itself on unpadded batches with a key padding mask:

    mel (B, T, n_mels) --conv1/GELU--> --conv2(stride 2)/GELU--> (B, ceil(T/2), d)
        + embed_positions[:ceil(T/2)] --layers (key padding mask)--> layer_norm --> (B, T_enc, d)

Padding never leaks into valid frames: the mel is zeroed beyond each length (what conv1's own zero
padding sees when the utterance runs alone) and conv1's output is zeroed beyond the length before
conv2, so a batched utterance equals the same utterance encoded alone.

**Chunked mode (§IV-F).** Each utterance is split into fixed-duration chunks of ``chunk_frames``
mel frames (the last one shorter), every chunk is encoded independently as its own sequence --
its positional embeddings restart at 0, as for a separate utterance, which is what "encode each
segment independently using the same encoder" means -- and the chunk outputs are concatenated in
time order, without overlap. Chunk lengths are even, so a chunk of F frames yields exactly F/2
encoder frames and the concatenation has ceil(T/2) frames, the same as full-context encoding.

**Length groups.** Rows (full context) or chunks are "pieces"; the pieces of a batch are encoded
in a few groups of similar length (``max_groups``, ``group_target``; zlora.models.pieces), so a
1-s chunk is never padded to 8 s and a 3-s utterance never to 30 s. Each group is one padded
batch; ``frame_stats`` counts real and computed frames (the trainer logs their ratio).

**Cached bottom layers.** With ``cached_layers = N > 0`` the input is the hidden state after the
first N layers (written once by ``python -m zlora.bin.dump_encoder``, before the final LayerNorm);
only layers N.. and the final LayerNorm run, and the bottom part stays frozen.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from zlora.config import ConfigError
from zlora.models.config import MEL_FRAMES_PER_SECOND, EncoderConfig, chunk_frames
from zlora.adapters.checkpointing import enable_activation_checkpointing
from zlora.models.pieces import Pieces, gather_pieces, plan_groups, plan_pieces
from zlora.models.registry import ENCODERS
from zlora.models.stages import adapter_language_context, adapter_subset_routing, adapter_valid_tokens
from zlora.utils.cli import UserError


class InputTooLongError(UserError, ValueError):
    """Input longer than the full-context encoder's positional table (Whisper: 30 s). A UserError,
    so a CLI prints the one-line message; a ValueError for callers that catch the old type."""


class FrameStats:
    """Encoder-layer frames since the last ``take()``: real (valid), computed (each group padded
    to its longest piece) and attention work (sum of n x T^2 over groups). real / computed is the
    encoder padding efficiency."""

    def __init__(self):
        self.real = self.computed = self.attn = 0

    def add(self, real: int, n: int, t: int) -> None:
        self.real += real
        self.computed += n * t
        self.attn += n * t * t

    def take(self) -> tuple[int, int, int]:
        out = (self.real, self.computed, self.attn)
        self.real = self.computed = self.attn = 0
        return out


@ENCODERS.register("whisper")
class WhisperSpeechEncoder(nn.Module):
    """Whisper encoder over variable-length input; ``cfg`` is read at every forward."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        hf = load_whisper_encoder(cfg)
        self.cfg = cfg
        self.whisper_config = hf.config
        # Registered directly (not under an `hf.` prefix) so adapter regexes read `layers.3.fc1`.
        self.conv1, self.conv2 = hf.conv1, hf.conv2
        self.embed_positions = hf.embed_positions
        self.layers = hf.layers
        self.layer_norm = hf.layer_norm
        self.d_model = hf.config.d_model
        self.dropout = hf.config.dropout
        if cfg.cached_layers > len(self.layers):
            raise ConfigError(f"model.encoder.cached_layers={cfg.cached_layers} exceeds the encoder's "
                              f"{len(self.layers)} layers")
        self._chunk_rng = torch.Generator().manual_seed(cfg.chunk_seed)
        self.frame_stats = FrameStats()
        self.group_rows: torch.Tensor | None = None     # see _group
        self.group_batch_size = 0
        self.forward_count = 0                           # forwards so far (groups of one forward share it)
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(self.layers[cfg.cached_layers:])
        limit = 2 * self.embed_positions.num_embeddings
        too_long = [s for s in [*cfg.train_chunk_seconds, cfg.decode_chunk_seconds]
                    if chunk_frames(s) > limit]
        if cfg.chunked and too_long:
            raise ConfigError(f"model.encoder: chunk duration {too_long[0]} s exceeds the encoder's "
                              f"{limit / MEL_FRAMES_PER_SECOND:g} s window (2 x max_source_positions)")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def max_input_frames(self) -> int | None:
        """Longest input (rows of ``feats``) a forward accepts; None = no limit (chunked).

        Full-context encoding adds ``embed_positions[:ceil(T/2)]``, so a mel input may have at most
        2 * max_source_positions frames (Whisper: 3000 = 30 s); cached encoder states are already
        at the 2x-downsampled rate. Chunked encoding restarts positions per chunk: no limit.
        """
        if self.cfg.cached_layers > 0:
            return self.embed_positions.num_embeddings
        if self.cfg.chunked or self.cfg.long_inputs == "chunk":
            return None
        return 2 * self.embed_positions.num_embeddings

    def bottom_modules(self) -> list[nn.Module]:
        """Modules that never run when ``cached_layers > 0`` (their output is precomputed)."""
        n = self.cfg.cached_layers
        if n == 0:
            return []
        return [self.conv1, self.conv2, self.embed_positions, *self.layers[:n]]

    def output_lengths(self, n_frames: torch.Tensor) -> torch.Tensor:
        """Encoder frames for ``n_frames`` input frames: ceil(T/2) for mel (conv2 stride 2), chunked
        or not; unchanged for cached hidden states."""
        if self.cfg.cached_layers > 0:
            return n_frames.clone()
        return (n_frames + 1) // 2

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor,
                lang_ids: torch.Tensor | None = None,
                chunk_seconds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, D) mel (or cached states), feat_lens (B,), lang_ids (B,) for adapters,
        chunk_seconds (B,) optional -> hidden (B, T_enc, d), enc_lens (B,).

        Each row is cut into pieces (the whole row, or its chunks) and the pieces are encoded in
        groups of similar length (zlora.models.pieces), each group one padded batch with the
        adapters routed by its own rows' languages.
        """
        _check_lengths(feats, feat_lens)
        self._check_width(feats)
        self.forward_count += 1
        pieces = plan_pieces(feat_lens, self.piece_frames(feat_lens, chunk_seconds))
        with adapter_language_context(self, lang_ids):
            return self.encode_pieces(feats, feat_lens, pieces)

    def _check_width(self, feats: torch.Tensor) -> None:
        if self.cfg.cached_layers > 0:
            if feats.shape[-1] != self.d_model:
                raise ValueError(f"cached_layers={self.cfg.cached_layers}: expected cached encoder states "
                                 f"of width {self.d_model}, got features of width {feats.shape[-1]}")
        elif feats.shape[-1] != self.conv1.in_channels:
            raise ValueError(f"expected {self.conv1.in_channels}-bin log-mel features, got {feats.shape[-1]}")

    def piece_frames(self, feat_lens: torch.Tensor, chunk_seconds: torch.Tensor | None) -> torch.Tensor:
        """(B,) input frames per piece: the row's length (full context, one piece), or its chunk
        length. Full-context rows beyond the positional window are an error, or chunked with
        ``decode_chunk_seconds`` when ``long_inputs: chunk`` (decoding never skips an utterance)."""
        if self.cfg.cached_layers > 0:
            return feat_lens
        if self.cfg.chunked:
            return self.chunk_frames_for(feat_lens, chunk_seconds)
        limit = 2 * self.embed_positions.num_embeddings
        too_long = feat_lens > limit
        if not bool(too_long.any()):
            return feat_lens
        if self.cfg.long_inputs != "chunk":
            raise self._too_long(feat_lens)
        frames = chunk_frames(self.cfg.decode_chunk_seconds, "decode_chunk_seconds")
        return torch.where(too_long, torch.full_like(feat_lens, frames), feat_lens)

    def chunk_frames_for(self, feat_lens: torch.Tensor, chunk_seconds: torch.Tensor | None) -> torch.Tensor:
        """(B,) chunk length in mel frames: the batch's ``chunk_seconds`` when given (training
        batches carry them), else sampled from train_chunk_seconds in training mode, else
        ``decode_chunk_seconds``."""
        b = feat_lens.shape[0]
        if chunk_seconds is not None:
            secs = chunk_seconds.detach().double().cpu()
        elif self.training:
            choices = torch.tensor(self.cfg.train_chunk_seconds, dtype=torch.float64)
            secs = choices[torch.randint(len(choices), (b,), generator=self._chunk_rng)]
        else:
            secs = torch.full((b,), float(self.cfg.decode_chunk_seconds), dtype=torch.float64)
        frames = torch.tensor([chunk_frames(float(s), "chunk_seconds") for s in secs.tolist()],
                              dtype=torch.long)
        return frames.to(feat_lens.device)

    def encode_pieces(self, x: torch.Tensor, lens: torch.Tensor, pieces: Pieces) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode every piece, grouped by length, and lay the outputs back in time order:
        x (B, T, D) -> (B, T_enc, d), enc_lens (B,)."""
        cached = self.cfg.cached_layers > 0
        groups = plan_groups(pieces.length.tolist(), self.cfg.max_groups, self.cfg.group_target)
        enc_start = pieces.start if cached else pieces.start // 2     # chunk lengths are even
        rows, cols, values = [], [], []
        for g in groups:
            idx = torch.as_tensor(g, device=x.device)
            xg, lg = gather_pieces(x, pieces, idx)
            with adapter_subset_routing(self, pieces.utt[idx]), self._group(pieces.utt[idx], len(lens)):
                h, hl = (self.run_layers(xg, lg, self.cfg.cached_layers, None, final_norm=True) if cached
                         else self.encode(xg, lg))
            valid = torch.arange(h.shape[1], device=h.device)[None, :] < hl[:, None]
            rows.append(pieces.utt[idx][:, None].expand_as(valid)[valid])
            cols.append((enc_start[idx][:, None] + torch.arange(h.shape[1], device=h.device))[valid])
            values.append(h[valid])
            self.frame_stats.add(int(hl.sum()), h.shape[0], h.shape[1])
        out_lens = self.output_lengths(lens)
        out = values[0].new_zeros(lens.shape[0], int(out_lens.max()), values[0].shape[-1])
        return out.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(values)), out_lens

    @contextlib.contextmanager
    def _group(self, rows: torch.Tensor, batch_size: int):
        """While a group runs: ``group_rows`` (n,) = the input row of each group row, for hooks
        that report per input row (MoLE's classifier, layer-wise KD)."""
        self.group_rows, self.group_batch_size = rows, batch_size
        try:
            yield
        finally:
            self.group_rows = None

    def encode(self, mel: torch.Tensor, lens: torch.Tensor, n_layers: int | None = None,
               final_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-context encoding of mel (B, T, n_mels) -> (B, ceil(T/2), d), enc_lens."""
        x, enc_lens = self.embed(mel, lens)
        return self.run_layers(x, enc_lens, 0, n_layers, final_norm)

    def embed(self, mel: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv front end + positional embeddings: (B, T, n_mels) -> (B, ceil(T/2), d)."""
        t = mel.shape[1]
        mask = (torch.arange(t, device=mel.device)[None, :] < lens[:, None]).to(mel.dtype)
        x = (mel * mask[..., None]).transpose(1, 2)
        x = nn.functional.gelu(self.conv1(x)) * mask[:, None, :]
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        enc_lens = (lens + 1) // 2
        if x.shape[1] > self.embed_positions.num_embeddings:
            raise self._too_long(lens)
        x = x + self.embed_positions.weight[: x.shape[1]]
        return nn.functional.dropout(x, p=self.dropout, training=self.training), enc_lens

    def _too_long(self, lens: torch.Tensor) -> InputTooLongError:
        """The error for mel inputs (B, T) beyond 2 * max_source_positions frames, naming the
        rows (batch indices: the caller knows their utterance ids) and the limit."""
        n_pos = self.embed_positions.num_embeddings
        limit = 2 * n_pos
        rows = [i for i, n in enumerate(lens.tolist()) if n > limit]
        longest = int(lens.max())
        return InputTooLongError(
            f"batch row(s) {rows[:5]}{' ...' if len(rows) > 5 else ''}: input of up to {longest} mel "
            f"frames ({longest / MEL_FRAMES_PER_SECOND:.2f} s) exceeds the full-context encoder's limit "
            f"of {limit} frames ({limit / MEL_FRAMES_PER_SECOND:g} s = 2 x Whisper's "
            f"max_source_positions {n_pos}); use chunked encoding (model.encoder.chunked: true) or "
            "shorter segments")

    def run_layers(self, x: torch.Tensor, lens: torch.Tensor, start: int, stop: int | None,
                   final_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Layers [start, stop) with a key padding mask, then optionally the final LayerNorm."""
        mask = self._attention_mask(lens, x.shape[1], x.dtype)
        valid = torch.arange(x.shape[1], device=lens.device)[None, :] < lens[:, None]
        with adapter_valid_tokens(self, valid.reshape(-1)):
            for layer in self.layers[start:stop]:
                x = layer(x, mask)
        if final_norm:
            x = self.layer_norm(x)
        return x, lens

    def _attention_mask(self, lens: torch.Tensor, t: int, dtype: torch.dtype) -> torch.Tensor | None:
        """(B, 1, 1, T) key padding mask: boolean for sdpa, additive for eager; None if no padding."""
        valid = torch.arange(t, device=lens.device)[None, :] < lens[:, None]
        if bool(valid.all()):
            return None
        if self.whisper_config._attn_implementation == "sdpa":
            return valid[:, None, None, :]
        return torch.zeros(valid.shape, dtype=dtype, device=lens.device).masked_fill(
            ~valid, torch.finfo(dtype).min)[:, None, None, :]


def encode_bottom(encoder: WhisperSpeechEncoder, mel: torch.Tensor, lens: torch.Tensor,
                  n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states after the first ``n_layers`` layers (no final LayerNorm), full context.

    mel (B, T, n_mels), lens (B,) -> hidden (B, ceil(T/2), d), enc_lens (B,). This is what a model
    with ``cached_layers = n_layers`` takes as input.
    """
    if not 0 < n_layers <= encoder.n_layers:
        raise ValueError(f"n_layers must be in 1..{encoder.n_layers}, got {n_layers}")
    _check_lengths(mel, lens)
    return encoder.encode(mel, lens, n_layers=n_layers, final_norm=False)


def _check_lengths(x: torch.Tensor, lens: torch.Tensor) -> None:
    if x.dim() != 3 or lens.dim() != 1 or lens.shape[0] != x.shape[0]:
        raise ValueError(f"expected feats (B, T, D) and feat_lens (B,), got {tuple(x.shape)} and "
                         f"{tuple(lens.shape)}")
    if bool((lens <= 0).any()) or int(lens.max()) > x.shape[1]:
        raise ValueError(f"feat_lens must be in 1..{x.shape[1]}, got {lens.tolist()}")


# ---- loading -----------------------------------------------------------------------------------

def load_whisper_encoder(cfg: EncoderConfig):
    """HF ``WhisperEncoder`` from a local checkpoint dir or from WhisperConfig kwargs."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if cfg.config is not None:
        try:
            wcfg = WhisperConfig(**cfg.config)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.encoder.config: invalid WhisperConfig: {e}") from e
        wcfg._attn_implementation = cfg.attn_implementation
        _check_mels(wcfg, cfg, "model.encoder.config")
        return WhisperEncoder(wcfg)
    path = require_local_dir(cfg.whisper_dir, "model.encoder.whisper_dir",
                             "python -m zlora.bin.convert_whisper OUT_DIR")
    wcfg = WhisperConfig.from_pretrained(str(path))
    wcfg._attn_implementation = cfg.attn_implementation
    _check_mels(wcfg, cfg, str(path))
    enc = WhisperEncoder(wcfg)
    enc.load_state_dict(read_encoder_weights(path), strict=True)
    return enc


def _check_mels(wcfg, cfg: EncoderConfig, where: str) -> None:
    if wcfg.num_mel_bins != cfg.n_mels:
        raise ConfigError(f"{where}: the Whisper encoder takes {wcfg.num_mel_bins} mel bins but "
                          f"model.encoder.n_mels is {cfg.n_mels}")


def require_local_dir(path: str | None, key: str, hint: str) -> Path:
    """A model path must be an existing local directory: there is no hub access here."""
    p = Path(path or "")
    if not path or not p.is_dir():
        raise ConfigError(
            f"{key}: {path!r} is not a local directory. zlora loads models only from local "
            f"Hugging Face directories (no model hub access); create one first, e.g. {hint}")
    return p


def read_encoder_weights(path: Path) -> dict[str, torch.Tensor]:
    """Encoder tensors of a WhisperModel / WhisperForConditionalGeneration dir (safetensors only),
    reading only the encoder's keys (the decoder is never loaded)."""
    from safetensors import safe_open

    from zlora.models.whisper_files import weight_files

    out = {}
    for file in weight_files(path):         # model.safetensors, or the shards of its index
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                for prefix in ("model.encoder.", "encoder."):
                    if key.startswith(prefix):
                        out[key[len(prefix):]] = f.get_tensor(key)
    if not out:
        raise ConfigError(f"{path}: no encoder weights (keys model.encoder.* or encoder.*) found")
    return out


def encoder_fingerprint(encoder: WhisperSpeechEncoder, n_layers: int) -> str:
    """sha256 over the weights that produce the first ``n_layers`` outputs (for cache checks)."""
    import hashlib

    h = hashlib.sha256()
    mods = [encoder.conv1, encoder.conv2, encoder.embed_positions, *encoder.layers[:n_layers]]
    for m in mods:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    return ENCODERS.get(cfg.kind)(cfg)

