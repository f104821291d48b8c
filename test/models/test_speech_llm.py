"""SpeechLLM: input layout (Eq. 3-5), loss mask, packing, lengths, LLM loading."""
import pytest
import torch

from models_testlib import LANGS, random_batch
from zlora.adapters import language_context
from zlora.config import ConfigError, from_dict
from zlora.models import SpeechLLMConfig, build_speech_llm
from zlora.models.speech_llm import IGNORE, pack_rows


def test_loss_mask_covers_exactly_transcript_and_eos(make_model):
    model = make_model()
    batch = random_batch([90, 41, 130], langs=[0, 2, 1], texts=[[5, 6, 7], [8], [9, 10, 11, 12]])
    with torch.no_grad():
        speech, s_lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
        seq = model.training_sequences(speech, s_lens, batch["lang_ids"], batch["text_ids"],
                                       pack_rows(batch["lang_ids"], None))
    eos = model.tokenizer.eos_id
    for i, text in enumerate(batch["text_ids"]):
        start = len(model.prompt_ids(LANGS[int(batch["lang_ids"][i])])) + int(s_lens[i])
        labels = seq["labels"][i]
        kept = (labels != IGNORE).nonzero().flatten().tolist()
        assert kept == list(range(start, start + len(text) + 1))
        assert labels[kept].tolist() == text + [eos]
        # prompt tokens come first, then exactly s_lens[i] speech frames
        n_prompt = len(model.prompt_ids(LANGS[int(batch["lang_ids"][i])]))
        emb = model.llm.get_input_embeddings()
        prompt = torch.tensor(model.prompt_ids(LANGS[int(batch["lang_ids"][i])]))
        torch.testing.assert_close(seq["embeds"][i, :n_prompt], emb(prompt))
        torch.testing.assert_close(seq["embeds"][i, n_prompt:start], speech[i, :s_lens[i]])
    out = model(batch)
    assert out["n_target_tokens"] == sum(len(t) + 1 for t in batch["text_ids"])


def test_loss_equals_transformers_own_shifted_loss(make_model):
    model = make_model()
    batch = random_batch([90, 41, 130])
    with torch.no_grad():
        ours = model(batch)["loss"]
        speech, s_lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
        seq = model.training_sequences(speech, s_lens, batch["lang_ids"], batch["text_ids"],
                                       pack_rows(batch["lang_ids"], None))
        with language_context(model.llm, seq["row_langs"]):
            ref = model.llm(inputs_embeds=seq["embeds"], position_ids=seq["position_ids"],
                            labels=seq["labels"], use_cache=False).loss
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_loss_equals_unpacked_loss(make_model, impl):
    model = make_model(llm={"attn_implementation": impl})
    batch = random_batch([90, 41, 130, 60, 77], langs=[0, 1, 0, 1, 2])
    pack_ids = torch.tensor([0, 1, 0, 1, 2])
    assert len(pack_rows(batch["lang_ids"], pack_ids)) == 3
    with torch.no_grad():
        unpacked = model(batch)
        packed = model({**batch, "pack_ids": pack_ids})
    assert packed["n_target_tokens"] == unpacked["n_target_tokens"]
    torch.testing.assert_close(packed["loss"], unpacked["loss"], atol=1e-5, rtol=1e-5)
    # the check can fail: packing without restarting positions / block attention differs
    with torch.no_grad():
        speech, s_lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
        seq = model.training_sequences(speech, s_lens, batch["lang_ids"], batch["text_ids"],
                                       pack_rows(batch["lang_ids"], pack_ids))
        with language_context(model.llm, seq["row_langs"]):
            naive = model.llm(inputs_embeds=seq["embeds"], labels=seq["labels"], use_cache=False).loss
    assert abs(float(naive) - float(unpacked["loss"])) > 1e-4


def test_packs_must_be_language_homogeneous():
    with pytest.raises(ValueError, match="mixes languages"):
        pack_rows(torch.tensor([0, 1]), torch.tensor([3, 3]))


def test_gradients_reach_encoder_projector_and_lora_in_stage_1(make_model):
    model = make_model()
    model.set_stage(1)
    model.train()
    model(random_batch([90, 41]))["loss"].backward()
    assert model.encoder.layers[0].fc1.weight.grad.abs().sum() > 0
    assert model.projector.gate_up.weight.grad.abs().sum() > 0
    lora_b = [p for n, p in model.llm.named_parameters() if n.endswith("lora_B")]
    assert lora_b and all(p.grad is not None for p in lora_b)
    assert all(p.grad is None for n, p in model.llm.named_parameters() if "base_layer" in n)


def test_chunked_training_forward(make_model):
    model = make_model(encoder={"chunked": True, "train_chunk_seconds": [0.2, 0.4]})
    model.set_stage(1)
    model.train()
    batch = random_batch([90, 41, 130])
    out = model({**batch, "chunk_seconds": torch.tensor([0.2, 0.4, 0.2])})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    model(batch)                              # no chunk_seconds: the model samples them


