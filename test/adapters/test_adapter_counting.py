import torch
from torch import nn

from adapter_testlib import adapted
from zlora.adapters import AdapterConfig, apply_adapters, count_trainable_parameters

# tiny_mlp: Linear(8 -> 16), Linear(16 -> 6); rank 4; 3 languages; LID dim 6.
IO = [(8, 16), (16, 6)]
R, L, D_LID = 4, 3, 6
ROUTER = 2 * D_LID + D_LID * R + R          # LayerNorm + Linear(d_lid -> r), per layer


def _expected(kind):
    if kind == "lora":
        return sum(R * (i + o) for i, o in IO), 0
    if kind == "independent":
        return sum(L * R * (i + o) for i, o in IO), 0
    if kind == "flylora":                     # A is a frozen buffer: only B trains
        return sum(R * o for _, o in IO), 0
    if kind == "zipper-static":               # r_s = r_p = 2
        return sum(R * i + 2 * o + L * 2 * o for i, o in IO), 0
    return sum(R * i + R * o + L * R * o for i, o in IO), ROUTER * len(IO)


def test_counts_match_the_closed_form_for_every_kind():
    for kind in ("lora", "independent", "flylora", "zipper-static", "zipper-hard", "zipper-soft"):
        base, model = adapted(kind)
        adapter, router = _expected(kind)
        counts = count_trainable_parameters(model)
        assert (counts["adapter"], counts["router"]) == (adapter, router), kind
        assert counts["model_trainable"] == adapter + router
        assert counts["model_frozen"] == sum(p.numel() for p in base.parameters())


def test_shared_router_counted_once():
    _, model = adapted("zipper-soft", router_per_layer=False)
    assert count_trainable_parameters(model)["router"] == ROUTER


def test_zipper_needs_fewer_parameters_than_independent_at_whisper_shapes():
    """One Whisper-large-v3 encoder layer's linears (meta device), r=32, 12 languages."""
    langs = [f"l{i}" for i in range(12)]
    lid = {c: torch.randn(1280) for c in langs}

    def layer():
        with torch.device("meta"):
            return nn.ModuleDict({"q": nn.Linear(1280, 1280), "fc1": nn.Linear(1280, 5120),
                                  "fc2": nn.Linear(5120, 1280)})
    counts = {}
    for kind in ("independent", "zipper-soft", "lora"):
        model = layer()
        apply_adapters(model, AdapterConfig.make(kind=kind, rank=32, languages=langs, lid_embeddings=lid))
        counts[kind] = count_trainable_parameters(model)["adapter_total"]
    assert counts["lora"] < counts["zipper-soft"] < counts["independent"]
