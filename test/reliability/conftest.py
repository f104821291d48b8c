"""Shared fixtures for the reliability tests: a tiny corpus, a tiny trained run, CLI helpers.

Everything is CPU-only and offline; the trained run (2 optimizer steps of a 2-layer model) is built
once per session and copied by tests that damage it.
"""
import copy
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train"))
sys.path.insert(0, str(HERE.parent / "data"))
sys.path.insert(0, str(HERE))

from rel_testlib import run_cli  # noqa: E402,F401
from train_testlib import make_corpus, make_tokenizer, train_config, train_inprocess  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(data dir, feats.scp, sentencepiece model): en + fr, 8 utterances each, random features."""
    root = tmp_path_factory.mktemp("rel_corpus")
    data, feats = make_corpus(root, langs=("en", "fr"), n_per_lang=8)
    return data, feats, make_tokenizer(root, data)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, corpus):
    """A finished stage-1 run: EXP/checkpoints/step-2 and EXP/final. Returns (exp dir, config dict);
    deep-copy the dict before changing it."""
    data, feats, sp = corpus
    root = tmp_path_factory.mktemp("rel_exp")
    cfg = train_config(root / "exp", data, feats, sp, **{"optim.max_steps": 2})
    with pytest.MonkeyPatch.context() as mp:
        assert train_inprocess(mp, cfg, root / "train.yaml") == 0
    return root / "exp", cfg


@pytest.fixture
def exp_copy(tmp_path, trained):
    """A private copy of the trained run (safe to damage)."""
    exp, cfg = trained
    dst = tmp_path / "exp"
    shutil.copytree(exp, dst)
    # the resolved config records exp_dir; a resumed run must see its own
    saved = dst / "config.yaml"
    saved.write_text(saved.read_text().replace(str(exp), str(dst)))
    return dst, {**copy.deepcopy(cfg), "exp_dir": str(dst)}
