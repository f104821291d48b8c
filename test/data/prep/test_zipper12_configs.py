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

from prep_testlib import make_standins
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
    root = make_standins(tmp_path_factory.mktemp("standins"))
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
    # a bad --cmd stops before any stage (else it would surface after days of training)
    cmd = subprocess.run(["bash", "run.sh", "--cmd", "sge", "--stage", "6"], cwd=RECIPE, capture_output=True, text=True)
    assert cmd.returncode != 0 and "--cmd sge: expected local or slurm" in cmd.stderr and "stage 6" not in cmd.stderr
    assert yaml.safe_load((RECIPE / "conf/data/lite_1h.yaml").read_text())["seed"] == 1


def commands(call: str) -> list[str]:
    """A logged call as the commands it runs: a zlora.bin.chain call split at its ``---``, each
    command as "python|-m|VERB|ARGS|" (the chain's own options kept apart: ``chain_opts``)."""
    fields = call.strip("|").split("|")
    if fields[:3] != ["python", "-m", "zlora.bin.chain"]:
        return [call]
    args, out, cur = fields[3:], [], []
    while args and args[0].startswith("--") and args[0] != "---":   # the chain's options and values
        args = args[2:]
    for a in args + ["---"]:
        if a == "---":
            if cur:
                out.append("python|-m|" + "|".join(cur) + "|")
            cur = []
        else:
            cur.append(a)
    return out


def chain_opts(call: str) -> str:
    fields = call.strip("|").split("|")[3:]
    opts = []
    while fields and fields[0].startswith("--") and fields[0] != "---":
        opts += fields[:2]
        fields = fields[2:]
    return "|" + "|".join(opts) + "|"


