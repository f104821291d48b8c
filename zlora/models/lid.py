"""Whisper language identity: LID embeddings (§IV-E, the router input), their cosine heatmap
(Fig. 7) and Whisper's own spoken-language detection.

LID embedding of language l: the decoder token-embedding row of ``<|l|>`` (d_model floats; 512
for Whisper-base). The paper does not say whether the rows are centred. Raw rows share a large
common component (pairwise cosines 0.64-0.80 for 13 languages on Whisper-base), so ``center=True``
subtracts the mean over *all* language tokens of the checkpoint (99 for Whisper-base), which
exposes the language neighbourhoods Fig. 7 shows (ja-ko, es-pt, vi-th). The router applies its own
LayerNorm (Eq. 16) either way; the default stays uncentred, as the paper describes.

Detection follows openai/whisper's ``detect_language``: encode 30 s of log-mel, feed
``<|startoftranscript|>``, and take the softmax of the next-token logits restricted to the
language tokens.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from zlora.models.whisper_files import EMBED_KEY, HINT, language_tokens, read_tensor  # noqa: F401
from zlora.utils.cli import UserError
from zlora.utils.io import atomic_save_file

N_FRAMES = 3000  # Whisper's 30 s window at 100 frames/s


# ------------------------------------------------------------------ loading

@functools.lru_cache(maxsize=2)
def _load_whisper_cached(path: str):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


def load_whisper(whisper):
    """A WhisperForConditionalGeneration from a converted dir (cached per path) or as given."""
    if isinstance(whisper, (str, Path)):
        path = Path(whisper)
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a Whisper checkpoint dir (no config.json); {HINT}")
        return _load_whisper_cached(str(path.resolve()))
    return whisper


def language_token_ids(whisper) -> dict[str, int]:
    """{'en': 50259, ...} from the generation config's lang_to_id (dir or model)."""
    if isinstance(whisper, (str, Path)):
        return language_tokens(whisper)
    lang_to_id = getattr(whisper.generation_config, "lang_to_id", None)
    if not lang_to_id:
        raise UserError("the model's generation_config has no lang_to_id: not a multilingual Whisper checkpoint")
    return {tok[2:-2]: int(i) for tok, i in lang_to_id.items()}


def _check_langs(langs: list[str], known: dict[str, int], where: str) -> None:
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        raise UserError(f"unknown Whisper language code(s) {unknown} for {where}; known: {' '.join(sorted(known))}")
    if len(set(langs)) != len(langs):
        raise UserError(f"duplicate language codes in {langs}")


# ------------------------------------------------------------------ LID embeddings (§IV-E)

def _embedding_matrix(whisper) -> torch.Tensor:
    """(vocab, d) decoder token embeddings; from a dir (single file or shards), read just that
    tensor."""
    if isinstance(whisper, (str, Path)):
        return read_tensor(whisper, EMBED_KEY).float()
    return whisper.get_decoder().embed_tokens.weight.detach().float()


def lid_embeddings(whisper, langs: list[str], center: bool = False) -> dict[str, torch.Tensor]:
    """{lang: (d,) float32} decoder embedding rows of ``<|lang|>`` (whisper: dir or model).

    center: subtract the mean row over all the checkpoint's language tokens (not just ``langs``),
    so the result does not depend on which languages were asked for.
    """
    ids = language_token_ids(whisper)
    _check_langs(langs, ids, str(whisper) if isinstance(whisper, (str, Path)) else "the model")
    emb = _embedding_matrix(whisper)
    rows = emb[torch.tensor([ids[lang] for lang in langs])]
    if center:
        rows = rows - emb[torch.tensor(sorted(ids.values()))].mean(dim=0)
    return {lang: rows[i].clone() for i, lang in enumerate(langs)}


def cosine_matrix(embeddings: dict[str, torch.Tensor], langs: list[str] | None = None) -> torch.Tensor:
    """(n, n) cosine similarities between the embeddings, in ``langs`` order (default: dict order)."""
    langs = list(embeddings) if langs is None else langs
    x = torch.stack([embeddings[lang].float() for lang in langs])
    x = torch.nn.functional.normalize(x, dim=-1)
    return x @ x.T


