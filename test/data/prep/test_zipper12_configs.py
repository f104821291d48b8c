"""egs/zipper12/asr1: the training configs parse as TrainConfig and build the model against tiny
stand-in checkpoints of the real families (Whisper with 128 mels, Qwen3 + a tokenizer); they
follow the paper's §V-B values and stay consistent with each other; the data plans and run.sh agree."""
import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from zlora.config import from_dict, read_yaml
from zlora.data.prep.plan import DataPlan
from zlora.train.config import load_train_config

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "egs/zipper12/asr1"
REGIMES = ("chunked", "full")
METHODS = ("lora", "independent", "flylora", "zipper-static", "zipper-hard", "zipper-soft", "zipper-soft-initb")
KINDS = {"lora": "lora", "independent": "independent", "flylora": "flylora", "zipper-static": "zipper-static",
         "zipper-hard": "zipper-hard", "zipper-soft": "zipper-soft", "zipper-soft-initb": "zipper-soft"}
TARGETS = ["de", "es", "fr", "ru", "vi", "it", "en", "th", "ar", "ja", "ko", "pt"]


def config_files():
    return {("stage1", r): RECIPE / f"conf/train_stage1_{r}.yaml" for r in REGIMES} | {
        (m, r): RECIPE / f"conf/stage2/{m}_{r}.yaml" for m in METHODS for r in REGIMES}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """Tiny Whisper (128 mels) and Qwen3 + byte-level BPE tokenizer, saved like the real dirs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM, WhisperConfig,
                              WhisperForConditionalGeneration)

    root = tmp_path_factory.mktemp("standins")
    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(
        num_mel_bins=128, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=64, vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3)).save_pretrained(root / "whisper")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["hello world", "guten tag", "привет", "สวัสดี", "你好", "مرحبا", "こんにちは"],
                            trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(root / "qwen3")
    Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        # two KV heads: k/v_proj are 32 wide, as wide as the recipes' LLM-LoRA rank (rank <= width)
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    ).save_pretrained(root / "qwen3")
    from safetensors.torch import save_file
    save_file({lang: torch.randn(32) for lang in [*TARGETS, "zh"]}, str(root / "lid.safetensors"))
    return root


def load(path, standins, *extra):
    return load_train_config(["--config", str(path), "--model.encoder.whisper_dir", str(standins / "whisper"),
                              "--model.llm.model_dir", str(standins / "qwen3"), *extra])


def build(cfg):
    from zlora.models import build_speech_llm

    model = build_speech_llm(cfg.model, list(cfg.languages))
    model.set_stage(1, None)
    if cfg.stage == 2:
        model.set_stage(2, cfg.adapter)
    return model


def step(model, langs):
    """One forward/backward on random 128-bin features; the loss must be finite and reach the
    trainable parameters."""
    lang_ids = torch.tensor([model.languages.index(lang) for lang in langs])
    batch = {"feats": torch.randn(len(langs), 240, 128), "feat_lens": torch.tensor([240, 170][:len(langs)]),
             "lang_ids": lang_ids, "text_ids": [model.tokenizer.encode("hello") for _ in langs]}
    loss = model(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]


def test_stage1_configs_build_and_train(standins):
    for regime in REGIMES:
        cfg = load(RECIPE / f"conf/train_stage1_{regime}.yaml", standins)
        assert cfg.stage == 1 and cfg.adapter is None and cfg.model.encoder.chunked == (regime == "chunked")
        model = build(cfg)
        assert model.tokenizer.vocab_size > 256
        with_grad = step(model, ["en", "zh"])
        assert any(n.startswith("encoder.") for n in with_grad)      # stage 1 trains the encoder


def test_stage2_configs_build_every_method(standins, tmp_path):
    from zlora.adapters import save_adapter_file

    lid = ["--adapter.conf.lid_embeddings", str(standins / "lid.safetensors")]
    soft = build(load(RECIPE / "conf/stage2/zipper-soft_chunked.yaml", standins, *lid))
    with torch.no_grad():              # a "converged" run: non-zero B banks
        trained_b = {n: p.normal_() for n, p in soft.encoder.named_parameters() if n.endswith(("B_shared", "B_spec"))}
    save_adapter_file(soft.encoder, tmp_path / "soft_adapter.safetensors")   # the Initial-B source
    for (method, regime), path in config_files().items():
        if method == "stage1":
            continue
        extra = list(lid) if method.startswith("zipper-soft") or method == "zipper-hard" else []
        if method == "zipper-soft-initb":
            extra += ["--adapter.init_b_from", str(tmp_path / "soft_adapter.safetensors")]
        cfg = load(path, standins, *extra)
        assert cfg.adapter.kind == KINDS[method], path
        model = build(cfg)
        with_grad = step(model, ["ar", "de"])
        assert with_grad and not any(n.startswith("encoder.") and "base_layer" in n for n in with_grad)
        if method == "zipper-soft-initb":    # the B banks start from the zipper-soft run, not zero
            b = {n: p for n, p in model.encoder.named_parameters() if n.endswith(("B_shared", "B_spec"))}
            assert b.keys() == trained_b.keys()
            assert all(torch.allclose(b[n].detach(), trained_b[n]) for n in b)


def test_paper_values_and_consistency():
    ref = {r: read_yaml(RECIPE / f"conf/train_stage1_{r}.yaml") for r in REGIMES}
    ds = json.loads((REPO / "conf/deepspeed/zero2.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2
    for (method, regime), path in config_files().items():
        c = read_yaml(path)
        enc = c["model"]["encoder"]
        assert enc["n_mels"] == 128 and enc["chunked"] == (regime == "chunked")
        assert enc["train_chunk_seconds"] == [1.0, 2.0, 4.0, 8.0] and enc["decode_chunk_seconds"] == 8.0
        assert c["model"]["llm_lora"] == {"enabled": True, "rank": 32, "alpha": 64.0, "dropout": 0.0}
        assert c["optim"]["lr"] == 2e-5 and c["optim"]["warmup_ratio"] == 0.1 and c["optim"]["scheduler"] == "cosine"
        assert c["data"]["max_tokens"] == 2048
        assert c["data"].get("feats_type", ref[regime]["data"].get("feats_type")) == "raw"   # FLAC shards
        packs = c["data"]["batch_size"] * c["optim"]["grad_accum"]
        assert packs == (16 if regime == "chunked" else 10)       # §V-B: 16 chunked, 10 non-chunked
        # in one micro-batch, which fits 80 GB only with activation checkpointing (bench_memory)
        assert c["optim"]["grad_accum"] == 1
        assert enc["activation_checkpointing"] and c["model"]["llm"]["activation_checkpointing"]
        assert c["engine"]["bf16"] is True
        assert c["engine"]["engine"] == "deepspeed" and c["engine"]["deepspeed_config"] == "conf/deepspeed/zero2.json"
        if method == "stage1":
            continue
        a = c["adapter"]
        assert (a["rank"], a["alpha"]) == (32, 64.0)
        assert a.get("conf", {}).get("k", 8) == 8
        assert c["languages"][:12] == TARGETS and c["stage"] == 2
        # all sections but the method's own match the stage-1 config of the regime
        same = copy.deepcopy(c)
        for k in ("adapter", "init_from", "languages", "stage", "exp_dir", "data"):
            same.pop(k)
        base = {k: v for k, v in ref[regime].items() if k not in ("languages", "stage", "exp_dir", "data")}
        assert same == base, path
        assert {k: v for k, v in c["data"].items() if "train" not in k} == \
            {k: v for k, v in ref[regime]["data"].items() if "train" not in k}


def test_data_plans_share_sets_and_match_run_sh():
    plans = {v: read_yaml(RECIPE / f"conf/data/{v}.yaml") for v in ("lite_1h", "lite_30h")}
    for v, p in plans.items():
        from_dict(DataPlan, p)                                        # parses, set references valid
    a, b = plans["lite_1h"]["sets"], plans["lite_30h"]["sets"]
    for name in set(a) & set(b):
        assert a[name] == b[name], f"set {name} differs between the two plans"
    assert a["train_stage1"] == b["train_stage1"]
    run_sh = (RECIPE / "run.sh").read_text()
    for v, p in plans.items():
        names = set(p["sets"]) | set(p["unions"])
        used = {"train_stage1", f"train_sft_{v}", "test_source", "test_source_ws_net",
                f"test_target_{v}", "test_target_ls_other"}
        assert used <= names, used - names
        langs = set()
        for member in p["unions"][f"test_target_{v}"]:
            langs |= {s["lang"] for s in p["sets"][member]}
        assert langs == set(TARGETS)                                  # one test set per target language
    assert re.search(r'^methods="' + " ".join(METHODS) + '"', run_sh, re.M)
    for name in ("train_sft_${variant}", "test_source test_source_ws_net",
                 "test_target_${variant} test_target_ls_other"):
        assert name in run_sh


def test_run_sh_options(tmp_path):
    subprocess.run(["bash", "-n", str(RECIPE / "run.sh")], check=True)
    # options parse (--variant is a recipe variable); a range that runs no stage is refused, not a
    # silent exit 0 (utils/parse_options.sh)
    none = subprocess.run(["bash", "run.sh", "--stage", "9", "--variant", "lite_30h"], cwd=RECIPE,
                          capture_output=True, text=True)
    assert none.returncode != 0 and "--stage 9 is after --stop_stage 8: no stage would run" in none.stderr, none.stderr
    bad = subprocess.run(["bash", "run.sh", "--no_such_option", "1"], cwd=RECIPE, capture_output=True, text=True)
    assert bad.returncode != 0 and "no_such_option" in bad.stderr
    assert yaml.safe_load((RECIPE / "conf/data/lite_1h.yaml").read_text())["seed"] == 1


def test_run_sh_sequences_the_stages(tmp_path):
    """All stages with `python` and `torchrun` replaced by loggers: the command lines run.sh builds
    (arguments logged one per field, so quoting is checked too)."""
    import shutil

    recipe = tmp_path / "asr1"
    shutil.copytree(RECIPE / "conf", recipe / "conf")
    shutil.copy(RECIPE / "run.sh", recipe)
    (recipe / "utils").symlink_to(REPO / "utils")
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("python", "torchrun"):
        (fake / tool).write_text(f'#!/bin/sh\n{{ printf "{tool}"; printf "|%s" "$@"; echo; }} >> "{tmp_path}/calls"\n')
        (fake / tool).chmod(0o755)
    (recipe / "path.sh").write_text(f'export PATH="{fake}:$PATH"\n')
    res = subprocess.run(["bash", "run.sh", "--whisper_dir", "/m/whisper large", "--llm_dir", "/m/qwen",
                          "--mls", "/c/my mls", "--nnodes", "2", "--node_rank", "1",
                          "--rdzv_endpoint", "node0:29400"], cwd=recipe, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    calls = [c + "|" for c in (tmp_path / "calls").read_text().splitlines()]
    verbs = [c.split("|-m|")[1].split("|")[0] for c in calls]
    assert verbs[:2] == ["zlora.bin.prep_check", "zlora.bin.prep_plan"]
    assert verbs.count("zlora.bin.dump_audio") == 6 and verbs.count("zlora.bin.extract_lid") == 1
    assert all("|--data.train_feats|dump/" in c and "/audio.scp|" in c for c in calls if "|zlora.bin.train|" in c)
    assert all("|--feats_type|raw|--feats|dump/" in c for c in calls if "|zlora.bin.decode|" in c)
    trains = [c for c in calls if "|zlora.bin.train|" in c]
    assert len(trains) == 2 + 2 * len(METHODS)
    assert all(c.startswith("torchrun|--nnodes|2|--node_rank|1|") and "|--rdzv_endpoint|node0:29400|" in c
               for c in trains)
    rdzv_ids = [c.split("|--rdzv_id|")[1].split("|")[0] for c in trains]
    assert len(set(rdzv_ids)) == len(trains)           # one rendezvous per job: no stale joins
    assert "zipper12-stage1-chunked" in rdzv_ids and "zipper12-lite_1h-full-zipper-soft" in rdzv_ids
    assert "|--model.encoder.whisper_dir|/m/whisper large|" in trains[0]     # one argument, spaces kept
    initb = [c for c in trains if "zipper-soft-initb_full" in c][0]
    assert "|--adapter.init_b_from|exp/lite_1h/stage2_full_zipper-soft/final/adapter.safetensors|" in initb
    assert "|--init_from|exp/stage1_full|" in initb and "|--adapter.conf.lid_embeddings|" in initb
    assert "|--adapter.conf.lid_embeddings|" not in [c for c in trains if "stage2/lora_chunked" in c][0]
    # decoding: stage-1 models on the 2 source sets, stage-2 models on all 4; each is scored
    assert verbs.count("zlora.bin.decode") == 2 * 2 + 2 * len(METHODS) * 4 == verbs.count("zlora.bin.score")
    assert verbs.count("zlora.bin.report") == 2 and verbs.count("zlora.bin.plot") == 2 * 2 + 1
    for call in calls[:2]:          # prep_check and prep_plan: one argument per root, spaces kept
        assert "|--roots.mls|/c/my mls|" in call and "|--roots.wenetspeech|null|" in call
        assert all(f"|--roots.{c}|" in call for c in ("librispeech", "commonvoice", "msr86k"))
    assert calls[0].startswith("python|-m|zlora.bin.prep_check|--whisper_dir|/m/whisper large|--llm_dir|/m/qwen|")
