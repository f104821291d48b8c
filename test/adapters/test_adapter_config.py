import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from zlora.adapters import (KINDS, AdapterConfig, AdapterLayer, apply_adapters, display_name, kind_spec,
                            kinds, language_context, load_lid_embeddings, register_kind)
from zlora.adapters.registry import ADAPTER_KINDS
from zlora.config import ConfigError, from_dict


def test_from_dict_builds_typed_config_with_the_kinds_options():
    cfg = from_dict(AdapterConfig, {"kind": "zipper-static", "rank": 8, "alpha": 16,
                                    "languages": ["en", "fr"], "conf": {"shared_rank": 6}}, "adapter")
    assert cfg.kind == "zipper-static" and cfg.alpha == 16.0 and cfg.options.shared_rank == 6
    assert cfg.scaling == 2.0 and cfg.spec.display == "Zipper-LoRA-Static"


def test_from_dict_rejects_unknown_keys_options_and_kinds():
    with pytest.raises(ConfigError, match="rnak"):
        from_dict(AdapterConfig, {"rnak": 4}, "adapter")
    with pytest.raises(ConfigError, match="unknown adapter kind 'zipper-medium'; known: .*zipper-soft"):
        from_dict(AdapterConfig, {"kind": "zipper-medium", "languages": ["en"]}, "adapter")
    # an option of another kind is unknown here, naming the kind's valid options
    with pytest.raises(ConfigError, match=r"adapter.conf \(lora\): unknown key\(s\) 'k'"):
        from_dict(AdapterConfig, {"kind": "lora", "languages": ["en"], "conf": {"k": 2}}, "adapter")
    with pytest.raises(ConfigError, match=r"conf \(flylora\).k: expected an integer"):
        from_dict(AdapterConfig, {"kind": "flylora", "conf": {"k": "two"}}, "adapter")


@pytest.mark.parametrize("bad, msg", [
    (dict(kind="zipper-soft", languages=["en"]), "needs conf.lid_embeddings"),
    (dict(kind="independent", languages=[]), "languages"),
    (dict(kind="lora", languages=["en", "en"]), "duplicates: en"),
    (dict(kind="flylora", rank=4, conf={"k": 5}), r"conf.k must be in \[1, rank=4\]"),
    (dict(kind="zipper-static", rank=4, languages=["en"], conf={"shared_rank": 5}), "shared_rank"),
    (dict(kind="zipper-hard", languages=["en"], conf={"lid_embeddings": "x", "tau": 1.5}), "tau"),
    (dict(kind="flylora", init_b_from="x.safetensors"), "not supported for flylora"),
    (dict(kind="lora", languages=["en"], init_router_from="x.safetensors"), "routed kind"),
])
def test_invalid_configs_name_the_problem(bad, msg):
    with pytest.raises(ValueError, match=msg):
        AdapterConfig(**bad)


def test_defaults():
    cfg = AdapterConfig(kind="zipper-static", rank=32, languages=["en"])
    assert cfg.options.shared_rank == 16                       # resolved: rank // 2
    assert AdapterConfig(kind="zipper-soft", languages=["en"], conf={"lid_embeddings": "x"}).options.router_per_layer
    fly = AdapterConfig(kind="flylora", rank=32)
    assert fly.options.nonzeros_for(1280, 32) == 320           # rho = k / r = 8 / 32, authors' default


def test_old_flat_keys_still_load():
    """Configs and adapter files written before ``conf``: the kind's old keys move into conf, old
    keys of other kinds are dropped (recipes set lid_embeddings for every method), other unknown
    keys still fail."""
    old = {"kind": "flylora", "rank": 8, "flylora_k": 2, "flylora_bias_lr": 0.01,
           "lid_embeddings": "exp/lid.safetensors", "tau": 0.5, "mole_experts": []}
    cfg = from_dict(AdapterConfig, old, "adapter")
    assert cfg.conf == {"k": 2, "bias_lr": 0.01} and cfg.options.k == 2
    soft = AdapterConfig.make(kind="zipper-soft", languages=["en"], lid_embeddings="x", center_lid=True,
                              zipper_static_shared_rank=None, flylora_k=8)
    assert soft.conf == {"lid_embeddings": "x", "center_lid": True}
    with pytest.raises(ConfigError, match="flylora_kk"):
        from_dict(AdapterConfig, {"kind": "flylora", "flylora_kk": 2}, "adapter")


