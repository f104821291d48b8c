"""The precision policy on this CPU (DeepSpeed runs bf16 on a CPU and torch has CPU autocast, so
the GPU path is tested here): every adapter kind, MoLE, KD and Initial-B train under DeepSpeed
bf16 and DDP + autocast, chunked and full; float32 stays float32 where the policy says so."""
import copy
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from models_testlib import LANGS, make_sp_model, random_batch, tiny_model  # noqa: E402
from train_testlib import single_process_env  # noqa: E402

from zlora.adapters import KINDS, AdapterConfig, save_adapter_file  # noqa: E402
from zlora.config import from_dict  # noqa: E402
from zlora.train.config import TrainConfig  # noqa: E402
from zlora.train.distill import build_loss_extensions  # noqa: E402
from zlora.train.distributed import cleanup, init_distributed  # noqa: E402
from zlora.train.engine import DDPEngine, DeepSpeedEngine  # noqa: E402

TARGET = r"layers\.(1|2)\.(self_attn\.(q_proj|v_proj)|fc1|fc2)"
LID = {c: torch.randn(6, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(LANGS)}


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    return make_sp_model(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="module")
def dist():
    """One gloo group for the module: DeepSpeed caches its groups, so engines built after a
    destroy/re-init of the default group would use stale ones."""
    with pytest.MonkeyPatch.context() as mp:
        single_process_env(mp)
        info = init_distributed("gloo", 60)
        yield info
        cleanup()


@pytest.fixture(scope="module")
def experts(sp, tmp_path_factory):
    """One random `lora` expert adapter file per language (MoLE's input)."""
    tmp = tmp_path_factory.mktemp("experts")
    paths = []
    for i in range(len(LANGS)):
        m = tiny_model(sp)
        m.set_stage(2, AdapterConfig.make(kind="lora", rank=4, alpha=8.0, languages=list(LANGS), target_modules=TARGET))
        g = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for n, p in m.encoder.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        paths.append(str(tmp / f"expert{i}.safetensors"))
        save_adapter_file(m.encoder, paths[-1])
    return paths


def adapter_cfg(kind: str, experts=None, **over) -> AdapterConfig:
    kw = dict(kind=kind, rank=4, alpha=8.0, languages=list(LANGS), target_modules=TARGET,
              lid_embeddings=LID, flylora_k=2)
    if kind == "mole":
        kw.update(mole_experts=experts, mole_fused=r"layers\.1\..*", mole_lid_hidden=8)
    kw.update(over)
    return AdapterConfig.make(**kw)


def stage2_model(sp, kind, chunked, experts=None, **over):
    enc = {"chunked": chunked, "train_chunk_seconds": [0.2, 0.4], "decode_chunk_seconds": 0.4}
    model = tiny_model(sp, encoder=enc)
    model.set_stage(2, adapter_cfg(kind, experts, **over))
    return model


def train_cfg(engine: str, kind: str, experts=None, **over) -> TrainConfig:
    cfg = {"exp_dir": "unused", "languages": list(LANGS), "stage": 2, "init_from": "unused",
           "model": {"encoder": {"config": {}}, "llm": {"config": {"model_type": "qwen3"}, "tokenizer": "x"}},
           "data": {"train": "unused", "train_feats": "unused", "batch_size": 1},
           "adapter": adapter_cfg(kind, experts),
           "optim": {"lr": 2e-2, "max_steps": 2, "warmup_ratio": 0.0, "weight_decay": 0.0},
           "engine": {"engine": engine, "bf16": True}}
    cfg.update(over)
    return from_dict(TrainConfig, cfg, "test")


def mixed_batch(chunked: bool, seed: int = 0) -> dict:
    """Four utterances in three languages (two packs of one language each, like the sampler's)."""
    batch = random_batch([90, 52, 70, 36], seed=seed, langs=[0, 0, 1, 2])
    batch["pack_ids"] = torch.tensor([0, 0, 1, 2])
    if chunked:
        batch["chunk_seconds"] = torch.tensor([0.2, 0.4, 0.2, 0.4])
    return batch


def build_engine(name, model, cfg, dist):
    return DeepSpeedEngine(model, cfg, dist) if name == "deepspeed" else DDPEngine(model, cfg.optim, cfg.engine, dist)


def run_steps(engine, cfg, chunked, n=2) -> list[float]:
    engine.loss_extensions = build_loss_extensions(cfg, engine.model)
    losses = []
    for step in range(n):
        out = engine.micro_step(mixed_batch(chunked, seed=step), last=True)
        norm = engine.step(cfg.optim.lr)
        losses.append(float(out["loss"].detach()))
        assert math.isfinite(losses[-1]) and math.isfinite(norm)
    return losses


@pytest.mark.parametrize("chunked", [False, True], ids=["full", "chunked"])
@pytest.mark.parametrize("engine_name", ["deepspeed", "ddp"])
@pytest.mark.parametrize("kind", [*KINDS, "mole"])
def test_every_kind_trains_in_bf16(kind, engine_name, chunked, sp, experts, dist):
    model = stage2_model(sp, kind, chunked, experts)
    cfg = train_cfg(engine_name, kind, experts)
    start = {n: t.float().clone() for n, t in model.trainable_state_dict().items()}
    engine = build_engine(engine_name, model, cfg, dist)
    dtypes = {p.dtype for p in engine.model.parameters()}
    assert dtypes == ({torch.bfloat16} if engine_name == "deepspeed" else {torch.float32})
    run_steps(engine, cfg, chunked)
    weights = engine.full_weights()
    params = {n for n, p in engine.model.named_parameters() if p.requires_grad}
    assert {weights[n].dtype for n in params} == {torch.float32}     # final/ and checkpoints
    moved = [n for n in params if "encoder" in n and not torch.equal(weights[n], start[n])]
    assert moved, "no encoder adapter tensor was updated"
    for m in engine.model.modules():              # the policy's float32 tensors
        for name in getattr(m, "float32_buffers", ()):
            assert getattr(m, name).dtype == torch.float32, (type(m).__name__, name)


def test_deepspeed_full_weights_are_the_float32_masters(sp, dist):
    """bf16 parameters round the masters; full_weights returns the masters themselves."""
    model = stage2_model(sp, "zipper-soft", False)
    cfg = train_cfg("deepspeed", "zipper-soft")
    engine = build_engine("deepspeed", model, cfg, dist)
    run_steps(engine, cfg, False, n=3)
    weights = engine.full_weights()
    name = next(n for n, p in engine.model.named_parameters() if p.requires_grad and "B_shared" in n)
    bf16 = dict(engine.model.named_parameters())[name]
    assert bf16.dtype == torch.bfloat16
    assert torch.equal(weights[name].bfloat16(), bf16.detach().cpu())
    assert not torch.equal(weights[name], bf16.detach().float().cpu())   # more bits than bf16


def test_kd_teachers_follow_the_student_precision(sp, dist, monkeypatch):
    """LoRA-KD under DeepSpeed bf16: teachers are cast to bf16 (they take the bf16 batch)."""
    import zlora.train.checkpoint as ckpt

    teacher = stage2_model(sp, "lora", True)
    with torch.no_grad():
        for n, p in teacher.encoder.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.3)        # an expert that differs from the student
    tcfg = train_cfg("deepspeed", "lora")
    monkeypatch.setattr(ckpt, "load_model_for_inference", lambda exp: (copy.deepcopy(teacher).eval(), tcfg))
    model = stage2_model(sp, "lora", True)
    cfg = train_cfg("deepspeed", "lora", distill={"experts": ["a", "b", "c"]})
    engine = build_engine("deepspeed", model, cfg, dist)
    engine.loss_extensions = build_loss_extensions(cfg, engine.model)
    kd = engine.loss_extensions[-1]
    assert {p.dtype for t in kd.teachers.values() for p in t.parameters()} == {torch.bfloat16}
    out = engine.micro_step(mixed_batch(True), last=True)
    engine.step(cfg.optim.lr)
    assert math.isfinite(float(out["loss"].detach())) and kd.last["kd_layer"] > 0 and math.isfinite(kd.last["kd_js"])
    # An expert that encodes differently (full context vs chunks) cannot be compared frame by frame.
    from zlora.config import ConfigError

    other = stage2_model(sp, "lora", False)
    monkeypatch.setattr(ckpt, "load_model_for_inference", lambda exp: (copy.deepcopy(other).eval(), tcfg))
    with pytest.raises(ConfigError, match=r"distill.experts\[0\] a: model.encoder.chunked is False but this run has True"):
        build_loss_extensions(cfg, engine.model)


