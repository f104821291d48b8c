"""Whisper's log-mel spectrogram in torch, without padding to 30 s.

Identical to openai/whisper ``log_mel_spectrogram`` and transformers' ``WhisperFeatureExtractor``
(torch path) on the same samples: 25 ms Hann window (n_fft 400), 10 ms hop (160), centred STFT with
reflect padding, power spectrum, Slaney-style mel filterbank (0-8 kHz, area-normalised), log10 with
floor 1e-10, dynamic-range clamp to (max - 8), then (x + 4) / 4.

Frame count: the centred STFT yields ``N // 160 + 1`` frames and Whisper drops the last one, so
``T = N // 160`` (100 frames per second). Whisper pads to 30 s first; we do not (padding costs ~17x in
the encoder), so the clamp's max is taken over the utterance itself, exactly as the extractor does
when called with ``padding="longest"`` on one utterance.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from zlora.utils.cli import UserError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160


class FeatureError(UserError):
    """Bad features (NaN/Inf, too-short audio); the message names the utterance."""


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mel / 200 Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    logstep = 27.0 / np.log(6.4)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), 200.0 * m / 3.0)


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float = 8000.0) -> np.ndarray:
    """Slaney-normalised triangular mel filters -> (n_fft // 2 + 1, n_mels) float64.

    Same construction as librosa.filters.mel(norm="slaney") and transformers' mel_filter_bank(
    norm="slaney", mel_scale="slaney"), which Whisper's feature extractor uses.
    """
    n_freqs = n_fft // 2 + 1
    mel_pts = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)  # (n_mels + 2,) band edges and centres
    fft_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    width = np.diff(hz_pts)
    slopes = hz_pts[None, :] - fft_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    return fb * (2.0 / (hz_pts[2:n_mels + 2] - hz_pts[:n_mels]))[None, :]  # area normalisation


@functools.lru_cache(maxsize=8)
def _mel_matrix(n_mels: int, device: str) -> torch.Tensor:
    return torch.from_numpy(mel_filterbank(n_mels).T.copy()).to(device, torch.float32)  # (n_mels, F)


@functools.lru_cache(maxsize=8)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device)


def num_frames(n_samples: int) -> int:
    """Frames of ``log_mel`` for ``n_samples`` 16 kHz samples."""
    return n_samples // HOP_LENGTH


def log_mel(wave: torch.Tensor | np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """Whisper log-mel of 16 kHz audio, no 30 s padding.

    wave: (N,) or (B, N) float32. Returns (n_mels, T) or (B, n_mels, T) float32, T = N // 160.
    With a batch, the (max - 8) clamp is per row, as in WhisperFeatureExtractor; rows that were
    zero-padded to a common length differ from unpadded ones near the end, so compute per utterance
    when exactness matters.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.shape[-1] <= N_FFT // 2:
        raise FeatureError(f"audio of {x.shape[-1]} samples is too short for a log-mel frame "
                           f"(need more than {N_FFT // 2})")
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=_window(str(x.device)), return_complex=True)
    power = stft[..., :-1].abs().pow(2)  # (..., F, T): Whisper drops the last frame
    mel = _mel_matrix(n_mels, str(x.device)) @ power
    logspec = mel.clamp(min=1e-10).log10()
    peak = logspec.amax(dim=(-2, -1), keepdim=True)
    logspec = torch.maximum(logspec, peak - 8.0)
    return (logspec + 4.0) / 4.0


def check_finite(feats: torch.Tensor | np.ndarray, utt: str) -> None:
    """Reject features with NaN or Inf, naming the utterance."""
    t = torch.as_tensor(feats)
    bad = ~torch.isfinite(t)
    if bad.any():
        raise FeatureError(f"utterance '{utt}': features contain {int(bad.sum())} NaN/Inf values "
                           f"(shape {tuple(t.shape)})")


def utterance_features(wave: np.ndarray, utt: str, n_mels: int = 80) -> np.ndarray:
    """(N,) 16 kHz audio -> checked (T, n_mels) float32 time-major features, as dump_feats stores."""
    try:
        feats = log_mel(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), n_mels)
    except FeatureError as e:
        raise FeatureError(f"utterance '{utt}': {e}") from e
    check_finite(feats, utt)
    return feats.T.contiguous().numpy()
