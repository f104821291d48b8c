"""The data plan (Table-I sampling): hour draws, id lists, exclusions, repeats, unions, reruns."""
import json
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from prep_testlib import make_commonvoice, make_mls
from zlora.bin import prep_plan
from zlora.config import ConfigError, from_dict
from zlora.data.kaldi import DataDir, read_kv, validate_data_dir
from zlora.data.prep.plan import DataPlan, run_plan

pytestmark = pytest.mark.skipif("MP3" not in sf.available_formats(),
                                reason="this libsndfile cannot write MP3 (Common Voice's format)")
REPO = Path(__file__).resolve().parents[3]
AR = ["واحد", "اثنان ثلاثة", "أربعة خمسة ستة", "سبعة", "ثمانية تسعة عشرة أحد عشر", "اثنا عشر",
      "ثلاثة عشر أربعة عشر", "خمسة عشر ستة عشر سبعة عشر ثمانية عشر"]
PT = ["um", "dois três", "quatro cinco seis", "sete", "oito nove dez onze", "doze treze"]
BUDGET_S = 6.0


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    r = tmp_path_factory.mktemp("corpora")
    make_commonvoice(r / "cv", "ar", "ar", "train",
                     [(f"spk{i % 3}", f"common_voice_ar_{100 + i}", t) for i, t in enumerate(AR)])
    make_commonvoice(r / "cv", "pt", "pt", "train",
                     [(f"spk{i % 2}", f"common_voice_pt_{200 + i}", t) for i, t in enumerate(PT)])
    make_mls(r / "mls", "german", "de", "test", [("1_2_000001", "guten tag"), ("1_2_000002", "danke")], "flac")
    return r


def plan_dict(roots, work, seed=1, list_file=None):
    sets = {
        "test_cv_pt": [{"corpus": "commonvoice", "lang": "pt", "split": "train", "hours": 3.0 / 3600}],
        "train": [{"corpus": "commonvoice", "lang": "ar", "split": "train", "hours": BUDGET_S / 3600},
                  {"corpus": "commonvoice", "lang": "pt", "split": "train", "exclude_sets": ["test_cv_pt"]},
                  {"corpus": "mls", "lang": "de", "split": "test", "repeat": 2}],
    }
    if list_file:
        sets["listed"] = [{"corpus": "commonvoice", "lang": "ar", "split": "train", "utt_list": str(list_file)}]
    return {"seed": seed, "out_dir": str(work / "data"), "work_dir": str(work / "data/local"),
            "roots": {"commonvoice": str(roots / "cv"), "mls": str(roots / "mls")}, "sets": sets,
            "unions": {"test_all": ["test_cv_pt", "train"]}}


def hours_by_lang(d):
    dd = DataDir(d)
    out = {}
    for u, t in dd.utt2dur.items():
        out[dd.utt2lang[u]] = out.get(dd.utt2lang[u], 0.0) + t
    return out


def test_plan_builds_every_set(roots, tmp_path):
    lst = tmp_path / "train_com_voice_ar_ids.txt"
    lst.write_text("common_voice_ar_101\ncommon_voice_ar_105\n")         # the authors' id form
    summary = run_plan(from_dict(DataPlan, plan_dict(roots, tmp_path, list_file=lst)))
    data = tmp_path / "data"
    for name in ("test_cv_pt", "train", "listed", "test_all"):
        validate_data_dir(data / name)
        assert (data / name / "utt_list").read_text().split() == DataDir(data / name).utts
    # hour draw: reaches the budget, overshoots by less than one utterance
    pool = DataDir(tmp_path / "data/local/commonvoice_ar_train").utt2dur
    got = hours_by_lang(data / "train")["ar"]
    assert BUDGET_S <= got < BUDGET_S + max(pool.values()) and got < sum(pool.values())
    # exclusion: the pt test hour is held out of training, the rest of pt is in it
    pt_test = {u for u in DataDir(data / "test_cv_pt").utts}
    pt_train = {u for u, lang in DataDir(data / "train").utt2lang.items() if lang == "pt"}
    assert pt_test and pt_train and not pt_test & pt_train and len(pt_test | pt_train) == len(PT)
    # repeat: every MLS utterance twice, both copies mapped to the corpus id
    de = {u: c for u, c in read_kv(data / "train/utt2corpusid").items() if u.startswith("1_")}
    assert de == {"1_2_000001": "1_2_000001", "1_2_000001-rep2": "1_2_000001",
                  "1_2_000002": "1_2_000002", "1_2_000002-rep2": "1_2_000002"}
    # id list: exactly the listed corpus ids; the corpus-id list is written back out
    assert sorted(read_kv(data / "listed/utt2corpusid").values()) == ["common_voice_ar_101", "common_voice_ar_105"]
    assert (data / "listed/utt_list.corpus").read_text().split() == ["common_voice_ar_101", "common_voice_ar_105"]
    assert set(DataDir(data / "test_all").utts) == pt_test | set(DataDir(data / "train").utts)
    assert summary["train"]["de"]["utterances"] == 4


