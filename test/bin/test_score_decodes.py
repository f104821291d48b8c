"""zlora.bin.score_decodes: each decode dir scored exactly as the equivalent zlora.bin.score command,
labelled from the training run's resolved config and the decode's language mode."""
import json
import shlex
from pathlib import Path

import pytest
import yaml

from zlora.bin import score_decodes
from zlora.bin.decode import DecodeConfig
from zlora.config import save_config
from zlora.decode.sources import LanguageConfig
from zlora.utils.cli import UserError


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def decode_dir(exp, name, hyp, **opts):
    out = f"{exp}/{name}"
    save_config(DecodeConfig(exp=exp, data="data/test", feats="dump/test/enc5/feats.scp",
                             out=str(Path(out).resolve()), **opts), Path(out) / "decode.yaml")
    write(Path(out) / "text", hyp)
    return out


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """A recipe dir (relative paths, as run.sh uses them) with two runs and three decodes."""
    monkeypatch.chdir(tmp_path)
    write("data/test/text", "u1 hello world\nu2 bonjour\n")
    write("data/test/utt2lang", "u1 en\nu2 fr\n")
    write("exp/stage1/config.yaml", yaml.safe_dump({"stage": 1, "seed": 0, "adapter": None}))
    write("exp/stage2/zs_seed3/config.yaml", yaml.safe_dump(
        {"stage": 2, "seed": 3, "adapter": {"kind": "zipper-soft", "init_b_from": None}}))
    return [decode_dir("exp/stage1", "decode_test", "u1 hello word\nu2 bonjour\n"),
            decode_dir("exp/stage2/zs_seed3", "decode_test", "u1 hello world\nu2 bonjour\n"),
            decode_dir("exp/stage2/zs_seed3", "decode_test_wlidmix", "u1 hello world\nu2 au revoir\n",
                       lang=LanguageConfig(mode="whisper_lid", router_input="mixture", feats="dump/test/feats.scp"))]


def test_labels_seeds_and_the_recorded_command(recipe, capsys):
    assert score_decodes.main(recipe) == 0
    assert "deprecated" not in capsys.readouterr().err      # score's own spelling: --out, not --outdir
    metas = [json.loads((Path(d) / "score" / "meta.json").read_text()) for d in recipe]
    assert [m["method"] for m in metas] == ["Foundation (stage 1)", "Zipper-LoRA-Soft",
                                            "Zipper-LoRA-Soft (LID: Whisper, mixture)"]
    assert [m["seed"] for m in metas] == [0, 3, 3]
    assert {m["test_set"] for m in metas} == {"test"} and {m["regime"] for m in metas} == {"full"}
    assert metas[1]["exp"] == "exp/stage2/zs_seed3" and metas[1]["config"] == "exp/stage2/zs_seed3/config.yaml"
    # the zlora.bin.score command, word for word: the row can be rescored by pasting it
    assert metas[1]["commands"] == [shlex.join([
        "python", "-m", "zlora.bin.score", "--ref", "data/test/text", "--hyp", "exp/stage2/zs_seed3/decode_test/text",
        "--utt2lang", "data/test/utt2lang", "--out", "exp/stage2/zs_seed3/decode_test/score",
        "--method", "Zipper-LoRA-Soft", "--regime", "full", "--seed", "3", "--test_set", "test",
        "--exp", "exp/stage2/zs_seed3"])]
    rates = [json.loads((Path(d) / "score" / "result.json").read_text()) for d in recipe]
    assert rates[0]["en"]["rate"] == 50.0 and rates[1]["en"]["rate"] == 0.0 and rates[2]["fr"]["rate"] == 200.0


def test_a_bad_dir_fails_before_any_score_is_written(recipe):
    write("exp/nomodel/decode_test/decode.yaml", yaml.safe_dump({"exp": "exp/nomodel", "data": "data/test"}))
    with pytest.raises(UserError, match="exp/nomodel/config.yaml: cannot read the resolved training config"):
        score_decodes.main([recipe[0], "exp/nomodel/decode_test"])
    with pytest.raises(UserError, match="decode.yaml: cannot read the decoding config"):
        score_decodes.main([recipe[0], "exp/stage1"])
    assert not (Path(recipe[0]) / "score").exists()
