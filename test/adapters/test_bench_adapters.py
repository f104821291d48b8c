"""Smoke test of the adapter benchmark CLI (tiny shapes; it is a benchmark, not a timed test)."""
import json

from zlora.bin import bench_adapters


def test_quick_run_prints_json_lines_with_ratios(capsys):
    assert bench_adapters.main(["--quick", "--sections", "params,kinds"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    params = {(r["kind"], r["languages"]): r for r in records if r["section"] == "params"}
    # Exact arithmetic at the quick shapes (d 64, d_ff 256, 2 layers, r 8): lora = 2 layers x
    # r x (4 x (64 + 64) + (64 + 256) + (256 + 64)).
    assert params[("lora", 12)]["trainable"] == 2 * 8 * (4 * 128 + 2 * 320)
    assert params[("independent", 12)]["trainable"] == 12 * params[("lora", 12)]["trainable"]
    timed = [r for r in records if r["section"] == "kinds_fwd_bwd"]
    assert {r["variant"] for r in timed} == {"lora", "independent", "flylora", "zipper-static",
                                             "zipper-hard", "zipper-soft"}
    assert all(r["cpu_median_ms"] > 0 and "ratio_vs_lora" in r for r in timed)