def test_hour_draw_is_reproducible_and_seeded(roots, tmp_path):
    def subset(seed, where):
        run_plan(from_dict(DataPlan, plan_dict(roots, tmp_path / where, seed=seed)))
        return (tmp_path / where / "data/train/utt_list").read_text()
    first = subset(1, "a")
    assert subset(1, "b") == first                                   # same seed, same subset
    assert len({first, *(subset(s, f"s{s}") for s in (2, 3, 4))}) > 1  # other seeds differ


def test_rerun_skips_and_changes_rebuild(roots, tmp_path):
    plan = plan_dict(roots, tmp_path)
    run_plan(from_dict(DataPlan, plan))
    text = tmp_path / "data/train/text"
    stamp = text.stat().st_mtime_ns
    run_plan(from_dict(DataPlan, plan))
    assert text.stat().st_mtime_ns == stamp                           # same entry: not rebuilt
    plan["sets"]["train"][2]["repeat"] = 1
    run_plan(from_dict(DataPlan, plan))
    assert not any(u.endswith("-rep2") for u in DataDir(tmp_path / "data/train").utts)


def test_a_changed_corpus_is_converted_again_and_force_converts_anyway(tmp_path_factory, tmp_path):
    """data/local/* is reused only while the corpus's transcripts are unchanged (size + mtime)."""
    import os

    r = tmp_path_factory.mktemp("corpus")
    make_mls(r / "mls", "german", "de", "test", [("1_2_000001", "guten tag"), ("1_2_000002", "danke")], "flac")
    plan = {"seed": 1, "out_dir": str(tmp_path / "data"), "work_dir": str(tmp_path / "data/local"),
            "roots": {"mls": str(r / "mls")},
            "sets": {"test_de": [{"corpus": "mls", "lang": "de", "split": "test"}]}}
    run_plan(from_dict(DataPlan, plan))
    prepared = tmp_path / "data/local/mls_de_test/prep.yaml"
    stamp = prepared.stat().st_mtime_ns
    run_plan(from_dict(DataPlan, plan))
    assert prepared.stat().st_mtime_ns == stamp                       # unchanged corpus: reused
    trans = r / "mls/mls_german/test/transcripts.txt"
    trans.write_text(trans.read_text().replace("danke", "danke schön"))
    run_plan(from_dict(DataPlan, plan))
    assert read_kv(tmp_path / "data/local/mls_de_test/text")["1_2_000002"] == "danke schön"
    assert read_kv(tmp_path / "data/test_de/text")["1_2_000002"] == "danke schön"   # and the set
    stamp = prepared.stat().st_mtime_ns
    os.utime(prepared, ns=(stamp - 10**9, stamp - 10**9))              # so a rewrite is visible
    stamp = prepared.stat().st_mtime_ns
    run_plan(from_dict(DataPlan, {**plan, "force": True}))
    assert prepared.stat().st_mtime_ns != stamp                       # force: converted anyway


def test_hours_scale_scales_every_budget_and_rebuilds(roots, tmp_path):
    """hours_scale (pilot runs) multiplies each hours budget: the draw equals the plan's draw at the
    scaled budget, sources without hours stay whole, and a rescaled plan rebuilds the set."""
    plan = plan_dict(roots, tmp_path / "scaled")
    plan["hours_scale"] = 0.5
    run_plan(from_dict(DataPlan, plan))
    same = plan_dict(roots, tmp_path / "direct")
    same["sets"]["train"][0]["hours"] = BUDGET_S / 2 / 3600
    same["sets"]["test_cv_pt"][0]["hours"] = 1.5 / 3600
    run_plan(from_dict(DataPlan, same))
    for name in ("train", "test_cv_pt"):
        assert DataDir(tmp_path / "scaled/data" / name).utts == DataDir(tmp_path / "direct/data" / name).utts
    ar = hours_by_lang(tmp_path / "scaled/data/train")["ar"]
    assert BUDGET_S / 2 <= ar < BUDGET_S                    # half the budget, not the whole one
    assert hours_by_lang(tmp_path / "scaled/data/train")["de"] > 0   # no hours: all of it
    text = tmp_path / "scaled/data/train/text"
    before = text.read_text()
    plan["hours_scale"] = 1.0
    run_plan(from_dict(DataPlan, plan))
    assert text.read_text() != before                       # the record saw the new scale
    plan["hours_scale"] = 0
    with pytest.raises(ConfigError, match="hours_scale must be > 0"):
        from_dict(DataPlan, plan)


