"""Smoke test of python -m zlora.bin.bench_decode --quick: it runs (every hypothesis has exactly the
forced number of tokens, else the benchmark raises) and prints valid JSON lines. No timing asserts."""


def test_bench_decode_quick(run_quick):
    rows = run_quick("zlora.bin.bench_decode")
    setup = [r for r in rows if r["bench"] == "decode_setup"]
    assert len(setup) == 1 and setup[0]["new_tokens_per_utt"] == 5
    dec = {r["variant"]: r for r in rows if r["bench"] == "decode"}
    assert set(dec) == {"greedy_b1", "greedy_b8", "beam4_b8", "encode_b1", "encode_b8", "greedy_b8_merged"}
    assert dec["greedy_b8_merged"]["speedup_vs_unmerged"] > 0
    assert all(r["median_s"] > 0 and r["rtf"] > 0 for r in dec.values())
    assert dec["greedy_b8"]["speedup_vs_b1"] > 0 and "met" in dec["greedy_b8"]
    assert dec["greedy_b8"]["encoder_share"] > 0 and "speedup_llm_part" in dec["greedy_b8"]
    assert dec["beam4_b8"]["cost_vs_greedy_same_batch"] > 0


def test_no_eos_tokenizer_hides_eos_only():
    from zlora.bin.bench_decode import NoEOSTokenizer

    class Tok:
        eos_id, pad_id = 2, 0

        def encode(self, s):
            return [5, 6]

    t = NoEOSTokenizer(Tok())
    assert t.eos_id == -1 and t.pad_id == 0 and t.encode("x") == [5, 6]
