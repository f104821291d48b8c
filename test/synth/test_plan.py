"""The corpus plan (no audio): disjoint test transcripts, held-out voices, determinism, ids."""
import dataclasses

import pytest

from zlora.config import ConfigError, from_dict
from zlora.data.synth.config import SynthConfig
from zlora.data.synth.plan import SPLIT_NAMES, partition_variants, plan_corpus
from zlora.data.synth.text import normalise_transcript

VARIANTS = [f"m{i}" for i in range(1, 9)] + [f"f{i}" for i in range(1, 6)] + ["klatt", "Mr serious"]


def _cfg(**kw):
    base = dict(high=["en", "zh"], low=["ja"], n_test_variants=3,
                counts=dict(train_high=12, train_low=6, dev=4, test=5, foundation=8, foundation_dev=2))
    base.update(kw)
    return from_dict(SynthConfig, base)


def _by(plan, split, field):
    return {getattr(s, field) for s in plan[split]}


def test_test_split_disjoint_from_everything_else():
    plan = plan_corpus(_cfg(), VARIANTS)
    for lang in ["en", "zh", "ja"]:
        keys = {n: {normalise_transcript(s.text) for s in plan[n] if s.lang == lang} for n in SPLIT_NAMES}
        others = set().union(*(v for n, v in keys.items() if n != "test"))
        assert keys["test"] and not keys["test"] & others
        assert not keys["dev"] & (keys["train_high"] | keys["train_low_full"])


def test_test_voices_held_out_and_foundation_voices_disjoint():
    cfg = _cfg()
    plan = plan_corpus(cfg, VARIANTS)
    variant_of = lambda split: {s.voice.split("+", 1)[1] for s in plan[split]}  # noqa: E731
    test_v = variant_of("test")
    for split in SPLIT_NAMES:
        if split != "test":
            assert not test_v & variant_of(split), split
    assert not variant_of("foundation") & (variant_of("train_high") | variant_of("dev"))
    assert "Mr serious" not in set().union(*(variant_of(s) for s in SPLIT_NAMES))  # excluded
    pools = partition_variants(cfg, VARIANTS)
    assert len(pools["test"]) == 3 and test_v <= set(pools["test"])
    shared = partition_variants(dataclasses.replace(cfg, foundation_disjoint_voices=False), VARIANTS)
    assert shared["target"] == shared["foundation"] and not set(shared["test"]) & set(shared["target"])


def test_ids_counts_and_speaker_prefix():
    cfg = _cfg()
    plan = plan_corpus(cfg, VARIANTS)
    all_utts = [s.utt for n in SPLIT_NAMES for s in plan[n]]
    assert len(all_utts) == len(set(all_utts))                     # combinable without clashes
    for n in SPLIT_NAMES:
        utts = [s.utt for s in plan[n]]
        assert utts == sorted(utts)
        for s in plan[n]:
            assert s.utt.startswith(s.spk + "-") and s.spk.startswith(s.lang + "-")
    assert _by(plan, "train_high", "lang") == {"en", "zh"} and _by(plan, "train_low_full", "lang") == {"ja"}
    assert len(plan["train_high"]) == 24 and len(plan["train_low_full"]) == 6
    assert len(plan["test"]) == 15 and len(plan["foundation"]) == 24
    assert {s.voice.split("+")[0] for s in plan["dev"]} == {"en-us", "cmn-latn-pinyin", "ja"}


def test_styles_differ_by_domain_and_stay_in_range():
    plan = plan_corpus(_cfg(), VARIANTS)
    fd, tr = plan["foundation"], plan["train_high"]
    assert all(115 <= s.speed <= 160 and 1 <= s.word_gap <= 4 for s in fd)
    assert all(140 <= s.speed <= 220 and s.word_gap == 0 for s in tr)


def test_deterministic_and_stable_under_other_counts():
    a, b = plan_corpus(_cfg(), VARIANTS), plan_corpus(_cfg(), VARIANTS)
    assert a == b
    assert plan_corpus(_cfg(seed=7), VARIANTS)["test"] != a["test"]
    bigger = _cfg(counts=dict(train_high=30, train_low=6, dev=4, test=5, foundation=8, foundation_dev=2))
    assert plan_corpus(bigger, VARIANTS)["test"] == a["test"]       # test set does not move


def test_config_errors_name_the_problem(monkeypatch):
    with pytest.raises(ConfigError, match="'th' has no mini12 templates"):
        _cfg(high=["th"])
    with pytest.raises(ConfigError, match="listed twice"):
        _cfg(high=["en"], low=["en"])
    with pytest.raises(ConfigError, match="counts.test: must be >= 1"):
        _cfg(counts=dict(test=0))
    with pytest.raises(ConfigError, match="unknown key"):
        _cfg(colour="red")
    with pytest.raises(ConfigError, match="foundation_phrase_share: must be in"):
        _cfg(foundation_phrase_share=1.5)
    with pytest.raises(ValueError, match="voice variants after exclusions"):
        plan_corpus(_cfg(n_test_variants=14), VARIANTS)
    # A generator that cannot give enough distinct transcripts is an error, not a short split.
    monkeypatch.setattr("zlora.data.synth.plan.make_text", lambda lang, domain, lex, rng, digits=4: "same")
    with pytest.raises(ValueError, match="en/test: only 1 distinct transcripts of 5"):
        plan_corpus(_cfg(), VARIANTS)


def test_rejected_candidates_are_replaced():
    seen = []

    def accept(lang, texts):
        seen.append((lang, len(texts)))
        return ["から" not in t for t in texts]

    plan = plan_corpus(_cfg(), VARIANTS, accept)
    ja = [s.text for n in SPLIT_NAMES for s in plan[n] if s.lang == "ja"]
    assert ja and not any("から" in t for t in ja)
    assert len(plan["test"]) == 15 and len(plan["train_low_full"]) == 6   # counts still met
    assert {lang for lang, _ in seen} == {"en", "zh", "ja"}
