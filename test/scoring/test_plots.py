"""Each figure is drawn from a tiny set of inputs and is a non-empty PNG."""
import json

import numpy as np
import pytest

from zlora.bin import plot as plot_cli
from zlora.scoring import plots
from zlora.utils.cli import UserError

PNG = b"\x89PNG\r\n\x1a\n"
SCORES = {"Vanilla-LoRA": {"en": 10.0, "fr": 20.0, "ja": 40.0, "ko": 120.0},
          "Zipper-LoRA-Soft": {"en": 8.0, "fr": 18.0, "ja": 30.0, "ko": 90.0}}


def is_png(path):
    data = open(path, "rb").read()
    return len(data) > 1000 and data[:8] == PNG


def test_radar_and_relative_bars(tmp_path):
    assert is_png(plots.radar_chart(SCORES, ["en", "fr", "ja", "ko"], tmp_path / "r.png"))
    assert is_png(plots.relative_change_bars(SCORES, "Vanilla-LoRA", ["en", "fr", "ja"], tmp_path / "b.png"))
    with pytest.raises(UserError, match="baseline"):
        plots.relative_change_bars(SCORES, "FlyLoRA", ["en"], tmp_path / "x.png")


def test_radar_and_relchange_cli_from_score_dirs(tmp_path):
    dirs = []
    for name, rates in SCORES.items():
        d = tmp_path / name
        d.mkdir()
        (d / "result.json").write_text(json.dumps({lang: {
            "metric": "wer", "errors": int(r), "ref_units": 100, "rate": r, "sub": int(r), "del": 0,
            "ins": 0, "utts": 5} for lang, r in rates.items()}))
        dirs.append(f"{name}={d}")
    plot_cli.main(["radar", "--out", str(tmp_path / "fig5.png"), *dirs])
    plot_cli.main(["relchange", "--out", str(tmp_path / "fig6.png"), *dirs])
    assert is_png(tmp_path / "fig5.png") and is_png(tmp_path / "fig6.png")


def test_lid_cosine_heatmap_with_centering(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    vecs = {lang: rng.normal(size=16).astype(np.float32) + 3 for lang in ["en", "fr", "de", "zh"]}
    langs, raw = plots.cosine_matrix(vecs)
    _, centred = plots.cosine_matrix(vecs, center=True)
    assert np.allclose(np.diag(raw), 1) and raw.min() > 0.5   # shared offset: all similar
    assert centred.min() < 0                                   # centring removes it
    save_file(vecs, str(tmp_path / "lid.safetensors"))
    plot_cli.main(["lid", "--center", "--out", str(tmp_path / "fig7.png"), str(tmp_path / "lid.safetensors")])
    assert is_png(tmp_path / "fig7.png")


def test_lid_confusion_rows_sum_to_one_and_keep_outside_predictions(tmp_path):
    from zlora.decode.agnostic import lid_report

    part = tmp_path / "p"
    part.mkdir()
    (part / "lid").write_text("a en\nb fr\nc en\nd hu\n")
    lid = lid_report([part], {"a": "en", "b": "en", "c": "fr", "d": "fr"}, tmp_path, "mole")
    rows, cols, M = plots.confusion_matrix(lid)
    assert rows == ["en", "fr"] and cols == ["en", "fr", "hu"]     # 'hu': predicted, not a reference
    assert M.tolist() == [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]
    plot_cli.main(["confusion", "--out", str(tmp_path / "c.png"), f"MoLE={tmp_path / 'lid.json'}",
                   str(tmp_path / "lid.json")])
    assert is_png(tmp_path / "c.png")
    with pytest.raises(UserError, match="no per-language 'predicted'"):
        plots.confusion_matrix({"per_language": {"en": {"utts": 1, "correct": 1, "accuracy": 1.0}}})


def test_tsne_two_methods(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    utt2lang = {f"{lang}_{i:02d}": lang for lang in ["en", "ja", "ar"] for i in range(8)}
    (tmp_path / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l in sorted(utt2lang.items())))
    for k, name in enumerate(["a", "b"]):
        emb = {u: (rng.normal(size=8) + (3 * k) * (hash(l) % 3)).astype(np.float32) for u, l in utt2lang.items()}
        if name == "a":
            save_file(emb, str(tmp_path / "a.safetensors"))
        else:
            np.savez(tmp_path / "b.npz", **emb)
    plot_cli.main(["tsne", "--out", str(tmp_path / "fig8.png"), "--utt2lang", str(tmp_path / "utt2lang"),
                   f"Vanilla-LoRA={tmp_path / 'a.safetensors'}", f"Zipper-LoRA={tmp_path / 'b.npz'}"])
    assert is_png(tmp_path / "fig8.png")


def test_router_heatmap_means_over_ranks(tmp_path):
    p = {"layers.10.fc1": {"en": [0.0, 1.0], "ja": [1.0, 1.0]},
         "layers.2.fc1": {"en": [0.2, 0.4], "ja": [0.5, 0.7]}}
    langs, layers, M = plots.router_matrix(p)
    assert layers == ["layers.2.fc1", "layers.10.fc1"] and langs == ["en", "ja"]
    assert np.allclose(M, [[0.3, 0.5], [0.6, 1.0]])
    (tmp_path / "p.json").write_text(json.dumps(p))
    plot_cli.main(["router", "--out", str(tmp_path / "router.png"), str(tmp_path / "p.json")])
    assert is_png(tmp_path / "router.png")


def test_loss_curves_from_jsonl_and_train_log(tmp_path):
    jl = tmp_path / "metrics.jsonl"
    jl.write_text("".join(json.dumps({"step": s, "loss": 5.0 / s, "lr": 1e-4}) + "\n" for s in range(1, 21))
                  + json.dumps({"step": 20, "valid_loss": 0.4}) + "\n")
    log = tmp_path / "train.log"
    log.write_text("2026-01-01 INFO [train] step 10 loss 2.5 lr 1e-4\nsomething else\n"
                   "2026-01-01 INFO [train] step=20 loss=1.25e0 lr=1e-4\n")
    assert plots.read_metrics(jl)[:2] == [(1, 5.0), (2, 2.5)] and len(plots.read_metrics(jl)) == 20
    assert plots.read_metrics(jl, "valid_loss") == [(20, 0.4)]
    assert plots.read_metrics(log) == [(10, 2.5), (20, 1.25)]
    plot_cli.main(["loss", "--logy", "--out", str(tmp_path / "loss.png"), f"zipper={jl}", str(log)])
    assert is_png(tmp_path / "loss.png")