def test_metadata_holds_the_options_and_round_trips():
    cfg = AdapterConfig(kind="zipper-hard", rank=4, languages=["en", "fr"],
                        conf={"lid_embeddings": {"en": torch.ones(3), "fr": torch.zeros(3)}, "tau": 0.3})
    meta = json.loads(cfg.to_metadata())
    assert meta["conf"]["lid_embeddings"] == "<embedded tensors>" and meta["conf"]["tau"] == 0.3
    again = AdapterConfig(**{k: v for k, v in meta.items()})
    assert again.options.tau == 0.3 and again.kind == "zipper-hard"


def test_every_list_of_kinds_derives_from_the_registry():
    assert KINDS == kinds(compared=True) and "mole" not in KINDS and "mole" in kinds()
    assert kinds(routed=True) == ("zipper-soft", "zipper-hard")
    assert set(kinds(language_free=True)) == {"lora", "flylora"}
    assert display_name("zipper-soft") == "Zipper-LoRA-Soft" and display_name("lora") == "Vanilla-LoRA"
    assert kind_spec("flylora").mergeable is False
    for name, spec in ADAPTER_KINDS.items():
        assert spec.layer.kind == name and dataclasses.is_dataclass(spec.options)


def test_a_new_kind_needs_only_its_own_registration():
    """docs/extending.md's worked example: a kind registered here, nowhere else, works
    end to end (config with its options, apply, route, save metadata)."""
    from dataclasses import dataclass

    from zlora.adapters.lora import LoRALayer

    @dataclass
    class HalfOptions:
        factor: float = 0.5

    @register_kind(display="Half-LoRA", options=HalfOptions, language_free=True, compared=False)
    class HalfLoRALayer(LoRALayer):
        kind = "half-lora-test"

        def up_weight(self, lang):
            return super().up_weight(lang) * self.cfg.options.factor

    try:
        cfg = from_dict(AdapterConfig, {"kind": "half-lora-test", "rank": 2, "languages": ["en"],
                                        "conf": {"factor": 0.25}}, "adapter")
        model = torch.nn.Sequential(torch.nn.Linear(4, 4))
        apply_adapters(model, cfg)
        assert isinstance(model[0], AdapterLayer) and model[0].cfg.options.factor == 0.25
        with language_context(model, ["en"]):
            assert model(torch.randn(1, 4)).shape == (1, 4)
        assert "half-lora-test" in kinds() and "half-lora-test" not in KINDS
    finally:
        ADAPTER_KINDS.unregister("half-lora-test")


def test_lid_embeddings_from_file_in_language_order_and_centred(tmp_path):
    path = tmp_path / "lid.safetensors"
    save_file({"fr": torch.tensor([0.0, 2.0]), "en": torch.tensor([2.0, 0.0]),
               "de": torch.tensor([9.0, 9.0])}, str(path))
    cfg = AdapterConfig(kind="zipper-soft", languages=["en", "fr"], conf={"lid_embeddings": str(path)})
    assert torch.equal(load_lid_embeddings(cfg), torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    cfg_c = AdapterConfig(kind="zipper-soft", languages=["en", "fr"],
                          conf={"lid_embeddings": str(path), "center_lid": True})
    assert torch.equal(load_lid_embeddings(cfg_c), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    cfg_missing = AdapterConfig(kind="zipper-soft", languages=["en", "ja"], conf={"lid_embeddings": str(path)})
    with pytest.raises(ValueError, match="ja"):
        load_lid_embeddings(cfg_missing)
