"""FlyLoRA (Eq. 9): frozen sparse A, top-k on A x + d, load-balancing bias d."""
import pytest
import torch

from adapter_testlib import adapted, randomize_adapters
from zlora.adapters import adapter_step_hooks, language_context, merge_for_language


def test_A_is_a_frozen_sparse_buffer_without_gradient():
    _, model = adapted("flylora", rank=4, flylora_k=2, flylora_nonzeros=3)
    layer = model[0]
    assert "lora_A" in dict(layer.named_buffers())
    assert all("lora_A" not in n for n, _ in layer.named_parameters())
    assert (torch.count_nonzero(layer.lora_A, dim=1) == 3).all()
    randomize_adapters(model)
    with language_context(model, ["en"] * 2):
        model(torch.randn(2, 5, 8)).sum().backward()
    assert layer.lora_A.grad is None and not layer.lora_A.requires_grad
    assert layer.lora_B.grad.abs().sum() > 0


def test_output_uses_unbiased_Ax_masked_to_top_k_of_Ax_plus_d():
    _, model = adapted("flylora", rank=4, flylora_k=2)
    layer = model[0]
    randomize_adapters(model)
    with torch.no_grad():
        layer.expert_bias.copy_(torch.tensor([0.0, 100.0, 0.0, 100.0]))   # forces ranks 1 and 3
    x = torch.randn(6, 8)
    with language_context(layer, ["en"] * 6):
        y = layer(x)
    h = x @ layer.lora_A.t()
    h[:, [0, 2]] = 0
    want = layer.base_layer(x) + h @ layer.lora_B.t() * layer.scaling
    torch.testing.assert_close(y, want)


def test_bias_moves_toward_balance_only_from_training_passes():
    _, model = adapted("flylora", rank=4, flylora_k=1, flylora_bias_lr=0.05)
    layer = model[0]
    with torch.no_grad():                       # rank 0 always wins at first
        layer.lora_A.zero_()
        layer.lora_A[0, 0] = 10.0
    hooks = adapter_step_hooks(model)
    assert len(hooks) == 2
    x = torch.rand(32, 8) + 1.0                 # A_0 x > 0, all other scores 0
    model.eval()
    with language_context(model, ["en"] * 32):
        model(x)
    for hook in hooks:
        hook()
    assert torch.count_nonzero(layer.expert_bias) == 0      # eval passes never move d
    model.train()
    spreads = []
    for _ in range(200):
        with language_context(model, ["en"] * 32):
            model(x)
        counts = layer.selection_counts.clone()
        spreads.append(int(counts.max() - counts.min()))
        for hook in hooks:
            hook()
    assert spreads[0] == 32                     # one rank took every token
    assert layer.expert_bias[0] < 0 < layer.expert_bias[1:].min()
    assert max(spreads[-20:]) < 32              # other ranks now get selected too


def test_flylora_cannot_be_merged():
    _, model = adapted("flylora")
    with pytest.raises(ValueError, match="depend on the input"):
        merge_for_language(model, "en")
