"""Smoke test of python -m zlora.bin.bench_train --quick: it runs and prints valid JSON lines
(no timing assertions: this is a benchmark, not a timed test)."""
import math


def test_bench_train_quick(run_quick):
    rows = run_quick("zlora.bin.bench_train")
    steps = [r for r in rows if r["bench"] == "train_step"]
    assert [r["kind"] for r in steps] == ["lora", "zipper-soft"]
    for r in steps:
        assert r["step_ms"] > 0 and math.isfinite(r["loss_first"])
        assert 0 <= r["loader_share"] < 1
        assert 0 < r["batch_real_over_padded"] <= 1 and 0 < r["pack_fill_real_over_max_tokens"] <= 1
        assert r["utts_per_step"] > r["packs_per_step"] >= 1      # packs hold several utterances
        assert r["audio_s_per_s"] > 0 and r["tokens_per_s"] > 0
    # zipper-soft trains more than plain LoRA (per-language B + router)
    assert steps[1]["trainable_params"] > steps[0]["trainable_params"]
    packing = [r for r in rows if r["bench"] == "packing"]
    assert {r["max_tokens"] for r in packing} == {320, 640, 1024, 2048}
    for r in packing:   # the packer can never beat the per-language lower bound on packs
        assert r["packs"] >= r["min_packs"] and r["pack_fill"] <= r["pack_fill_upper_bound"] <= 1
    mem = [r for r in rows if r["bench"] == "train_step_memory"]
    assert len(mem) == 1 and mem[0]["peak_rss_mib"] >= mem[0]["rss_after_build_mib"] > 0
