import pytest
import torch

from adapter_testlib import LANGS, lid_embeddings, make_cfg, randomize_adapters, tiny_mlp
from zlora.adapters import apply_adapters, language_context, save_adapter_file


@pytest.fixture
def soft_file(tmp_path):
    model = tiny_mlp()
    apply_adapters(model, make_cfg("zipper-soft"))
    randomize_adapters(model, seed=5)
    path = tmp_path / "soft.safetensors"
    save_adapter_file(model, path)
    return model, str(path)


def test_soft_warm_start_copies_both_banks_but_not_A_or_router(soft_file):
    src, path = soft_file
    model = tiny_mlp()
    apply_adapters(model, make_cfg("zipper-soft", init_b_from=path, seed=1))
    for i in (0, 2):
        assert torch.equal(model[i].B_shared, src[i].B_shared)
        assert torch.equal(model[i].B_spec, src[i].B_spec)
        assert not torch.equal(model[i].lora_A, src[i].lora_A)
        assert not torch.equal(model[i].router.proj.weight, src[i].router.proj.weight)


def test_full_warm_start_reproduces_the_source(soft_file):
    src, path = soft_file
    model = tiny_mlp()
    apply_adapters(model, make_cfg("zipper-soft", init_b_from=path, init_router_from=path,
                                   init_a_from_b_file=True, seed=1))
    x = torch.randn(3, 4, 8)
    with language_context(model, LANGS), language_context(src, LANGS):
        assert torch.equal(model(x), src(x))


def test_languages_are_matched_by_code(soft_file):
    src, path = soft_file
    model = tiny_mlp()
    apply_adapters(model, make_cfg("zipper-hard", languages=["ja", "en"], init_b_from=path))
    assert torch.equal(model[0].B_spec, src[0].B_spec[[2, 0]])
    with pytest.raises(ValueError, match="de"):
        apply_adapters(tiny_mlp(), make_cfg("zipper-soft", languages=["de"],
                                            lid_embeddings=lid_embeddings(langs=["de"]),
                                            init_b_from=path))


def test_static_takes_rank_aligned_columns(soft_file):
    src, path = soft_file
    model = tiny_mlp()
    apply_adapters(model, make_cfg("zipper-static", zipper_static_shared_rank=1, init_b_from=path))
    assert torch.equal(model[2].B_shared, src[2].B_shared[:1])      # rank-major: rows = ranks
    assert torch.equal(model[2].B_spec, src[2].B_spec[:, 1:])


def test_lora_and_independent_take_shared_and_specific_banks(soft_file):
    src, path = soft_file
    lora, indep = tiny_mlp(), tiny_mlp()
    apply_adapters(lora, make_cfg("lora", init_b_from=path))
    apply_adapters(indep, make_cfg("independent", init_b_from=path))
    assert torch.equal(lora[0].lora_B, src[0].B_shared.t())
    assert torch.equal(indep[0].lora_B, src[0].B_spec)


def test_source_must_be_a_dynamic_zipper_of_the_same_rank(tmp_path, soft_file):
    _, path = soft_file
    indep = tiny_mlp()
    apply_adapters(indep, make_cfg("independent"))
    bad = str(tmp_path / "indep.safetensors")
    save_adapter_file(indep, bad)
    with pytest.raises(ValueError, match="'independent'"):
        apply_adapters(tiny_mlp(), make_cfg("zipper-soft", init_b_from=bad))
    with pytest.raises(ValueError, match="rank differs"):
        apply_adapters(tiny_mlp(), make_cfg("zipper-soft", rank=8, init_b_from=path))
