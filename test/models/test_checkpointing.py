"""Activation checkpointing (zlora.adapters.checkpointing): gradients with and without it are
equal (fp32, CPU) for every adapter kind, in mixed-language batches, chunked and full; plain
torch checkpointing is what fails without the routing restore."""
import pytest
import torch
from torch.utils.checkpoint import checkpoint

from models_testlib import LANGS, TINY_WHISPER, random_batch, tiny_model

from zlora.adapters import KINDS, AdapterConfig, NoLanguageContextError, language_context
from zlora.adapters.checkpointing import enable_activation_checkpointing, is_checkpointed
from zlora.adapters.mole import lid_loss, mole_state

TARGET = r"layers\.(1|2)\.(self_attn\.(q_proj|v_proj)|fc1|fc2)"
LID = {c: torch.randn(6, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(LANGS)}


def adapted_model(sp_model, kind, chunked, checkpointed, tmp_path):
    enc = {"chunked": chunked, "train_chunk_seconds": [0.2, 0.4], "decode_chunk_seconds": 0.4,
           "activation_checkpointing": checkpointed, "config": {**TINY_WHISPER, "dropout": 0.1}}
    model = tiny_model(sp_model, seed=3, encoder=enc, llm={"activation_checkpointing": checkpointed},
                       llm_lora={"dropout": 0.1})
    kw = dict(kind=kind, rank=4, alpha=8.0, languages=list(LANGS), target_modules=TARGET,
              lid_embeddings=LID, flylora_k=2)
    if kind == "mole":
        kw.update(mole_experts=expert_files(sp_model, tmp_path), mole_fused=r"layers\.1\..*", mole_lid_hidden=8)
    model.set_stage(2, AdapterConfig.make(**kw))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():          # non-zero B everywhere, so every adapter tensor gets a gradient
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    if kind == "mole":
        mole_state(model).collect = True
    return model.train()


def expert_files(sp_model, tmp_path):
    from zlora.adapters import save_adapter_file

    paths = []
    for i in range(len(LANGS)):
        m = tiny_model(sp_model, seed=i)
        m.set_stage(2, AdapterConfig.make(kind="lora", rank=4, alpha=8.0, languages=list(LANGS), target_modules=TARGET))
        with torch.no_grad():
            for n, p in m.encoder.named_parameters():
                if "lora_" in n:
                    p.normal_(0, 0.3)
        paths.append(str(tmp_path / f"expert{i}.safetensors"))
        save_adapter_file(m.encoder, paths[-1])
    return paths


def grads(model, batch, seed=0):
    torch.manual_seed(seed)        # dropout: the same masks in both runs (and in recomputation)
    out = model(batch)
    loss = out["loss"]
    extra = lid_loss(model)
    if extra is not None:
        loss = loss + extra
    loss.backward()
    counts = {n: int(m.selection_counts.sum()) for n, m in model.named_modules() if hasattr(m, "selection_counts")}
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}, counts


def mixed_batch(chunked):
    batch = random_batch([90, 52, 70, 36], seed=4, langs=[0, 1, 2, 1])
    batch["pack_ids"] = torch.tensor([0, 1, 2, 3])
    if chunked:
        batch["chunk_seconds"] = torch.tensor([0.2, 0.4, 0.2, 0.4])
    return batch


@pytest.mark.parametrize("chunked", [False, True], ids=["full", "chunked"])
@pytest.mark.parametrize("kind", [*KINDS, "mole"])
def test_gradients_equal_with_and_without_checkpointing(kind, chunked, sp_model, tmp_path):
    plain = adapted_model(sp_model, kind, chunked, False, tmp_path)
    ckpt = adapted_model(sp_model, kind, chunked, True, tmp_path)
    assert all(is_checkpointed(layer) for layer in ckpt.encoder.layers)
    assert all(is_checkpointed(layer) for layer in ckpt.llm.base_model.layers)
    batch = mixed_batch(chunked)
    want, want_counts = grads(plain, batch)
    got, got_counts = grads(ckpt, batch)
    assert set(got) == set(want) and len(want) == sum(p.requires_grad for p in plain.parameters())
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-5, msg=n)
    assert got_counts == want_counts          # FlyLoRA counts each forward once, not on recompute


def test_plain_checkpointing_loses_the_language_context(make_model):
    """Why the routing restore exists: torch's non-reentrant checkpoint recomputes after the
    language context has closed."""
    model = make_model()
    model.set_stage(2, AdapterConfig.make(kind="independent", rank=4, alpha=8.0, languages=list(LANGS)))
    layer = model.encoder.layers[1]
    x = torch.randn(2, 5, model.encoder.d_model, requires_grad=True)
    with language_context(model.encoder, ["en", "fr"]):
        y = checkpoint(layer, x, None, use_reentrant=False)
    with pytest.raises(NoLanguageContextError):
        y.sum().backward()
    enable_activation_checkpointing([layer])
    with language_context(model.encoder, ["en", "fr"]):
        y = layer(x, None)
    y.sum().backward()                         # recomputed with the forward's languages
    assert x.grad is not None


def test_no_checkpointing_in_eval_or_without_grad(make_model):
    model = make_model(encoder={"activation_checkpointing": True})
    batch = random_batch([40, 30])
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out["loss"].grad_fn is None
