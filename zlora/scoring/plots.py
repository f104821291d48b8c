"""The paper's figures as PNGs (matplotlib, Agg backend; t-SNE from scikit-learn).

Inputs, and the file formats accepted by the loaders below:

* Fig. 5 radar / Fig. 6 bars: ``{method: {lang: rate %}}`` (e.g. ``report.mean_rates``).
* Fig. 7 LID cosine heatmap: ``{lang: (d,) vector}``; file: safetensors or .npz (what
  ``zlora.bin.extract_lid`` writes). ``center=True`` subtracts the mean over languages first.
* Fig. 8 t-SNE: per method ``{utt: (d,) vector}`` (safetensors or .npz; utterance-level, e.g.
  mean-pooled encoder outputs) plus that method's utt2lang.
* LID confusion matrix: a decode dir's ``lid.json`` (zlora.decode.agnostic.lid_report), whose
  ``per_language[ref]["predicted"]`` counts utterances by predicted language; one panel per file.
* Router heatmap: JSON ``{layer_name: {lang: [p_1, ..., p_r]}}``; a cell is the mean of p over
  ranks; rows are languages, columns layers in natural order of their names.
* Loss curves: ``metrics.jsonl`` with one JSON object per line, ``{"step": int, "loss": float,
  ...}`` (other keys, e.g. ``lr`` or ``valid_loss``, are allowed; ``--key`` picks the series;
  lines without it are skipped), or a text ``train.log`` whose lines contain ``step <N>`` (or
  ``step=N``/``step: N``) followed later on the line by ``<key> <float>`` (or ``=``/``:``).
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zlora.utils.cli import UserError  # noqa: E402
from zlora.utils.io import atomic_save_file  # noqa: E402


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    fig.tight_layout()
    atomic_save_file(lambda tmp: fig.savefig(tmp, format="png", dpi=120), out)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- Fig. 5 and 6

def radar_chart(scores: dict[str, dict[str, float]], langs: list[str], out, title: str | None = None) -> Path:
    """Fig. 5: (1 - WER/CER) in % per language, one polygon per method.

    Rates above 100 % would give negative scores; they are drawn at 0 (the chart's centre).
    """
    langs = [lang for lang in langs if any(lang in s for s in scores.values())]
    if len(langs) < 3:
        raise UserError(f"a radar chart needs at least 3 languages, got {langs}")
    angles = np.linspace(0, 2 * math.pi, len(langs), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(7, 7), subplot_kw={"polar": True})
    for method, rates in scores.items():
        vals = [max(0.0, 100.0 - rates[lang]) if lang in rates else np.nan for lang in langs]
        ax.plot(angles + angles[:1], vals + vals[:1], marker="o", linewidth=1.5, label=method)
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(langs, fontsize=11)
    ax.set_ylim(0, 100)
    ax.set_rlabel_position(180 / len(langs))  # radial labels between two language spokes
    ax.set_ylabel("")
    ax.set_title(title or "1 − WER/CER (%) per language", pad=20)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=9)
    return _save(fig, out)


def relative_change_bars(scores: dict[str, dict[str, float]], baseline: str, langs: list[str], out,
                         title: str | None = None) -> Path:
    """Fig. 6: per language, 100*(rate - baseline)/baseline for each non-baseline method."""
    if baseline not in scores:
        raise UserError(f"baseline {baseline!r} not among the methods {list(scores)}")
    base = scores[baseline]
    methods = [m for m in scores if m != baseline]
    langs = [lang for lang in langs if base.get(lang, 0) > 0]
    if not methods or not langs:
        raise UserError("relative change needs a baseline with non-zero rates and at least one other method")
    width = 0.8 / len(methods)
    x = np.arange(len(langs))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(langs) * max(1, len(methods) / 2)), 4.5))
    for i, method in enumerate(methods):
        vals = [100 * (scores[method][lang] - base[lang]) / base[lang] if lang in scores[method] else np.nan
                for lang in langs]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=method)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(langs)
    ax.set_xlabel("language")
    ax.set_ylabel(f"relative change vs {baseline} (%)\n(negative = fewer errors)")
    ax.set_title(title or f"Relative WER/CER change vs {baseline}")
    ax.legend(fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


# ----------------------------------------------------------------------------- Fig. 7

def cosine_matrix(vectors: dict[str, np.ndarray], center: bool = False) -> tuple[list[str], np.ndarray]:
    """Languages and their (L, L) cosine-similarity matrix; optionally mean-centred first."""
    langs = list(vectors)
    X = np.stack([np.asarray(vectors[lang], dtype=np.float64).reshape(-1) for lang in langs])
    if center:
        X = X - X.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        zero = [lang for lang, n in zip(langs, norms[:, 0]) if n == 0]
        raise UserError(f"zero vector(s) for {zero}: cosine similarity undefined")
    X = X / norms
    return langs, X @ X.T


def cosine_heatmap(vectors: dict[str, np.ndarray], out, center: bool = False, title: str | None = None) -> Path:
    """Fig. 7: cosine similarity between language (LID) embeddings."""
    langs, sim = cosine_matrix(vectors, center)
    side = max(5.0, 1.5 + 0.5 * len(langs))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(sim, cmap="viridis", vmin=-1 if center else min(0.0, sim.min()), vmax=1)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(langs)), langs)
    if len(langs) <= 16:
        for i in range(len(langs)):
            for j in range(len(langs)):
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if sim[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_title(title or ("LID embedding cosine similarity" + ("\n(mean-centred)" if center else "")),
                 fontsize=11)
    return _save(fig, out)


# ----------------------------------------------------------------------------- LID confusion

def confusion_matrix(lid: dict, langs: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(reference languages, predicted languages, (R, P) row-normalised fractions) of a lid.json.
    Predicted columns are ``langs`` (default: the references) followed by any other language
    predicted, so an utterance sent outside the set still shows."""
    per = lid.get("per_language", {})
    if not per or any("predicted" not in r for r in per.values()):
        raise UserError("lid.json has no per-language 'predicted' counts (written by zlora.decode since "
                        "the confusion matrix was added): decode again to get them")
    rows = [x for x in (langs or sorted(per)) if x in per]
    extra = sorted({p for r in per.values() for p in r["predicted"]} - set(rows))
    cols = rows + extra
    M = np.zeros((len(rows), len(cols)))
    for i, ref in enumerate(rows):
        for pred, n in per[ref]["predicted"].items():
            M[i, cols.index(pred)] = n
    return rows, cols, M / M.sum(axis=1, keepdims=True).clip(min=1)


def confusion_panels(panels: list[tuple[str, dict]], out, langs: list[str] | None = None,
                     title: str | None = None) -> Path:
    """Per-language LID confusion, one panel per language-agnostic decode (rows: the true
    language, columns: the decided one, cells: the share of the row's utterances)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.6), squeeze=False)
    for ax, (name, lid) in zip(axes[0], panels):
        rows, cols, M = confusion_matrix(lid, langs)
        ax.imshow(M, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                if M[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * M[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if M[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(cols)), cols, rotation=90)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("decided language")
        ax.set_ylabel("true language")
        ax.set_title(f"{name}: {100 * lid.get('accuracy', float('nan')):.1f} % of {lid.get('utts', '?')}",
                     fontsize=10)
    fig.suptitle(title or "LID confusion (% of each language's utterances)")
    return _save(fig, out)


# ----------------------------------------------------------------------------- Fig. 8

def tsne_2d(X: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N, d) -> (N, 2) t-SNE; perplexity is capped below N/3 so tiny sets work."""
    from sklearn.manifold import TSNE

    n = X.shape[0]
    if n < 4:
        raise UserError(f"t-SNE needs at least 4 utterances, got {n}")
    perplexity = min(perplexity, max(1.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(X)


def tsne_panels(panels: list[tuple[str, dict[str, np.ndarray], dict[str, str]]], out, seed: int = 0,
                perplexity: float = 30.0) -> Path:
    """Fig. 8: one t-SNE panel per (method, {utt: vector}, utt2lang), coloured by language."""
    langs = sorted({utt2lang[u] for _, emb, utt2lang in panels for u in emb if u in utt2lang})
    cmap = plt.get_cmap("tab20" if len(langs) > 10 else "tab10")
    colour = {lang: cmap(i % cmap.N) for i, lang in enumerate(langs)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (name, emb, utt2lang) in zip(axes[0], panels):
        missing = [u for u in emb if u not in utt2lang]
        if missing:
            raise UserError(f"{name}: no language in utt2lang for {len(missing)} utterance(s), e.g. {missing[0]}")
        utts = sorted(emb)
        Y = tsne_2d(np.stack([np.asarray(emb[u], dtype=np.float32).reshape(-1) for u in utts]), seed, perplexity)
        for lang in langs:
            idx = [i for i, u in enumerate(utts) if utt2lang[u] == lang]
            ax.scatter(Y[idx, 0], Y[idx, 1], s=10, color=colour[lang], label=lang)
        ax.set_title(name)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    axes[0][-1].legend(title="language", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=9)
    return _save(fig, out)


# ----------------------------------------------------------------------------- router p, loss

def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def router_matrix(p: dict[str, dict[str, list[float]]]) -> tuple[list[str], list[str], np.ndarray]:
    """(languages, layers, (L, n_layers) mean p over ranks); NaN where a layer lacks a language."""
    layers = sorted(p, key=_natural_key)
    langs = sorted({lang for per in p.values() for lang in per})
    M = np.full((len(langs), len(layers)), np.nan)
    for j, layer in enumerate(layers):
        for i, lang in enumerate(langs):
            if lang in p[layer]:
                vals = np.asarray(p[layer][lang], dtype=np.float64)
                if vals.size == 0:
                    raise UserError(f"router p for layer {layer!r}, language {lang!r} is empty")
                M[i, j] = vals.mean()
    return langs, layers, M


def router_heatmap(p: dict[str, dict[str, list[float]]], out, title: str | None = None) -> Path:
    """Mean router p (Eq. 18; the rank-wise share of the language-specific bank, Eq. 14) per language x layer."""
    langs, layers, M = router_matrix(p)
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(layers) + 3), max(3.5, 1.8 + 0.4 * len(langs))))
    im = ax.imshow(M, cmap="magma", vmin=0, vmax=1, aspect="auto")
    if len(layers) * len(langs) <= 300:
        for i in range(len(langs)):
            for j in range(len(layers)):
                if not np.isnan(M[i, j]):
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if M[i, j] < 0.5 else "black")
    short = [_short_layer(name) for name in layers]
    ax.set_xticks(range(len(layers)), short, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("layer")
    ax.set_ylabel("language")
    fig.colorbar(im, ax=ax, label="mean p: language-specific share (Eq. 14)")
    ax.set_title(title or "Zipper-LoRA router p per language and layer")
    return _save(fig, out)


def _short_layer(name: str) -> str:
    """Keep the informative tail of long module names (e.g. 'layers.3.self_attn.q_proj')."""
    parts = name.split(".")
    return ".".join(parts[-3:]) if len(parts) > 3 else name


def loss_curves(curves: dict[str, list[tuple[int, float]]], out, key: str = "loss", log_y: bool = False,
                title: str | None = None) -> Path:
    """Training curves: one line per run, step on x."""
    if not any(curves.values()):
        raise UserError(f"no {key!r} values to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        if pts:
            steps, vals = zip(*sorted(pts))
            ax.plot(steps, vals, linewidth=1.2, label=name)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(key)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or f"Training {key}")
    return _save(fig, out)


# ----------------------------------------------------------------------------- loaders

def load_vectors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: array} from a .safetensors or .npz file (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises several types for a corrupt file
            raise UserError(f"{path}: cannot read safetensors: {e}") from None
    raise UserError(f"{path}: expected a .safetensors or .npz file")


def load_router_json(path: str | os.PathLike) -> dict[str, dict[str, list[float]]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read router JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{path}: expected {{layer: {{lang: [p_1, ..., p_r]}}}}")
    return data


def read_metrics(path: str | os.PathLike, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) pairs of ``key`` from metrics.jsonl or a train.log (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    pts = []
    pattern = re.compile(rf"\bstep[\s=:]+(\d+)\b.*?\b{re.escape(key)}[\s=:]+([-+0-9.eE]+|nan|inf)")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}:{lineno}: not valid UTF-8") from None
            if not line.strip():
                continue
            if path.suffix in (".jsonl", ".json"):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{lineno}: not JSON: {e}") from None
                if isinstance(rec, dict) and key in rec and "step" in rec:
                    pts.append((int(rec["step"]), float(rec[key])))
            else:
                m = pattern.search(line)
                if m:
                    pts.append((int(m.group(1)), float(m.group(2))))
    return pts