def test_speech_token_count_matches_the_projected_lengths(make_model):
    model = make_model()
    lens = [1, 2, 7, 8, 9, 15, 16, 17, 100, 101]
    batch = random_batch(lens)
    with torch.no_grad():
        _, s_lens = model.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
    assert s_lens.tolist() == [model.speech_token_count(n) for n in lens]
    assert [model.speech_token_count(n) for n in (800, 801)] == [100, 101]   # 100 Hz -> 12.5 Hz
    chunked = make_model(encoder={"chunked": True, "decode_chunk_seconds": 0.2}).eval()
    with torch.no_grad():
        _, c_lens = chunked.encode_speech(batch["feats"], batch["feat_lens"], batch["lang_ids"])
    assert c_lens.tolist() == s_lens.tolist()
    cached = make_model(encoder={"cached_layers": 1})
    assert cached.speech_token_count(51) == 13 and cached.seconds_per_frame == 0.02


def test_prompts_come_from_the_shared_file(make_model):
    from zlora.models.prompts import load_prompts

    model = make_model()
    prompts = load_prompts()
    for lang in LANGS:
        assert model.tokenizer.decode(model.prompt_ids(lang)) == prompts[lang]
    with pytest.raises(ValueError, match="no prompt for language 'xx'"):
        model.prompt_ids("xx")


def test_llm_hub_name_is_refused(sp_model):
    cfg = from_dict(SpeechLLMConfig, {"encoder": {"config": {}},
                                      "llm": {"model_dir": "Qwen/Qwen3-1.7B"}}, "model")
    with pytest.raises(ConfigError, match="'Qwen/Qwen3-1.7B' is not a local directory.*no model hub"):
        build_speech_llm(cfg, LANGS)


def test_llm_and_tokenizer_from_a_local_hf_dir(tmp_path):
    """Any AutoModelForCausalLM dir works, with the tokenizer from the same dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from models_testlib import TINY_QWEN3, TINY_WHISPER
    from zlora.models.prompts import load_prompts

    words = sorted({w for lang in LANGS for w in load_prompts()[lang].split()})
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    kw = {k: v for k, v in TINY_QWEN3.items() if k != "model_type"}
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("qwen3", vocab_size=len(vocab), **kw)
                                     ).save_pretrained(tmp_path)
    cfg = from_dict(SpeechLLMConfig, {"encoder": {"config": dict(TINY_WHISPER)},
                                      "llm": {"model_dir": str(tmp_path)},
                                      "llm_lora": {"rank": 2}}, "model")
    model = build_speech_llm(cfg, LANGS)
    assert model.tokenizer.eos_id == 2 and model.tokenizer.vocab_size == len(vocab)
    assert 1 not in model.prompt_ids("fr")                      # every prompt word is known
    batch = random_batch([50, 33], texts=[[3, 4], [5]])
    assert torch.isfinite(model(batch)["loss"])


def test_out_of_vocabulary_text_ids_are_an_error(make_model):
    model = make_model()
    with pytest.raises(ValueError, match="text_ids row 1: token id 999 outside the LLM vocabulary"):
        model(random_batch([40, 40], texts=[[3], [4, 999]]))


def test_ctc_auxiliary_loss_is_added_in_training_only(make_model):
    model = make_model()
    model.set_stage(1)
    batch = random_batch([90, 41, 130])
    model.eval()
    plain = model(batch)["loss"].detach()
    model.cfg.ctc_weight = 0.5
    assert torch.equal(model(batch)["loss"], plain)          # validation stays the transcript CE
    model.train()
    out = model(batch)
    assert out["ce_loss"] == pytest.approx(float(plain), rel=1e-5) and out["ctc_loss"] > 0
    assert float(out["loss"].detach()) == pytest.approx(out["ce_loss"] + 0.5 * out["ctc_loss"], rel=1e-5)
    out["loss"].backward()
    assert model.projector.gate_up.weight.grad.abs().sum() > 0


def test_ctc_reads_speech_tokens_through_the_output_embedding_with_pad_as_blank(make_model):
    model = make_model()
    emb = model.llm.get_output_embeddings().weight.detach()
    pad = model.tokenizer.pad_id
    text = [[5, 9, 9, 17]]                    # a repeat needs a blank between its two frames
    frames = [5, pad, 9, pad, 9, 17, pad]
    speech = 100.0 * emb[frames][None] / emb[frames].norm(dim=-1, keepdim=True)[None]
    lens = torch.tensor([len(frames)])
    with torch.no_grad():
        right = float(model.ctc_loss(speech, lens, text))
        wrong = float(model.ctc_loss(speech, lens, [[17, 9, 5, 9]]))
    assert right < 0.5 < wrong