def test_initial_b_warm_start_trains_in_bf16(sp, dist, tmp_path):
    donor = stage2_model(sp, "zipper-soft", False)
    with torch.no_grad():
        for n, p in donor.encoder.named_parameters():
            if "B_" in n:
                p.copy_(torch.randn_like(p) * 0.1)
    save_adapter_file(donor.encoder, tmp_path / "soft.safetensors")
    model = stage2_model(sp, "zipper-soft", True, init_b_from=str(tmp_path / "soft.safetensors"))
    layer = model.encoder.get_submodule("layers.1.fc1")
    assert layer.B_shared.abs().sum() > 0                       # warm-started
    cfg = train_cfg("deepspeed", "zipper-soft")
    run_steps(build_engine("deepspeed", model, cfg, dist), cfg, True)


def test_casting_keeps_router_inputs_and_flylora_bias_in_float32(sp):
    """model.to(bf16) (what older DeepSpeed releases do, buffers included) keeps them float32
    with their values, and FlyLoRA's 1e-3 bias steps still land at |d| >= 0.5."""
    model = stage2_model(sp, "flylora", False)
    layer = model.encoder.get_submodule("layers.1.fc1")
    with torch.no_grad():
        layer.expert_bias.fill_(0.75)
    model.to(torch.bfloat16)
    assert layer.expert_bias.dtype == torch.float32 and layer.base_layer.weight.dtype == torch.bfloat16
    layer.selection_counts[0] = 5                 # rank 0 over-used, the others never
    layer.on_optimizer_step()
    assert layer.expert_bias[0].item() == pytest.approx(0.749) and layer.expert_bias[1].item() == pytest.approx(0.751)
    zipper = stage2_model(sp, "zipper-hard", False)
    router = zipper.encoder.get_submodule("layers.1.fc1").router
    p32 = router()
    zipper.to(torch.bfloat16)
    assert router.lid_embeddings.dtype == torch.float32
    assert router().dtype == torch.float32
    torch.testing.assert_close(router(), p32, atol=2e-2, rtol=0)      # only the weights were rounded
