"""Checkpoint plumbing without training: pointers, pruning, init_from resolution, RNG round trip."""
import random

import numpy as np
import pytest
import torch

from zlora.config import ConfigError
from zlora.models import assembly
from zlora.train.trained import load_model_for_inference
from zlora.train import checkpoint as ck


def fake_ckpt(root, step):
    d = root / "checkpoints" / f"step-{step}"
    d.mkdir(parents=True)
    (d / "meta.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"x")
    return d


def test_latest_pointer_and_pruning_keep_the_newest(tmp_path):
    assert ck.read_latest(tmp_path) is None
    for s in (2, 4, 6, 8):
        fake_ckpt(tmp_path, s)
    root = tmp_path / "checkpoints"
    (root / "latest").write_text("step-6\n")      # e.g. step-8 was renamed but 'latest' not yet updated
    ck.prune_checkpoints(root, keep_last=1)
    assert sorted(p.name for p in root.glob("step-*")) == ["step-6", "step-8"]   # latest survives
    assert ck.read_latest(tmp_path) == root / "step-6"
    (root / "latest").write_text("step-2\n")      # names a pruned dir
    with pytest.raises(ck.CheckpointError, match="not a complete checkpoint"):
        ck.read_latest(tmp_path)


def test_partials_are_removed(tmp_path):
    p = tmp_path / "checkpoints" / ".step-4.partial"
    p.mkdir(parents=True)
    ck.remove_partials(tmp_path)
    assert not p.exists()


def test_resolve_init_from(tmp_path):
    exp = tmp_path / "s1"
    with pytest.raises(ConfigError, match="does not exist"):
        assembly.resolve_init_from(str(exp))
    d = fake_ckpt(exp, 10)
    with pytest.raises(ConfigError, match="holds no stage-1 model"):
        assembly.resolve_init_from(str(exp))             # no final/ yet
    src = assembly.resolve_init_from(str(d))              # a checkpoint dir works
    assert src.weights == d / "model.safetensors" and src.config == exp / "config.yaml"
    (exp / "final").mkdir()
    (exp / "final" / "model.safetensors").write_bytes(b"x")
    assert assembly.resolve_init_from(str(exp)).weights == exp / "final" / "model.safetensors"


def test_load_model_for_inference_needs_a_finished_run(tmp_path):
    with pytest.raises(ck.CheckpointError, match="has training of .* finished"):
        load_model_for_inference(tmp_path)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    ck._save_state(ck.rng_state(), tmp_path / "rng.pt")
    want = (torch.rand(3), np.random.rand(3), random.random())
    ck.set_rng_state(ck.load_state(tmp_path / "rng.pt"))    # weights_only=True inside
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_truncated_state_file_names_the_file(tmp_path):
    ck._save_state({"step": torch.tensor(3)}, tmp_path / "trainer.pt")
    data = (tmp_path / "trainer.pt").read_bytes()
    (tmp_path / "trainer.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="trainer.pt: cannot load"):
        ck.load_state(tmp_path / "trainer.pt")


def test_frozen_fingerprint_skips_aliases_of_trainable_tied_weights():
    import torch
    from zlora.models.assembly import frozen_fingerprint

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight          # tied, like tie_word_embeddings
            self.frozen = torch.nn.Linear(3, 3)
            self.frozen.requires_grad_(False)

        def trainable_state_dict(self):
            return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    fp = frozen_fingerprint(Tied())
    assert "head.weight" not in fp and "emb.weight" not in fp
    assert set(fp) == {"frozen.weight", "frozen.bias"}
