"""Every mini12 training config (demo, tuning, second paper) parses into TrainConfig, and each
method's config gets its row label from method_label."""
from pathlib import Path

import pytest

from zlora.scoring.report import method_label
from zlora.train.config import load_train_config

EGS = Path(__file__).resolve().parents[2] / "egs" / "mini12"
CONF = EGS / "asr1" / "conf"
LRE = EGS / "lre1" / "conf"
CONFIGS = sorted(p for p in CONF.rglob("*.yaml")
                 if p.parent.name in ("stage2", "tuning") or p.name == "train_stage1.yaml")
# lre1's own configs (decode.yaml and prompts_tags.yaml are links to asr1's)
CONFIGS += sorted(p for p in LRE.rglob("*.yaml") if not p.is_symlink())   # conf/ and conf/gap/


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EGS)))
def test_config_parses(path):
    cfg = load_train_config(["--config", str(path)])
    assert len(cfg.languages) == 12
    if cfg.stage == 2:
        assert cfg.adapter is not None and cfg.init_from


def test_stage2_methods_differ_only_in_the_adapter():
    base = load_train_config(["--config", str(CONF / "stage2" / "lora.yaml")])
    for method in ["independent", "flylora", "zipper-static", "zipper-hard", "zipper-soft"]:
        cfg = load_train_config(["--config", str(CONF / "stage2" / f"{method}.yaml")])
        assert cfg.adapter.kind == method
        assert (cfg.optim, cfg.data, cfg.model) == (base.optim, base.data, base.model)


@pytest.mark.parametrize("conf, extra, label", [
    (CONF / "train_stage1.yaml", [], "Foundation (stage 1)"),
    (CONF / "stage2/lora.yaml", [], "Vanilla-LoRA"),
    (CONF / "stage2/zipper-soft.yaml", [], "Zipper-LoRA-Soft"),
    (CONF / "stage2/zipper-soft-initb.yaml", ["--adapter.init_b_from", "a.safetensors"],   # as run.sh passes
     "Zipper-LoRA-Soft + initial-B"),
    (LRE / "mole.yaml", [], "LoRA-MoLE"),
    (LRE / "kd.yaml", [], "LoRA-KD"),
    (LRE / "kd_output.yaml", [], "LoRA-KD output-only"),
], ids=lambda x: x.name if isinstance(x, Path) else None)
def test_recipe_configs_get_the_papers_row_labels(conf, extra, label):
    assert method_label(load_train_config(["--config", str(conf), *extra])) == label


def test_lre1_shares_asr1s_decoding_and_prompts():
    for name in ("decode.yaml", "prompts_tags.yaml"):
        assert (LRE / name).resolve() == (CONF / name).resolve(), name
