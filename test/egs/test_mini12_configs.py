"""Every mini12 training config (demo, tuning, second paper) parses into TrainConfig."""
from pathlib import Path

import pytest

from zlora.train.config import load_train_config

CONF = Path(__file__).resolve().parents[2] / "egs" / "mini12" / "asr1" / "conf"
CONFIGS = sorted(p for p in CONF.rglob("*.yaml")
                 if p.parent.name in ("stage2", "tuning", "lre") or p.name == "train_stage1.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONF)))
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
