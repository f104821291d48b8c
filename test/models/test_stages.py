"""Stage policies (§IV-F), the parameter table, trainable state dicts."""
import pytest
import torch

from models_testlib import LANGS, random_batch
from zlora.adapters import AdapterConfig
from zlora.config import ConfigError
from zlora.models.stages import named_parts, top_layers_regex

# tiny encoder: 3 layers, d 32, ffn 64 -> LoRA params per layer = r * (4*64 + 96 + 96) = 448 r
ENC_LORA_PER_LAYER = 448
# tiny Qwen3: 2 layers, q 32->32, k/v 32->16, o 32->32, gate/up 32->64, down 64->32 -> 512 r per layer
LLM_LORA_PER_LAYER = 512


def counts(model):
    out = {}
    for part, _, p in named_parts(model):
        t, f = out.get(part, (0, 0))
        out[part] = (t + p.numel(), f) if p.requires_grad else (t, f + p.numel())
    return out


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_stage_1_trains_encoder_projector_and_llm_lora(make_model):
    model = make_model()
    model.set_stage(1)
    c = counts(model)
    pos = model.encoder.embed_positions.weight.numel()
    assert c["encoder"] == (n_params(model.encoder) - pos, pos)       # sinusoidal table stays fixed
    assert c["projector"] == (n_params(model.projector), 0)
    assert c["llm lora"] == (2 * LLM_LORA_PER_LAYER * 4, 0)
    assert c["llm"][0] == 0 and c["llm"][1] > 0
    assert "encoder adapters" not in c
    table = model.parameter_table()
    assert f"{c['llm lora'][0]:,}" in table and "% trainable" in table


def test_stage_1_options_frozen_encoder_trainable_llm_and_cached_layers(make_model):
    model = make_model(encoder={"stage1_trainable": False}, llm={"trainable": True},
                       llm_lora={"enabled": False})
    model.set_stage(1)
    c = counts(model)
    assert c["encoder"][0] == 0 and c["llm"] == (n_params(model.llm), 0)
    cached = make_model(encoder={"cached_layers": 2})
    cached.set_stage(1)
    trainable = {n for _, n, p in named_parts(cached) if p.requires_grad and n.startswith("encoder.")}
    assert trainable and all(n.startswith(("encoder.layers.2.", "encoder.layer_norm.")) for n in trainable)


def test_stage_2_freezes_encoder_and_trains_only_adapters_projector_and_lora(make_model):
    model = make_model()
    model.set_stage(2, AdapterConfig.make(kind="lora", rank=2, alpha=4, languages=LANGS))
    c = counts(model)
    assert c["encoder"][0] == 0
    assert c["encoder adapters"] == (3 * ENC_LORA_PER_LAYER * 2, 0)
    assert c["projector"][1] == 0 and c["llm lora"][1] == 0 and c["llm"][0] == 0
    # gradients reach every trainable tensor and no frozen one; a step moves nothing frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    model(random_batch([60, 40]))["loss"].backward()
    for _, name, p in named_parts(model):
        assert (p.grad is not None) == p.requires_grad, name
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(model.trainable_state_dict())
    assert any("projector" in k for k in changed) and any("lora_B" in k for k in changed)


def test_stage_2_target_regex_restricts_layers_and_cached_layers_are_protected(make_model):
    model = make_model()
    model.set_stage(2, AdapterConfig.make(kind="lora", rank=2, languages=LANGS,
                                     target_modules=top_layers_regex(2, 3)))
    assert counts(model)["encoder adapters"][0] == ENC_LORA_PER_LAYER * 2
    cached = make_model(encoder={"cached_layers": 2})
    with pytest.raises(ConfigError, match="layers 0..1 are cached"):
        cached.set_stage(2, AdapterConfig.make(kind="lora", rank=2, languages=LANGS))
    with pytest.raises(ConfigError, match="must equal the model's languages"):
        make_model().set_stage(2, AdapterConfig.make(kind="independent", rank=2, languages=["fr", "en", "de"]))
    with pytest.raises(ConfigError, match="needs an adapter config"):
        make_model().set_stage(2)


