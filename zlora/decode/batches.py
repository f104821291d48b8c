"""Reading a decoding part's inputs: feature matrices or raw audio, languages, padded batches."""
from __future__ import annotations

import numpy as np
import torch

from zlora.utils.cli import UserError


def read_feats(feats, utt: str, scp: str) -> torch.Tensor:
    """One (T, D) feature matrix as a float tensor; NaN/Inf is an error naming the utterance."""
    from zlora.data.features import FeatureError, check_finite

    mat = np.array(feats[utt], dtype=np.float32)      # a writable copy of kaldiio's mapped array
    try:
        check_finite(mat, utt)
    except FeatureError as e:
        raise UserError(f"{scp}: {e}") from e
    return torch.from_numpy(mat)


def lang_of(dd, utt: str, lang_index: dict[str, int], data: str) -> int:
    """The model's index of ``utt``'s language in utt2lang; errors name the file and utterance."""
    lang = dd.utt2lang.get(utt)
    if lang is None:
        raise UserError(f"{data}/utt2lang: no language for utterance {utt}")
    if lang not in lang_index:
        raise UserError(f"{data}/utt2lang: utterance {utt} has language '{lang}', which the model "
                        f"was not trained for (model languages: {', '.join(lang_index)})")
    return lang_index[lang]


def batches(utts: tuple[str, ...], size: int):
    for i in range(0, len(utts), size):
        yield utts[i:i + size]


def pad(mats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of (T_i, D) -> ((B, T_max, D) zero-padded, (B,) lengths)."""
    lens = torch.tensor([m.shape[0] for m in mats])
    x = torch.zeros(len(mats), int(lens.max()), mats[0].shape[1])
    for i, m in enumerate(mats):
        x[i, : m.shape[0]] = m
    return x, lens


def check_long_inputs(model, utts, lens, scp: str, log) -> None:
    """Decoding never skips an utterance. One longer than the full-context encoder takes (Whisper:
    30 s) is encoded in chunks of ``decode_chunk_seconds`` (§IV-F), alone: the other rows of its
    batch keep full context (the encoder's ``long_inputs: chunk``). With cached encoder states
    (computed full-context, no chunking possible) it is an error that names the utterance."""
    enc = model.encoder
    limit = enc.embed_positions.num_embeddings * (1 if enc.cfg.cached_layers else 2)
    too_long = [u for u, n in zip(utts, lens.tolist()) if n > limit]
    if too_long and enc.cfg.cached_layers > 0:
        raise UserError(f"{scp}: utterance {too_long[0]} has more frames than the encoder takes "
                        f"({limit}); cached encoder states cannot be chunked, decode from mel features "
                        "with a model that encodes them")
    if too_long and not enc.cfg.chunked:
        log.warning("%d utterance(s) longer than %d frames (e.g. %s): encoded in %g-s chunks (the "
                    "rest of the batch keeps full context)", len(too_long), limit, too_long[0],
                    enc.cfg.decode_chunk_seconds)


class RawAudioReader:
    """Decoding from raw audio (``--feats_type raw``): the index of raw-audio training
    (zlora.data.inputs: dump_audio's audio.scp, or the data dir's wav.scp + segments; lengths
    from utt2num_samples / utt2dur) and the same on-device log-mel (zlora.data.frontend)."""

    def __init__(self, data: str, audio_scp: str | None, n_mels: int):
        from zlora.data.dataset import _aligned_floats
        from zlora.data.inputs import audio_index
        from zlora.data.kaldi import DataDir

        dd = DataDir(data)
        utts = dd.utts
        self.index = audio_index(dd.path, audio_scp, utts, _aligned_floats(dd.path / "utt2dur", utts))
        self.row = {u: i for i, u in enumerate(utts)}
        self.n_mels = n_mels

    def lengths(self) -> list[tuple[str, int]]:
        """(utt, mel frames) of every utterance, from the declared lengths (no audio is read)."""
        from zlora.data.inputs import SAMPLES_PER_FRAME

        return [(u, int(self.index.length[i]) // SAMPLES_PER_FRAME) for u, i in self.row.items()]

    def read(self, utts, device) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels) and feat_lens (B,) on ``device`` for ``utts``."""
        from zlora.data.frontend import to_features

        waves = [self.index.read(self.row[u]) for u in utts]
        batch = {"wave": torch.from_numpy(np.concatenate(waves)).to(device),
                 "wave_lens": torch.tensor([len(w) for w in waves], device=device)}
        out = to_features(batch, self.n_mels)
        return out["feats"], out["feat_lens"]