def test_bad_plans_are_config_errors(roots, tmp_path):
    p = plan_dict(roots, tmp_path)
    p["sets"]["train"][1]["exclude_sets"] = ["test_all"]
    with pytest.raises(ConfigError, match="exclude_sets names 'test_all'"):
        from_dict(DataPlan, p)
    p = plan_dict(roots, tmp_path)
    p["sets"]["train"][0]["utt_list"] = "x.txt"
    with pytest.raises(ConfigError, match="not both"):
        from_dict(DataPlan, p)
    p = plan_dict(roots, tmp_path)
    p["roots"]["mls"] = None
    with pytest.raises(ConfigError, match="roots.mls: not set"):
        run_plan(from_dict(DataPlan, p))


def test_an_emptied_pool_names_the_exclusion_and_its_count(roots, tmp_path):
    from zlora.data.prep.common import PrepError

    p = plan_dict(roots, tmp_path)
    del p["sets"]["test_cv_pt"][0]["hours"]                       # the test set takes all of pt
    p["sets"]["train"][1]["exclude_splits"] = []
    with pytest.raises(PrepError, match=rf"sets.train commonvoice/pt: nothing left after exclusions: "
                                        rf"of the {len(PT)} utterances of split train, "
                                        rf"exclude_sets test_cv_pt removed {len(PT)}$"):
        run_plan(from_dict(DataPlan, p))


def test_a_missing_root_hint_uses_the_callers_option_spelling(roots, tmp_path, capsys):
    """A recipe with its own --mls DIR option passes --root_flag_prefix "": its users see --mls."""
    from zlora.bin import prep_check

    cfg = tmp_path / "plan.yaml"
    cfg.write_text(yaml.safe_dump(plan_dict(roots, tmp_path)))
    with pytest.raises(ConfigError, match=r"roots.mls: not set; the plan uses mls \(pass --roots.mls DIR"):
        prep_plan.main(["--config", str(cfg), "--roots.mls", "null"])
    with pytest.raises(ConfigError, match=r"roots.mls: not set; the plan uses mls \(pass --mls DIR"):
        prep_plan.main(["--config", str(cfg), "--roots.mls", "null", "--root_flag_prefix", ""])
    w = fake_model_dir(tmp_path / "whisper", {"model_type": "whisper", "num_mel_bins": 128})
    q = fake_model_dir(tmp_path / "qwen", {"model_type": "qwen3"})
    with pytest.raises(ConfigError, match=r"\(pass --mls DIR"):
        prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q), "--plan", str(cfg),
                         "--roots.mls", "null", "--root_flag_prefix", ""])


def test_cli_and_subset_data_dir_sh(roots, tmp_path):
    cfg = tmp_path / "plan.yaml"
    plan = plan_dict(roots, tmp_path)
    del plan["roots"]
    cfg.write_text(yaml.safe_dump(plan))
    assert prep_plan.main(["--config", str(cfg), "--roots.commonvoice", str(roots / "cv"),
                           "--roots.mls", str(roots / "mls")]) == 0
    # the same draw through utils/subset_data_dir.sh on a prepared dir: seeded and within budget
    src = tmp_path / "data/local/commonvoice_ar_train"
    outs = []
    for k in (1, 2):
        dst = tmp_path / f"sub{k}"
        subprocess.run(["bash", str(REPO / "utils/subset_data_dir.sh"), "--hours", str(BUDGET_S / 3600),
                        "--seed", "7", str(src), str(dst)], check=True, capture_output=True)
        outs.append((dst / "utt_list").read_text())
    assert outs[0] == outs[1]
    got = sum(DataDir(tmp_path / "sub1").utt2dur.values())
    assert BUDGET_S <= got < BUDGET_S + max(DataDir(src).utt2dur.values())


def fake_model_dir(d, config, langs=("en", "de", "ar", "pt", "es")):
    """config.json, a tokenizer and weights; a Whisper dir gets the decoder embeddings and the
    language tokens that stage 3 (extract_lid) reads."""
    import torch
    from safetensors.torch import save_file

    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    save_file({"model.decoder.embed_tokens.weight": torch.zeros(4, 2)}, str(d / "model.safetensors"))
    (d / "tokenizer.json").write_text("{}")
    if config.get("model_type") == "whisper":
        (d / "generation_config.json").write_text(json.dumps(
            {"lang_to_id": {f"<|{x}|>": 2 + i for i, x in enumerate(langs)}}))
    return d