def _perturb_trainable(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def test_trainable_state_dict_round_trip_restores_outputs(make_model):
    cfg = AdapterConfig.make(kind="flylora", rank=4, alpha=8, languages=LANGS, flylora_k=2)
    a = make_model(seed=7)
    a.set_stage(2, cfg)
    _perturb_trainable(a)
    sd = a.trainable_state_dict()
    buffers = set(sd) - {n for n, _ in a.named_parameters()}
    assert buffers, "FlyLoRA's frozen random A must be saved with the checkpoint"
    b = make_model(seed=7)
    b.set_stage(2, AdapterConfig.make(kind="flylora", rank=4, alpha=8, languages=LANGS, flylora_k=2, seed=1))
    batch = random_batch([60, 40, 50])
    a.eval(), b.eval()
    with torch.no_grad():
        assert abs(float(a(batch)["loss"]) - float(b(batch)["loss"])) > 1e-4
        b.load_trainable_state_dict(sd)
        torch.testing.assert_close(a(batch)["loss"], b(batch)["loss"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="missing"):
        b.load_trainable_state_dict({k: v for k, v in sd.items() if "projector" not in k})
    with pytest.raises(ValueError, match="not in this model"):
        b.load_trainable_state_dict({**sd, "nope.weight": torch.zeros(1)})


def test_stage_1_weights_initialise_stage_2(make_model):
    s1 = make_model(seed=2)
    s1.set_stage(1)
    _perturb_trainable(s1)
    sd1 = s1.trainable_state_dict()
    s2 = make_model(seed=9)
    s2.set_stage(1)
    s2.load_trainable_state_dict(sd1)
    s2.set_stage(2, AdapterConfig.make(kind="zipper-static", rank=4, languages=LANGS))
    assert torch.equal(s2.encoder.layers[0].fc1.base_layer.weight, s1.encoder.layers[0].fc1.weight)
    with pytest.raises(ValueError, match="frozen in this stage"):
        s2.load_trainable_state_dict({**s2.trainable_state_dict(),
                                      "encoder.conv1.weight": s1.encoder.conv1.weight})
    with pytest.raises(ConfigError, match="set_stage\\(2\\) was called before"):
        s2.set_stage(1)


@pytest.mark.parametrize("chunked", [False, True])
def test_mixed_language_batch_routes_encoder_adapters_per_row(make_model, chunked):
    """Each row (and, chunked, each chunk) uses its own language's adapter."""
    model = make_model(encoder={"chunked": chunked, "decode_chunk_seconds": 0.4})
    model.set_stage(2, AdapterConfig.make(kind="independent", rank=2, languages=LANGS))
    _perturb_trainable(model)
    model.eval()
    batch = random_batch([90, 41, 130], langs=[2, 0, 1])
    with torch.no_grad():
        speech, lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
        for i, n in enumerate(batch["feat_lens"].tolist()):
            alone, _ = model.encode_speech(batch["feats"][i:i + 1, :n], batch["feat_lens"][i:i + 1],
                                           batch["lang_ids"][i:i + 1])
            torch.testing.assert_close(speech[i, :lens[i]], alone[0], atol=1e-5, rtol=1e-5)
        other, _ = model.encode_speech(batch["feats"][:1, :90], batch["feat_lens"][:1],
                                       torch.tensor([0]))
        assert (other[0] - speech[0, :lens[0]]).abs().max() > 1e-4   # language matters


def test_language_free_adapter_kind_gets_the_model_languages(make_model):
    from zlora.adapters import get_adapter_config, merge_for_language

    model = make_model()
    model.set_stage(2, AdapterConfig.make(kind="lora", rank=2))
    assert get_adapter_config(model.encoder).languages == LANGS
    _perturb_trainable(model)
    model.eval()
    batch = random_batch([60, 40], langs=[1, 1])
    merged = merge_for_language(model, "fr")            # one call folds encoder and LLM adapters
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["loss"], merged(batch)["loss"], atol=1e-5, rtol=1e-5)


def test_whole_llm_from_stage_1_loads_under_stage_2_llm_lora(make_model):
    """mini12's path: stage 1 trains a from-scratch LLM whole (no LLM-LoRA); stage 2 freezes it and
    wraps its linears in LoRA. The stage-1 weights must land in the wrapped base layers."""
    s1 = make_model(seed=1, llm={"trainable": True}, llm_lora={"enabled": False})
    s1.set_stage(1)
    sd = s1.trainable_state_dict()
    assert any(k.startswith("llm.") and "base_layer" not in k for k in sd)
    s2 = make_model(seed=2, llm={"trainable": False}, llm_lora={"enabled": True})
    s2.set_stage(1)
    s2.load_trainable_state_dict(sd, strict=False)
    s2.set_stage(2, AdapterConfig.make(kind="lora", rank=2, alpha=4.0))
    batch = random_batch([40, 33], seed=3)
    s1.eval(), s2.eval()
    with torch.no_grad():                     # LoRA B starts at zero: same function as stage 1
        torch.testing.assert_close(s2(batch)["loss"], s1(batch)["loss"])
