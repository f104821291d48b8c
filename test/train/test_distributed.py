"""torchrun --nproc_per_node 2 runs of a tiny Speech-LLM under DDP and DeepSpeed ZeRO-2 (CPU, gloo):
ranks end identical, see disjoint data, the loss falls; a killed run resumes to the uninterrupted
result exactly; a hung rank ends the run through the collective timeout."""
import subprocess
import time
from collections import defaultdict

import pytest
import torch
from safetensors.torch import load_file

from train_testlib import PY, REPO, env, final_weights, read_metrics, run_train, train_config, write_config

pytestmark = pytest.mark.slow

STEPS = 6


def config(tmp_path, corpus, name, engine, **over):
    data, feats, sp = corpus
    cfg = train_config(tmp_path / name, data, feats, sp, **{
        "engine.engine": engine, "optim.max_steps": STEPS, "checkpoint.every_n_steps": 2,
        "debug.log_utts": True, "debug.dump_rank_params": True, "model.llm_lora.dropout": 0.1, **over})
    return write_config(tmp_path / f"{name}.yaml", cfg), tmp_path / name


def check_ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory, corpus):
    """Uninterrupted 2-rank runs, one per engine: {engine: exp dir}."""
    tmp = tmp_path_factory.mktemp("full")
    out = {}
    for engine in ("ddp", "deepspeed"):
        cfg, exp = config(tmp, corpus, engine, engine)
        t0 = time.time()
        check_ok(run_train(cfg, nproc=2))
        print(f"{engine}: 2-rank run of {STEPS} steps took {time.time() - t0:.1f} s")
        out[engine] = exp
    return out


def utts_by_rank(exp):
    seen = {}
    for rank in (0, 1):
        by_step = defaultdict(set)
        for line in (exp / "debug" / f"utts.rank{rank}.txt").read_text().splitlines():
            epoch, batch, utt = line.split("\t")
            by_step[(int(epoch), int(batch))].add(utt)
        seen[rank] = by_step
    return seen


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_two_ranks_agree_see_disjoint_data_and_learn(full_runs, engine):
    exp = full_runs[engine]
    p0, p1 = (load_file(str(exp / "debug" / f"params.rank{r}.safetensors")) for r in (0, 1))
    assert p0.keys() == p1.keys() and len(p0) > 10
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"{engine}: {k} differs between ranks"
    final = final_weights(exp)
    assert all(torch.equal(final[k], p0[k]) for k in p0)
    seen = utts_by_rank(exp)
    assert seen[0].keys() == seen[1].keys() and len(seen[0]) == STEPS
    for key in seen[0]:
        assert seen[0][key] and seen[1][key] and not seen[0][key] & seen[1][key], key
    losses = [m["loss"] for m in read_metrics(exp)]
    assert len(losses) == STEPS
    # The tiny corpus (6 packs) is repeated every step: the loss must fall clearly.
    assert losses[-1] < losses[0] - 0.05, losses


def test_ddp_and_zero2_compute_the_same_training(full_runs):
    a, b = final_weights(full_runs["ddp"]), final_weights(full_runs["deepspeed"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def check_resumed_equals_full(exp, full):
    got, want = read_metrics(exp), read_metrics(full)
    assert [m["step"] for m in got] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in got] == [m["loss"] for m in want]          # exactly, every step
    a, b = final_weights(exp), final_weights(full)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_ddp_sigkill_after_a_step_then_resume_is_exact(tmp_path, corpus, full_runs):
    cfg, exp = config(tmp_path, corpus, "killed", "ddp")
    proc = run_train(cfg, nproc=2, ZLORA_DEBUG_KILL="after_step:3")
    assert proc.returncode != 0
    assert (exp / "checkpoints" / "latest").read_text().strip() == "step-2"
    assert not (exp / "final").exists()
    check_ok(run_train(cfg, nproc=2, args=["--resume", "true"]))
    check_resumed_equals_full(exp, full_runs["ddp"])


def test_zero2_sigkill_while_writing_a_checkpoint_then_resume_is_exact(tmp_path, corpus, full_runs):
    cfg, exp = config(tmp_path, corpus, "killed_ds", "deepspeed")
    proc = run_train(cfg, nproc=2, ZLORA_DEBUG_KILL="checkpoint_write:4")
    assert proc.returncode != 0
    ckpts = exp / "checkpoints"
    assert (ckpts / ".step-4.partial" / "model.safetensors").is_file()   # killed mid-write
    assert not (ckpts / "step-4").exists()
    assert (ckpts / "latest").read_text().strip() == "step-2"           # previous one still named
    load_file(str(ckpts / "step-2" / "model.safetensors"))
    check_ok(run_train(cfg, nproc=2, args=["--resume", "true"]))
    assert not (ckpts / ".step-4.partial").exists()
    check_resumed_equals_full(exp, full_runs["deepspeed"])


HANG_SCRIPT = """
import sys, time
from zlora.train.distributed import all_reduce_sum, init_distributed
info = init_distributed(None, timeout_s=3.0)
all_reduce_sum([1.0], info.device)          # both ranks alive: fine
if info.rank == 1:
    time.sleep(120)                         # a rank that hangs (deadlock, stuck I/O, ...)
t0 = time.time()
try:
    all_reduce_sum([1.0], info.device)
except Exception as e:
    print(f"rank 0 gave up after {time.time() - t0:.1f} s: {type(e).__name__}: {e}", flush=True)
    sys.exit(3)
"""


def test_a_hung_rank_ends_the_run_through_the_collective_timeout(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(HANG_SCRIPT)
    t0 = time.time()
    proc = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=100)
    assert proc.returncode != 0
    assert "rank 0 gave up after" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    waited = float(proc.stdout.split("gave up after ")[1].split(" s")[0])
    assert 2.5 <= waited < 20 and time.time() - t0 < 90


def test_plain_single_process_deepspeed_needs_nothing_set_and_builds_no_op(tmp_path, corpus):
    cfg, exp = config(tmp_path, corpus, "single", "deepspeed", **{"optim.max_steps": 2})
    ext = tmp_path / "torch_extensions"
    proc = run_train(cfg, nproc=1, TORCH_EXTENSIONS_DIR=str(ext))   # no RANK/WORLD_SIZE/MASTER_*
    check_ok(proc)
    assert (exp / "final" / "model.safetensors").is_file()
    assert (exp / "checkpoints" / "step-2" / "optimizer-rank0.pt").is_file()
    # DeepSpeed's CPU shared-memory op (inference only) is not JIT-compiled: nothing was built.
    assert not ext.exists() or not any(ext.iterdir())
