"""The start-up packing check (zlora.train.sanity): passes with the attention implementations
we support, fails naming the cause when packed rows attend across utterance boundaries."""
import pytest
import torch

from train_testlib import TINY_QWEN3

from zlora.train.sanity import check_packing
from zlora.utils.cli import UserError


def tiny_llm(attn):
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(TINY_QWEN3)
    cfg = AutoConfig.for_model(kw.pop("model_type"), vocab_size=50, **kw)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packing_check_passes_for_supported_attention(attn):
    llm = tiny_llm(attn)
    assert check_packing(llm, torch.device("cpu")) < 1e-4
    assert check_packing(llm, torch.device("cpu"), autocast_bf16=True) < 5e-2     # CPU autocast


def test_packing_check_fails_when_attention_crosses_the_boundary(monkeypatch):
    """Simulate a transformers release that ignores restarted position ids: the check must say so."""
    import transformers.masking_utils as mu

    llm = tiny_llm("sdpa")
    monkeypatch.setattr(mu, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(UserError, match="packing check failed: with attn_implementation='sdpa'.*attends across"):
        check_packing(llm, torch.device("cpu"))
