"""LoRA-KD losses and extensions (zlora/train/distill.py)."""
import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from models_testlib import make_sp_model, random_batch, tiny_model  # noqa: E402

from zlora.adapters import AdapterConfig  # noqa: E402
from zlora.train.distill import (DistillConfig, DistillExtension, cosine_distance,  # noqa: E402
                                 js_divergence, token_languages)


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    return make_sp_model(tmp_path_factory.mktemp("sp"))


def test_losses_zero_iff_equal():
    h = torch.randn(2, 5, 8)
    assert float(cosine_distance(h, h.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distance(h, -h)) == pytest.approx(2.0, abs=1e-5)
    valid = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    other = h.clone()
    other[0, 2:] = -h[0, 2:]                      # differs only on padded frames
    assert float(cosine_distance(h, other, valid)) == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(7, 11)
    assert float(js_divergence(z, z.clone())) == pytest.approx(0.0, abs=1e-6)
    js = float(js_divergence(z, torch.randn(7, 11)))
    assert 0.0 < js <= float(torch.log(torch.tensor(2.0))) + 1e-6


def _student(sp, seed=0):
    m = tiny_model(sp)
    m.set_stage(2, AdapterConfig(kind="lora", rank=4, alpha=8.0, languages=["en", "fr", "de"],
                                 target_modules=r"layers\.(1|2)\.(fc1|fc2)"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def test_kd_terms_zero_when_student_equals_teacher(sp):
    student = _student(sp)
    teachers = {i: copy.deepcopy(student).eval() for i in range(3)}
    ext = DistillExtension(student, teachers, DistillConfig())
    student.train()
    batch = random_batch([40, 32, 36, 20], langs=[0, 1, 2, 0])
    out = ext(student, batch, student(batch))
    assert ext.last["kd_layer"] == pytest.approx(0.0, abs=1e-5)
    assert ext.last["kd_js"] == pytest.approx(0.0, abs=1e-5)
    # A different expert for one language makes both terms positive and differentiable.
    teachers[1] = _student(sp, seed=5).eval()
    ext = DistillExtension(student, teachers, DistillConfig())
    out = ext(student, batch, student(batch))
    assert ext.last["kd_layer"] > 1e-4 and ext.last["kd_js"] > 1e-6
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in student.named_parameters() if "encoder" in n and "lora_A" in n)


def test_output_only_mode_has_no_layer_term(sp):
    student = _student(sp)
    ext = DistillExtension(student, {i: _student(sp, seed=7).eval() for i in range(3)},
                           DistillConfig(mode="output"))
    student.train()
    batch = random_batch([30, 30], langs=[0, 2])
    ext(student, batch, student(batch))
    assert ext.last["kd_layer"] == 0.0 and ext.last["kd_js"] > 0


def test_token_languages_follow_packing():
    batch = {"lang_ids": torch.tensor([1, 0, 1]), "text_ids": [[5, 6], [7], [8, 9, 10]],
             "pack_ids": torch.tensor([0, 1, 0])}
    assert token_languages(batch).tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0]