def shard_whisper_dir(d):
    """Re-save ``d``'s weights the way Whisper-large-v3 ships them: two shards and an index."""
    import torch
    from safetensors.torch import save_file

    (d / "model.safetensors").unlink(missing_ok=True)
    shards = {"model-00001-of-00002.safetensors": {"model.encoder.conv1.weight": torch.zeros(2)},
              "model-00002-of-00002.safetensors": {"model.decoder.embed_tokens.weight": torch.zeros(4, 2)}}
    for name, tensors in shards.items():
        save_file(tensors, str(d / name))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, t in shards.items() for k in t}}))


def test_prep_check_takes_sharded_whisper_and_checks_what_stage3_needs(tmp_path, capsys):
    from zlora.bin import prep_check
    from zlora.utils.cli import UserError

    w = fake_model_dir(tmp_path / "whisper", {"model_type": "whisper", "num_mel_bins": 128})
    q = fake_model_dir(tmp_path / "qwen", {"model_type": "qwen3"})
    args = ["--whisper_dir", str(w), "--llm_dir", str(q)]
    shard_whisper_dir(w)
    assert prep_check.main(args) == 0
    assert "2 shard(s) + model.safetensors.index.json, 5 language tokens" in capsys.readouterr().out
    (w / "model-00001-of-00002.safetensors").unlink()                 # an interrupted download
    with pytest.raises(UserError, match=r"index.json names shard\(s\) that are not in .*model-00001-of-00002"):
        prep_check.main(args)
    shard_whisper_dir(w)
    (w / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 8)   # listed but corrupt
    with pytest.raises(UserError, match=r"model-00002-of-00002.safetensors: not a readable safetensors"):
        prep_check.main(args)
    shard_whisper_dir(w)
    (w / "generation_config.json").unlink()
    with pytest.raises(UserError, match=r"generation_config.json is missing: .*language tokens.*whisper-large-v3"):
        prep_check.main(args)
    (w / "generation_config.json").write_text("{}")
    with pytest.raises(UserError, match="has no lang_to_id"):
        prep_check.main(args)


def test_prep_check_wants_a_whisper_language_token_per_plan_language(roots, tmp_path):
    from zlora.bin import prep_check
    from zlora.utils.cli import UserError

    w = fake_model_dir(tmp_path / "whisper", {"model_type": "whisper", "num_mel_bins": 128}, langs=("en", "de"))
    q = fake_model_dir(tmp_path / "qwen", {"model_type": "qwen3"})
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(yaml.safe_dump(plan_dict(roots, tmp_path)))        # ar, pt and de
    with pytest.raises(UserError, match=r"generation_config.json has no language token for ar, pt "
                                        r"\(the plan's languages: ar, de, pt\)"):
        prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q), "--plan", str(cfg)])


def test_prep_check_models_and_sources(roots, tmp_path, capsys):
    from zlora.bin import prep_check
    from zlora.utils.cli import UserError

    w = fake_model_dir(tmp_path / "whisper", {"model_type": "whisper", "num_mel_bins": 128})
    q = fake_model_dir(tmp_path / "qwen", {"model_type": "qwen3"})
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(yaml.safe_dump(plan_dict(roots, tmp_path)))
    assert prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q), "--plan", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "commonvoice ar train: " in out and "mls de test: " in out and "OK" in out
    with pytest.raises(UserError, match="takes 128 mel bins, the recipe uses 80"):
        prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q), "--n_mels", "80"])
    with pytest.raises(Exception, match=r"mls_spanish/test/transcripts\.txt"):
        prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q), "--plan", str(cfg),
                         "--sets.train", "[{corpus: mls, lang: es, split: test}]"])
    with pytest.raises(ConfigError, match="roots: unknown corpus 'msl'"):
        prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q), "--plan", str(cfg), "--roots.msl", "x"])


def test_prep_check_old_flag_spellings_still_work_and_warn(tmp_path, capsys):
    from zlora.bin import prep_check

    w = fake_model_dir(tmp_path / "whisper", {"model_type": "whisper", "num_mel_bins": 128})
    q = fake_model_dir(tmp_path / "qwen", {"model_type": "qwen3"})
    assert prep_check.main(["--whisper", str(w), "--llm", str(q)]) == 0
    out, err = capsys.readouterr()
    assert f"whisper: {w}" in out and f"llm: {q}" in out and "OK" in out
    assert err.splitlines() == ["zlora.bin.prep_check: --whisper is deprecated; use --whisper_dir",
                                "zlora.bin.prep_check: --llm is deprecated; use --llm_dir"]
    assert prep_check.main(["--whisper_dir", str(w), "--llm_dir", str(q)]) == 0
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):                               # still required, either spelling
        prep_check.main(["--llm_dir", str(q)])
    assert "required: --whisper_dir" in capsys.readouterr().err
