import torch

from zlora.adapters.router import LIDRouter


def test_router_maps_every_language_to_rank_weights_in_unit_interval():
    lid = torch.randn(5, 12)
    router = LIDRouter(lid, rank=7, gen=torch.Generator().manual_seed(0))
    p = router()
    assert p.shape == (5, 7) and (p > 0).all() and (p < 1).all()
    proj = router.proj
    want = torch.sigmoid(torch.nn.functional.layer_norm(lid, (12,)) @ proj.weight.t() + proj.bias)
    torch.testing.assert_close(p, want)                     # Eq. 16-18


def test_layernorm_makes_router_invariant_to_embedding_scale():
    lid = torch.randn(3, 12)
    r1 = LIDRouter(lid, rank=4, gen=torch.Generator().manual_seed(1))
    r2 = LIDRouter(lid * 50 + 3, rank=4, gen=torch.Generator().manual_seed(1))
    torch.testing.assert_close(r1(), r2(), atol=1e-5, rtol=1e-4)
    r3 = LIDRouter(lid, rank=4, gen=torch.Generator().manual_seed(2))
    assert not torch.allclose(r1(), r3())