def fake_run(tmp_path, *args):
    """run.sh with `python` and `torchrun` replaced by loggers; the logged calls ("|"-joined)."""
    import shutil

    recipe = tmp_path / "asr1"
    if not recipe.exists():
        shutil.copytree(RECIPE / "conf", recipe / "conf")
        shutil.copy(RECIPE / "run.sh", recipe)
        (recipe / "utils").symlink_to(REPO / "utils")
        fake = tmp_path / "bin"
        fake.mkdir()
        for tool in ("python", "torchrun"):
            (fake / tool).write_text(f'#!/bin/sh\n{{ printf "{tool}"; printf "|%s" "$@"; echo; }} >> "{tmp_path}/calls"\n')
            (fake / tool).chmod(0o755)
        (recipe / "path.sh").write_text(f'export PATH="{fake}:$PATH"\n')
    (tmp_path / "calls").unlink(missing_ok=True)
    res = subprocess.run(["bash", "run.sh", *args], cwd=recipe, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [c + "|" for c in (tmp_path / "calls").read_text().splitlines()], res.stderr


def test_run_sh_sequences_the_stages(tmp_path):
    """All stages with `python` and `torchrun` replaced by loggers: the command lines run.sh builds
    (arguments logged one per field, so quoting is checked too)."""
    top, _ = fake_run(tmp_path, "--whisper_dir", "/m/whisper large", "--llm_dir", "/m/qwen",
                      "--mls", "/c/my mls", "--nnodes", "2", "--node_rank", "1",
                      "--rdzv_endpoint", "node0:29400", "--decode_opts", "--decoding.beam_size 2")
    calls = [c for call in top for c in commands(call)]
    verbs = [c.split("|-m|")[1].split("|")[0] for c in calls]
    assert verbs[:2] == ["zlora.bin.prep_check", "zlora.bin.prep_plan"]
    assert verbs.count("zlora.bin.dump_audio") == 6 and verbs.count("zlora.bin.extract_lid") == 1
    assert all("|--data.train_feats|dump/" in c and "/audio.scp|" in c for c in calls if "|zlora.bin.train|" in c)
    trains = [c for c in calls if "|zlora.bin.train|" in c]
    assert len(trains) == 2 + 2 * len(METHODS)
    assert all(c.startswith("python|-m|zlora.bin.torchrun|--nnodes|2|--node_rank|1|") and "|--rdzv_endpoint|node0:29400|" in c
               for c in trains)
    rdzv_ids = [c.split("|--rdzv_id|")[1].split("|")[0] for c in trains]
    assert len(set(rdzv_ids)) == len(trains)           # one rendezvous per job: no stale joins
    assert "zipper12-stage1-chunked" in rdzv_ids and "zipper12-lite_1h-full-zipper-soft" in rdzv_ids
    assert "|--model.encoder.whisper_dir|/m/whisper large|" in trains[0]     # one argument, spaces kept
    initb = [c for c in trains if "zipper-soft-initb_full" in c][0]
    assert "|--adapter.init_b_from|exp/lite_1h/stage2_full_zipper-soft/final/adapter.safetensors|" in initb
    assert "|--init_from|exp/stage1_full|" in initb and "|--adapter.conf.lid_embeddings|" in initb
    assert "|--adapter.conf.lid_embeddings|" not in [c for c in trains if "stage2/lora_chunked" in c][0]
    # decoding: one process per model, all its test sets (stage 1: the 2 source sets; stage 2: 4)
    decodes = [c for c in calls if "|zlora.bin.decode|" in c]
    assert len(decodes) == 2 + 2 * len(METHODS)
    assert all("|--feats_type|raw|" in c and "|--decoding.beam_size|2|" in c for c in decodes)
    s1 = [c for c in decodes if "|--exp|exp/stage1_full|" in c][0]
    assert "|--data|[data/test_source,data/test_source_ws_net]|" in s1
    assert "|--feats|[dump/test_source/audio.scp,dump/test_source_ws_net/audio.scp]|" in s1
    soft = [c for c in decodes if "|--exp|exp/lite_1h/stage2_chunked_zipper-soft|" in c][0]
    assert "|--out|[" + ",".join(f"exp/lite_1h/stage2_chunked_zipper-soft/decode_{s}" for s in
                                 ("test_source", "test_source_ws_net", "test_target_lite_1h",
                                  "test_target_ls_other")) + "]|" in soft
    decode_chain = [c for c in top if "|zlora.bin.decode|" in c]
    assert len(decode_chain) == 1 and "|--nj|1|" in chain_opts(decode_chain[0])   # local: one model at a time
    assert all("|--nj|4|" in c for c in decodes)                                  # over decode_nj GPUs
    # scoring: one score_decodes per regime over every decode dir; two reports under exp/
    scores = [c for c in calls if "|zlora.bin.score_decodes|" in c]
    assert len(scores) == 2 and sum(c.count("/decode_") for c in scores) == 2 * 2 + 2 * len(METHODS) * 4
    reports = [c for c in calls if "|zlora.bin.report|" in c]
    assert [r.split("|--out|")[1].split("|")[0] for r in reports] == \
        ["exp/RESULTS_lite_1h.md", "exp/RESULTS_lite_1h_source.md"]
    assert all("|--baseline|exp/lite_1h/stage2_chunked_lora|" in r for r in reports)
    plots = [c for c in calls if "|zlora.bin.plot|" in c]
    assert len(plots) == 2 * 2 + 1 and all("|--out|exp/figures_lite_1h/" in c for c in plots)
    # the parallel stages' chains all take --cmd and a per-stage log dir
    for call in top:
        if any(f"|zlora.bin.{v}|" in call for v in ("prep_plan", "dump_audio", "extract_lid", "decode", "score_decodes")):
            assert "|--cmd|local|" in chain_opts(call) and "|--log_dir|exp/log/stage" in chain_opts(call)
    for call in calls[:2]:          # prep_check and prep_plan: one argument per root, spaces kept
        assert "|--roots.mls|/c/my mls|" in call and "|--roots.wenetspeech|null|" in call
        assert all(f"|--roots.{c}|" in call for c in ("librispeech", "commonvoice", "msr86k"))
        assert "|--root_flag_prefix||" in call         # hints name run.sh's --mls, not --roots.mls
    assert calls[0].startswith("python|-m|zlora.bin.prep_check|--whisper_dir|/m/whisper large|--llm_dir|/m/qwen|")


def test_run_sh_slurm_pilot_and_missing_baseline(tmp_path):
    """--cmd slurm reaches every parallel chain with its sbatch options, decoding spreads models
    over decode_nj array tasks; --plan/--hours_scale reach prep_plan; a baseline method left out
    of --methods means no Fig. 6 (logged) and the reports get a baseline that is not a run."""
    top, err = fake_run(tmp_path, "--cmd", "slurm", "--sbatch_opts", "--partition gpu --gres gpu:1",
                        "--plan", "conf/data/pilot.yaml", "--hours_scale", "0.01", "--regimes", "full",
                        "--methods", "zipper-soft flylora", "--decode_nj", "3")
    chains = [c for c in top if c.startswith("python|-m|zlora.bin.chain|") and "|zlora.bin.report|" not in c
              and "|zlora.bin.plot|" not in c]
    assert len(chains) == 5
    assert all("|--cmd|slurm|--sbatch_opts|--partition gpu --gres gpu:1|" in chain_opts(c) for c in chains)
    prep = [c for c in top if "|zlora.bin.prep_plan|" in c][0]
    assert "|--config|conf/data/pilot.yaml|--hours_scale|0.01|" in prep
    decode = [c for c in top if "|zlora.bin.decode|" in c][0]
    assert "|--nj|3|" in chain_opts(decode) and all("|--nj|1|" in c for c in commands(decode))
    plots = [c for call in top for c in commands(call) if "|zlora.bin.plot|" in c]
    assert [p.split("|zlora.bin.plot|")[1].split("|")[0] for p in plots] == ["radar", "lid"]
    assert "no Fig. 6: baseline lora is not among --methods" in err
    assert "baseline lora is not among --methods (zipper-soft flylora): no relative change" in err
