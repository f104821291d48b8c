"""zlora.bin.figures: which figures a set of runs gets, the runs found by their resolved configs."""
from pathlib import Path

import pytest
import yaml

from zlora.bin import figures
from zlora.utils.cli import UserError


@pytest.fixture
def calls(monkeypatch):
    """Record the verbs figures.main calls instead of running them (they are tested on their own)."""
    log = []
    for mod in (figures.plot, figures.router_probs, figures.dump_embeddings):
        name = mod.__name__.rsplit(".", 1)[-1]
        monkeypatch.setattr(mod, "main", lambda argv, name=name: log.append([name, *argv]) or 0)
    return log


def exp(root, name, kind, **adapter):
    d = Path(root) / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"stage": 2, "adapter": {"kind": kind, **adapter}}))
    return str(d)


def run(tmp_path, exps):
    return figures.main(["--out", str(tmp_path / "figs"), "--langs", "en,de,ja", "--lid", "lid.safetensors",
                         "--loss", "exp/stage1/metrics.jsonl", "--data", "data/test",
                         "--feats", "dump/test/enc5/feats.scp", *exps])


def test_every_figure_with_lora_and_zipper_soft(tmp_path, calls):
    lora, zs = exp(tmp_path, "lora_seed0", "lora"), exp(tmp_path, "zs_seed0", "zipper-soft")
    initb = exp(tmp_path, "initb_seed0", "zipper-soft", init_b_from="x.safetensors")
    assert run(tmp_path, [lora, zs, initb]) == 0
    figs = tmp_path / "figs"
    assert [c[:2] for c in calls] == [["plot", "radar"], ["plot", "relchange"], ["plot", "lid"], ["plot", "loss"],
                                      ["router_probs", "--exp"], ["plot", "router"], ["dump_embeddings", "--exp"],
                                      ["dump_embeddings", "--exp"], ["plot", "tsne"]]
    assert calls[0][-3:] == [f"{e}/decode_test/score" for e in (lora, zs, initb)]
    assert calls[0][2:4] == ["--out", str(figs / "fig5_radar.png")]
    assert calls[4] == ["router_probs", "--exp", zs, "--out", f"{zs}/router_p.json"]   # not Initial-B's
    assert calls[-1][-2:] == [f"Vanilla-LoRA={lora}/embeddings_test.safetensors",
                              f"Zipper-LoRA-Soft={zs}/embeddings_test.safetensors"]


def test_without_zipper_soft_no_router_and_no_tsne(tmp_path, calls):
    assert run(tmp_path, [exp(tmp_path, "lora_seed0", "lora"), exp(tmp_path, "zh_seed0", "zipper-hard")]) == 0
    assert [c[1] for c in calls] == ["radar", "relchange", "lid", "loss"]


def test_two_runs_of_one_method_are_an_error(tmp_path, calls):
    with pytest.raises(UserError, match="are both Vanilla-LoRA"):
        run(tmp_path, [exp(tmp_path, "a", "lora"), exp(tmp_path, "b", "lora")])
    assert calls == []
