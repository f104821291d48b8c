"""Start-up checks that guard silent training errors.

:func:`check_packing`: training packs several utterances into one LLM row with ``position_ids``
restarting at 0 per utterance and no attention mask; transformers turns that into block-diagonal
causal attention (``find_packed_sequence_indices``). Whether it does depends on the release and
on the attention implementation (eager, sdpa, flash), so a different install could let every
utterance attend to the ones before it in its pack -- training would run and silently learn from
the wrong context. This runs the model's own LLM, in the precision and attention implementation
training uses, on a toy row of two sequences, and compares the second sequence's hidden states
packed and alone.
"""
from __future__ import annotations

import torch
from torch import nn

from zlora.utils.cli import UserError
from zlora.utils.log import get_logger

log = get_logger("train")

# Relative error ||packed - alone|| / ||alone|| allowed: rounding only. Attending across the
# boundary changes a randomly initialised or a pretrained model's states by far more (> 0.1).
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 2e-2}


@torch.no_grad()
def check_packing(llm: nn.Module, device: torch.device, autocast_bf16: bool = False,
                  lengths: tuple[int, int] = (7, 9), seed: int = 0) -> float:
    """Raise UserError when a packed row's second sequence differs from the sequence alone;
    return the relative error. ``llm``: a Hugging Face causal LM (its base model is run)."""
    emb = llm.get_input_embeddings()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, emb.num_embeddings, (sum(lengths),), generator=g).to(device)
    first, second = lengths
    pos_packed = torch.cat([torch.arange(first), torch.arange(second)]).to(device)
    was_training = llm.training
    llm.eval()
    dtype = torch.bfloat16 if autocast_bf16 else emb.weight.dtype
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            packed = _hidden(llm, ids[None], pos_packed[None])[0, first:]
            alone = _hidden(llm, ids[None, first:], torch.arange(second, device=device)[None])[0]
    finally:
        llm.train(was_training)
    err = float((packed.float() - alone.float()).norm() / alone.float().norm().clamp_min(1e-12))
    attn = getattr(llm.config, "_attn_implementation", "?")
    if not err <= TOLERANCE.get(dtype, 5e-2):
        import transformers

        raise UserError(f"packing check failed: with attn_implementation={attn!r} (transformers "
                        f"{transformers.__version__}, {dtype}) a packed utterance differs from the same "
                        f"utterance alone (relative error {err:.3g}): it attends across the pack "
                        "boundary. Use model.llm.attn_implementation sdpa or eager, or the "
                        "transformers release pinned in tools/constraints.txt")
    log.info("packing check: attn_implementation=%s, %s, packed vs alone relative error %.2g", attn, dtype, err)
    return err


def _hidden(llm: nn.Module, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    from zlora.models.stages import adapter_language_context

    embeds = llm.get_input_embeddings()(ids)
    # LLM-LoRA is plain LoRA (language-independent) but carries the languages: route by any one.
    with adapter_language_context(llm, torch.zeros(1, dtype=torch.long, device=ids.device)):
        return llm.base_model(inputs_embeds=embeds, position_ids=pos, use_cache=False).last_hidden_state
