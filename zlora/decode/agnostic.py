"""Language-agnostic decoding (``python -m zlora.bin.decode --lang_mode ...``).

lang_mode:
- ``known``: the language of every utterance comes from utt2lang (the default, paper §V-B).
- ``oracle``: utt2lang again, but routed through the language-agnostic path (a one-hot posterior
  for Zipper routers, the predicted-language path otherwise); must equal ``known`` (tested).
- ``whisper_lid``: Whisper's language detection (zlora.models.lid.detect_language_batch) on each
  utterance's log-mel (``--lid_feats``), restricted to the model's languages and renormalised.
  The LLM prompt uses the argmax language. Zipper-LoRA routers get either the argmax language's
  LID embedding (``--router_input hard``) or the posterior-weighted mixture of LID embeddings
  with B_spec mixed by the same posterior (``mixture``; beyond both papers). Other kinds use the
  argmax language.
- ``mole``: LoRA-MoLE's own LID classifier (zlora.adapters.mole) picks the expert and the prompt.
  The encoder runs twice (once to classify, once inside generate: same decision, deterministic).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from zlora.utils.io import atomic_write_text

LANG_MODES = ("known", "oracle", "whisper_lid", "mole")


def whisper_posteriors(whisper_dir: str, mels: list[torch.Tensor], languages: list[str]) -> torch.Tensor:
    """(B, L) Whisper LID posterior over ``languages``; mels: list of (T, n_mels) Kaldi matrices."""
    from zlora.models.lid import detect_language_batch

    probs = detect_language_batch(whisper_dir, [m.t().contiguous() for m in mels])
    post = torch.tensor([[p.get(lang, 0.0) for lang in languages] for p in probs], dtype=torch.float32)
    return post / post.sum(-1, keepdim=True).clamp_min(1e-12)


def one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index.long().cpu(), n).float()


def mole_predict(model, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
    """(B,) language indices from the MoLE classifier (runs the encoder in predicted mode)."""
    from zlora.adapters.mole import mole_state

    state = mole_state(model.encoder)
    if state is None:
        raise ValueError("--lang_mode mole needs a model trained with adapter.kind: mole")
    state.mode = "predicted"
    state.reset()
    with torch.inference_mode():
        model.encoder(feats, feat_lens, torch.zeros_like(feat_lens))
    return state.row_prediction().clone()


def decode_batch(model, feats, feat_lens, options, mode: str, true_langs: torch.Tensor | None,
                 posterior: torch.Tensor | None, router_input: str) -> tuple[list, torch.Tensor]:
    """-> (token ids per row, (B,) language index used for the prompt)."""
    from zlora.adapters.mole import mole_state
    from zlora.adapters.posterior import language_posterior_context

    n = len(model.languages)
    ctx = contextlib.nullcontext()
    state = mole_state(model.encoder)
    if mode == "known":
        if state is not None:
            state.mode = "true"
        langs = true_langs
    elif mode == "mole":
        langs = mole_predict(model, feats, feat_lens).to(feat_lens.device)
    else:
        post = one_hot(true_langs, n) if mode == "oracle" else posterior
        langs = post.argmax(-1).to(feat_lens.device)
        if state is not None:
            state.mode = "true"      # the detected language selects the expert
        if router_input == "hard":
            post = one_hot(langs, n)
        ctx = language_posterior_context(model.encoder, post.to(feats.device))
    with ctx, torch.inference_mode():
        ids = model.generate(feats, feat_lens, langs, options)
    return ids, langs


def write_part_lid(part_dir: Path, pred: dict[str, str]) -> None:
    part_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(part_dir / "lid", "".join(f"{u} {pred[u]}\n" for u in sorted(pred)))


def lid_report(part_dirs: list[Path], utt2lang: dict[str, str], out: Path, mode: str) -> dict:
    """Merge parts' predictions into OUT/utt2lang_pred and OUT/lid.json (accuracy per language)."""
    pred: dict[str, str] = {}
    for d in part_dirs:
        for line in (d / "lid").read_text(encoding="utf-8").splitlines():
            u, lang = line.split()
            pred[u] = lang
    per: dict[str, dict] = {}
    for u, lang in pred.items():
        ref = utt2lang[u]
        r = per.setdefault(ref, {"utts": 0, "correct": 0})
        r["utts"] += 1
        r["correct"] += int(lang == ref)
    for r in per.values():
        r["accuracy"] = round(r["correct"] / r["utts"], 4)
    total = sum(r["utts"] for r in per.values())
    report = {"lang_mode": mode, "utts": total,
              "accuracy": round(sum(r["correct"] for r in per.values()) / max(total, 1), 4),
              "per_language": dict(sorted(per.items()))}
    atomic_write_text(out / "utt2lang_pred", "".join(f"{u} {pred[u]}\n" for u in sorted(pred)))
    atomic_write_text(out / "lid.json", json.dumps(report, indent=2) + "\n")
    return report


def write_part_posteriors(part_dir: Path, post: dict[str, dict[str, float]]) -> None:
    """One JSON line per utterance: {"utt": ..., "posterior": {lang: p}}."""
    part_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(part_dir / "lid_posteriors.jsonl",
                      "".join(json.dumps({"utt": u, "posterior": post[u]}) + "\n" for u in sorted(post)))


def merge_posteriors(part_dirs: list[Path], out: Path) -> None:
    lines = []
    for d in part_dirs:
        lines += (d / "lid_posteriors.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    atomic_write_text(out / "lid_posteriors.jsonl", "".join(sorted(lines)))


def read_posteriors(path: str) -> dict[str, dict[str, float]]:
    """utt -> {lang: p} from a lid_posteriors.jsonl; a malformed line is an error naming it."""
    from zlora.utils.cli import UserError

    out: dict[str, dict[str, float]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--lid_posteriors {path}: {e}") from e
    for n, line in enumerate(text.splitlines(), 1):
        try:
            rec = json.loads(line)
            out[str(rec["utt"])] = {str(k): float(v) for k, v in rec["posterior"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path}:{n}: expected {{\"utt\": ..., \"posterior\": {{lang: p}}}} ({e})") from e
    return out
