"""On-device log-mel for raw-audio batches (``data.feats_type: raw``), in one batched call.

A raw-audio batch carries ``wave`` (sum N_i,) float32 -- the utterances' 16-kHz samples back to
back, no padding, so a batch of mixed lengths costs its real size on the host and in the copy --
and ``wave_lens`` (B,). :func:`to_features` turns them into the model's ``feats`` (B, T_max,
n_mels) and ``feat_lens`` (B,) on the device the batch is on, with the computation of
:func:`zlora.data.features.log_mel`, row by row identical to calling it on each utterance alone
(test/data/test_frontend.py checks 1e-5):

- ``log_mel`` runs a centred STFT with *reflect* padding of each utterance's own ends. Zero-padding
  a batch would change the last frames of every shorter row, so each row is reflect-padded by
  n_fft/2 at its own length (one gather) and the STFT runs uncentred on the padded rows.
- The (max - 8) clamp takes the maximum over the row's valid frames only.
- Frames beyond a row's length are zero, as ``collate_packs`` pads dumped features.

It always computes in float32 with autocast off (a bf16 matmul in the mel projection would make
raw and dumped training differ); the caller casts the result to the model's dtype.
"""
from __future__ import annotations

import torch

from zlora.data.features import HOP_LENGTH, N_FFT, FeatureError, _mel_matrix, _window

RAW_KEYS = ("wave", "wave_lens")


def reflect_rows(wave: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Flat samples (sum N_i,) and lengths (B,) -> (B, N_max + n_fft) rows, row i = utterance i
    reflect-padded by n_fft // 2 on both sides (torch.stft's ``center`` padding), zeros after.

    Reflection of position k in [0, N): -k for k < 0, 2 (N - 1) - k for k >= N.
    """
    pad = N_FFT // 2
    n = lens.to(torch.long)
    starts = torch.cumsum(n, 0) - n                                    # (B,) row offsets in ``wave``
    j = torch.arange(int(n.max()) + 2 * pad, device=wave.device)      # (L,) padded positions
    k = j[None, :] - pad                                               # (1, L) source positions
    k = torch.where(k < 0, -k, k)
    k = torch.where(k >= n[:, None], 2 * (n[:, None] - 1) - k, k)      # (B, L)
    valid = j[None, :] < (n[:, None] + 2 * pad)
    k = k.clamp(0, None).minimum(n[:, None] - 1)                       # in range; masked below
    rows = wave[(starts[:, None] + k).reshape(-1)].reshape(k.shape)
    return rows * valid


def batched_log_mel(wave: torch.Tensor, lens: torch.Tensor, n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper log-mel of a flat raw batch: wave (sum N_i,) float32 16 kHz, lens (B,) ->
    feats (B, T_max, n_mels) float32 zero beyond each row's T_i = N_i // 160, feat_lens (B,)."""
    if lens.numel() == 0:
        raise FeatureError("empty raw-audio batch")
    if int(lens.min()) <= N_FFT // 2:
        raise FeatureError(f"audio of {int(lens.min())} samples is too short for a log-mel frame "
                           f"(need more than {N_FFT // 2})")
    if int(lens.sum()) != wave.numel():
        raise FeatureError(f"raw batch holds {wave.numel()} samples but its lengths add up to {int(lens.sum())}")
    dev = str(wave.device)
    rows = reflect_rows(wave.float(), lens)
    stft = torch.stft(rows, N_FFT, HOP_LENGTH, window=_window(dev), center=False, return_complex=True)
    power = stft[..., :-1].abs().pow(2)                                # (B, F, T_max): last frame dropped
    logspec = (_mel_matrix(n_mels, dev) @ power).clamp(min=1e-10).log10()   # (B, n_mels, T_max)
    feat_lens = lens.to(torch.long) // HOP_LENGTH
    valid = torch.arange(logspec.shape[-1], device=wave.device)[None, :] < feat_lens[:, None]  # (B, T)
    peak = logspec.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(-2, -1), keepdim=True)
    logspec = (torch.maximum(logspec, peak - 8.0) + 4.0) / 4.0
    feats = (logspec * valid[:, None, :]).transpose(1, 2).contiguous()
    return feats, feat_lens


def to_features(batch: dict, n_mels: int, dtype: torch.dtype | None = None) -> dict:
    """A model batch with ``wave``/``wave_lens`` -> the same batch with ``feats`` (B, T, n_mels)
    (cast to ``dtype`` when given) and ``feat_lens`` instead; other batches are returned as they
    are. Runs where ``wave`` is (the model's device, after the batch was moved there)."""
    if "wave" not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k not in RAW_KEYS}
    with torch.autocast(batch["wave"].device.type, enabled=False):
        feats, feat_lens = batched_log_mel(batch["wave"], batch["wave_lens"], n_mels)
    out["feats"] = feats if dtype is None else feats.to(dtype)
    out["feat_lens"] = feat_lens
    return out
