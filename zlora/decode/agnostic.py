"""Language-agnostic decoding's outputs and inputs: Whisper LID posteriors, the per-part ``lid``
files, ``lid.json`` (LID accuracy per language) and ``lid_posteriors.jsonl``. The language sources
themselves are in zlora.decode.sources.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from zlora.utils.io import atomic_write_text

def whisper_posteriors(whisper_dir: str, mels: list[torch.Tensor], languages: list[str]) -> torch.Tensor:
    """(B, L) Whisper LID posterior over ``languages``; mels: list of (T, n_mels) Kaldi matrices."""
    from zlora.models.lid import detect_language_batch

    probs = detect_language_batch(whisper_dir, [m.t().contiguous() for m in mels])
    post = torch.tensor([[p.get(lang, 0.0) for lang in languages] for p in probs], dtype=torch.float32)
    return post / post.sum(-1, keepdim=True).clamp_min(1e-12)


def write_part_lid(part_dir: Path, pred: dict[str, str]) -> None:
    part_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(part_dir / "lid", "".join(f"{u} {pred[u]}\n" for u in sorted(pred)))


def lid_report(part_dirs: list[Path], utt2lang: dict[str, str], out: Path, mode: str) -> dict:
    """Merge parts' predictions into OUT/utt2lang_pred and OUT/lid.json: accuracy per language and
    the confusion counts ``{reference: {predicted: utts}}`` (what ``plot confusion`` draws)."""
    pred: dict[str, str] = {}
    for d in part_dirs:
        for line in (d / "lid").read_text(encoding="utf-8").splitlines():
            u, lang = line.split()
            pred[u] = lang
    per: dict[str, dict] = {}
    for u, lang in pred.items():
        ref = utt2lang[u]
        r = per.setdefault(ref, {"utts": 0, "correct": 0, "predicted": {}})
        r["utts"] += 1
        r["correct"] += int(lang == ref)
        r["predicted"][lang] = r["predicted"].get(lang, 0) + 1
    for r in per.values():
        r["accuracy"] = round(r["correct"] / r["utts"], 4)
        r["predicted"] = dict(sorted(r.pop("predicted").items()))   # after accuracy: reads well
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