def plot_cosine_heatmap(langs: list[str], matrix: torch.Tensor, path: str | Path, title: str | None = None) -> None:
    """Write an annotated cosine-similarity heatmap PNG (the paper's Fig. 7), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    m = matrix.detach().cpu().float().numpy()
    n = len(langs)
    size = max(4.0, 0.62 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    # Colours span the off-diagonal range: with the diagonal's 1.0 included, raw LID cosines
    # (0.64-0.80) would all look alike.
    off = m[~torch.eye(n, dtype=torch.bool).numpy()] if n > 1 else m.ravel()
    im = ax.imshow(m, cmap="viridis", vmin=float(off.min()), vmax=float(off.max()))
    ax.set_xticks(range(n), langs)
    ax.set_yticks(range(n), [f"{LANGUAGES.get(lang, lang).title()} ({lang})" for lang in langs])
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    mid = (float(off.min()) + float(off.max())) / 2
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if m[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_title(title or "Cosine similarity of Whisper LID embeddings", pad=12)
    fig.tight_layout()
    try:
        atomic_save_file(lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"), path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ language detection

def pad_or_trim_mel(mel: torch.Tensor, n_frames: int = N_FRAMES) -> torch.Tensor:
    """(n_mels, T) unpadded log-mel -> (n_mels, n_frames), as if the audio had been zero-padded.

    Whisper pads the *waveform* with silence before the log-mel. Silence has log10 power at the
    1e-10 floor, clamped to (max - 8), then (x + 4) / 4: in normalised units that is
    max(mel.max() - 2, -1.5). Padding with that value reproduces Whisper's input except for the
    few STFT frames that straddle the boundary.
    """
    t = mel.shape[-1]
    if t >= n_frames:
        return mel[:, :n_frames]
    fill = torch.clamp(mel.max() - 2.0, min=-1.5)
    return torch.cat([mel, fill.expand(mel.shape[0], n_frames - t)], dim=1)


def _as_mel_list(mels, lens, n_mels: int) -> list[torch.Tensor]:
    if isinstance(mels, torch.Tensor) and mels.dim() == 3:
        mels = [m[:, : int(lens[i])] if lens is not None else m for i, m in enumerate(mels)]
    elif lens is not None:
        raise UserError("lens is only meaningful with a padded (B, n_mels, T) batch")
    out = []
    for i, m in enumerate(mels):
        m = torch.as_tensor(m, dtype=torch.float32)
        if m.dim() != 2 or m.shape[0] != n_mels:
            raise UserError(f"detect_language: item {i} has shape {tuple(m.shape)}, expected (n_mels={n_mels}, T) "
                            f"(Kaldi feats are (T, n_mels): transpose them)")
        if m.shape[1] == 0:
            raise UserError(f"detect_language: item {i} has no frames")
        out.append(m)
    return out


@torch.no_grad()
def detect_language_batch(whisper, mels, lens: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Posterior over Whisper's language tokens for each utterance.

    whisper: converted dir or WhisperForConditionalGeneration. mels: (B, n_mels, T) with optional
    ``lens`` (B,) of valid frames, or a list of (n_mels, T_i). Each is padded/trimmed to 30 s.
    Returns one {lang: prob} per utterance, sorted by decreasing probability.
    """
    model = load_whisper(whisper)
    ids = language_token_ids(model)
    mel_list = _as_mel_list(mels, lens, model.config.num_mel_bins)
    x = torch.stack([pad_or_trim_mel(m, 2 * model.config.max_source_positions) for m in mel_list])
    x = x.to(device=model.device, dtype=model.dtype)
    sot = torch.full((x.shape[0], 1), model.generation_config.decoder_start_token_id, device=model.device)
    logits = model(input_features=x, decoder_input_ids=sot).logits[:, -1].float()
    langs = list(ids)
    probs = logits[:, torch.tensor([ids[lang] for lang in langs], device=logits.device)].softmax(dim=-1).cpu()
    result = []
    for row in probs:
        order = row.argsort(descending=True).tolist()
        result.append({langs[k]: float(row[k]) for k in order})
    return result


def detect_language(whisper, mel) -> dict[str, float]:
    """{lang: prob} for one utterance; mel: (n_mels, T) log-mel (Whisper normalisation)."""
    if getattr(mel, "ndim", 2) != 2:
        raise UserError(f"detect_language takes one (n_mels, T) mel, got shape {tuple(mel.shape)}; "
                        f"use detect_language_batch for a batch")
    return detect_language_batch(whisper, [mel])[0]
