import pytest
import torch
from safetensors.torch import save_file

from zlora.adapters import AdapterConfig, load_lid_embeddings
from zlora.config import ConfigError, from_dict


def test_from_dict_builds_typed_config():
    cfg = from_dict(AdapterConfig, {"kind": "zipper-static", "rank": 8, "alpha": 16,
                                    "languages": ["en", "fr"], "zipper_static_shared_rank": 6},
                    "adapter")
    assert cfg.kind == "zipper-static" and cfg.alpha == 16.0 and cfg.static_shared_rank == 6
    assert cfg.scaling == 2.0


def test_from_dict_rejects_unknown_key_and_bad_kind():
    with pytest.raises(ConfigError, match="rnak"):
        from_dict(AdapterConfig, {"rnak": 4}, "adapter")
    with pytest.raises(ConfigError, match="kind"):
        from_dict(AdapterConfig, {"kind": "zipper-medium", "languages": ["en"]}, "adapter")


@pytest.mark.parametrize("bad, msg", [
    (dict(kind="zipper-soft", languages=["en"]), "lid_embeddings"),
    (dict(kind="independent", languages=[]), "languages"),
    (dict(kind="lora", languages=["en", "en"]), "duplicates: en"),
    (dict(kind="flylora", rank=4, flylora_k=5), "flylora_k"),
    (dict(kind="zipper-static", rank=4, languages=["en"], zipper_static_shared_rank=5), "shared_rank"),
    (dict(kind="flylora", init_b_from="x.safetensors"), "flylora"),
])
def test_invalid_configs_name_the_problem(bad, msg):
    with pytest.raises(ValueError, match=msg):
        AdapterConfig(**bad)


def test_defaults():
    cfg = AdapterConfig(kind="zipper-static", rank=32, languages=["en"])
    assert cfg.static_shared_rank == 16
    assert cfg.router_per_layer is True
    assert cfg.flylora_nonzeros_for(1280) == 320      # rho = k / r = 8 / 32, authors' default


def test_lid_embeddings_from_file_in_language_order_and_centred(tmp_path):
    path = tmp_path / "lid.safetensors"
    save_file({"fr": torch.tensor([0.0, 2.0]), "en": torch.tensor([2.0, 0.0]),
               "de": torch.tensor([9.0, 9.0])}, str(path))
    cfg = AdapterConfig(kind="zipper-soft", languages=["en", "fr"], lid_embeddings=str(path))
    assert torch.equal(load_lid_embeddings(cfg), torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    cfg_c = AdapterConfig(kind="zipper-soft", languages=["en", "fr"], lid_embeddings=str(path),
                          center_lid=True)
    assert torch.equal(load_lid_embeddings(cfg_c), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    cfg_missing = AdapterConfig(kind="zipper-soft", languages=["en", "ja"], lid_embeddings=str(path))
    with pytest.raises(ValueError, match="ja"):
        load_lid_embeddings(cfg_missing)
