"""LoRA-MoLE (zlora/adapters/mole.py) on a tiny Whisper-encoder Speech-LLM."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from models_testlib import LANGS, make_sp_model, random_batch, tiny_model  # noqa: E402

from zlora.adapters import AdapterConfig, language_context, save_adapter_file  # noqa: E402
from zlora.adapters.mole import MoLELayer, lid_loss, mole_state  # noqa: E402

TARGET = r"layers\.(1|2)\.(self_attn\.(q_proj|v_proj)|fc1|fc2)"


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    return make_sp_model(tmp_path_factory.mktemp("sp"))


def _expert_files(sp, tmp_path):
    """One random `lora` expert per language, saved as adapter files."""
    paths = []
    for i, _ in enumerate(LANGS):
        m = tiny_model(sp)
        m.set_stage(2, AdapterConfig.make(kind="lora", rank=4, alpha=8.0, languages=list(LANGS),
                                     target_modules=TARGET))
        g = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for n, p in m.encoder.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        paths.append(str(tmp_path / f"expert{i}.safetensors"))
        save_adapter_file(m.encoder, paths[-1])
    return paths, m


def _mole_model(sp, paths):
    m = tiny_model(sp)
    m.set_stage(2, AdapterConfig.make(kind="mole", rank=4, alpha=8.0, languages=list(LANGS),
                                 target_modules=TARGET, mole_experts=paths,
                                 mole_fused=r"layers\.1\..*", mole_lid_hidden=8))
    return m


def test_routed_layers_reproduce_each_expert(sp, tmp_path):
    paths, last_expert = _expert_files(sp, tmp_path)
    mole = _mole_model(sp, paths)
    layer = mole.encoder.get_submodule("layers.2.fc1")
    ref = last_expert.encoder.get_submodule("layers.2.fc1")
    x = torch.randn(2, 5, layer.in_features)
    mole_state(mole).mode = "true"
    with language_context(mole.encoder, ["de", "de"]):
        got = layer(x)
    with language_context(last_expert.encoder, ["de", "de"]):
        want = ref(x)
    torch.testing.assert_close(got, want)
    with language_context(mole.encoder, ["en", "de"]):
        mixed = layer(x)
    assert not torch.allclose(mixed[0], want[0])
    torch.testing.assert_close(mixed[1], want[1])


def test_fusion_weights_and_classifier_get_gradients_and_route(sp, tmp_path):
    paths, _ = _expert_files(sp, tmp_path)
    mole = _mole_model(sp, paths)
    fused = [m for m in mole.encoder.modules() if isinstance(m, MoLELayer) and m.fused]
    assert fused and all(m.fusion_logits.requires_grad for m in fused)
    assert not any(isinstance(m, MoLELayer) and m.fused for m in mole.encoder.layers[2].modules())
    state = mole_state(mole)
    state.collect = True
    mole.train()
    batch = random_batch([40, 32, 36], langs=[0, 1, 2])
    out = mole(batch)
    loss = out["loss"] + lid_loss(mole)
    loss.backward()
    assert all(m.fusion_logits.grad is not None and m.fusion_logits.grad.abs().sum() > 0 for m in fused)
    owner = next(m for m in mole.encoder.modules() if isinstance(m, MoLELayer))
    assert owner.lid_classifier.net[0].weight.grad.abs().sum() > 0
    # Predicted routing: force the classifier to say "fr" for every row; deep layers then use fr.
    mole.eval()
    with torch.no_grad():
        owner.lid_classifier.net[2].weight.zero_()
        owner.lid_classifier.net[2].bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
        x, lens = batch["feats"], batch["feat_lens"]
        pred_out, _ = mole.encoder(x, lens, torch.tensor([0, 0, 0]))
        assert state.row_prediction().tolist() == [1, 1, 1]
        state.mode = "true"
        true_fr, _ = mole.encoder(x, lens, torch.tensor([1, 1, 1]))
        true_en, _ = mole.encoder(x, lens, torch.tensor([0, 0, 0]))
    torch.testing.assert_close(pred_out, true_fr)
    assert not torch.allclose(pred_out, true_en)


def test_mole_state_round_trips_through_trainable_state_dict(sp, tmp_path):
    paths, _ = _expert_files(sp, tmp_path)
    mole = _mole_model(sp, paths)
    sd = mole.trainable_state_dict()
    assert any(k.endswith("expert_A") for k in sd) and any("lid_classifier" in k for k in sd)
    other = _mole_model(sp, [])
    other.load_trainable_state_dict(sd)
    for k, v in sd.items():
        torch.testing.assert_close(other.state_dict()[k], v)


def test_expert_count_must_match_languages():
    with pytest.raises(ValueError, match="one expert file per language"):
        AdapterConfig.make(kind="mole", languages=["en", "fr"], mole_experts=["a"])
