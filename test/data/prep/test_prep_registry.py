"""The corpus registry: every corpus module declares itself once; roots, options, locate_source and
the prep CLIs derive from it; a corpus registered outside zlora/ (docs/extending.md's toy example)
works through prepare, a plan, prep_check's source check and prep_corpus."""
import dataclasses
import importlib.util
import inspect
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from zlora.bin import prep_corpus, prep_plan
from zlora.config import ConfigError, from_dict
from zlora.data.kaldi import DataDir, read_kv, validate_data_dir
from zlora.data.prep import CORPORA, PrepError, prepare, read_provenance
from zlora.data.prep.plan import DataPlan, check_sources, run_plan

REPO = Path(__file__).resolve().parents[3]
FIVE = ["commonvoice", "librispeech", "mls", "msr86k", "wenetspeech"]


def doc_example(heading: str) -> str:
    """The first ```python block under ``heading`` in docs/extending.md."""
    section = (REPO / "docs/extending.md").read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def import_file(path: Path, monkeypatch) -> types.ModuleType:
    """Import ``path`` as a module (registered in sys.modules for the test only)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The toy corpus of docs/extending.md: the doc's code as a module outside zlora/, imported."""
    src = tmp_path / "zlora_doc_toy_corpus.py"
    src.write_text(doc_example("## Adding a corpus"), encoding="utf-8")
    yield import_file(src, monkeypatch)
    CORPORA.unregister("toy")


def make_toy(root: Path, lang: str, split: str, rows: list[tuple[str, str, str]]) -> None:
    """<root>/<lang>/<split>.tsv + wav/<id>.wav (a quiet tone, 0.5 s and longer)."""
    d = root / lang
    (d / "wav").mkdir(parents=True, exist_ok=True)
    for i, (cid, _, _) in enumerate(rows):
        x = 0.1 * np.sin(np.arange(8000 + 1600 * i) * 0.05).astype(np.float32)
        sf.write(str(d / "wav" / f"{cid}.wav"), x, 16000)
    (d / f"{split}.tsv").write_text("".join(f"{c}\t{s}\t{t}\n" for c, s, t in rows), encoding="utf-8")


def plan_dict(tmp_path, roots, sources):
    return {"out_dir": str(tmp_path / "data"), "work_dir": str(tmp_path / "data/local"), "roots": roots,
            "sets": {"t": sources}}


def test_every_corpus_module_registers_everything():
    assert set(FIVE) <= set(CORPORA.names())
    for name in CORPORA.names():
        spec = CORPORA.get(name)
        assert spec.name == name and spec.layout.strip() and "\n" not in spec.layout
        assert dataclasses.is_dataclass(spec.options)
        assert all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                   for f in spec.option_fields()), name      # omitting an option is always valid
        assert list(inspect.signature(spec.collect).parameters)[:5] == ["root", "lang", "split", "opts",
                                                                        "skip_missing"]
        assert list(inspect.signature(spec.locate).parameters) == ["root", "lang", "split", "opts"]
    assert CORPORA.get("librispeech").default_lang == "en" and CORPORA.get("wenetspeech").default_lang == "zh"
    assert [f.name for f in CORPORA.get("mls").option_fields()] == ["release"]
    with pytest.raises(ConfigError, match="unknown corpus 'tedlium'; known: " + ", ".join(FIVE)):
        CORPORA.get("tedlium")


def test_unknown_corpus_in_roots_lists_the_known_ones(tmp_path):
    src = [{"corpus": "mls", "lang": "de", "split": "test"}]
    nulls = dict.fromkeys(FIVE)                                 # the zipper12 plans' form: all null
    assert from_dict(DataPlan, plan_dict(tmp_path, nulls, src)).roots == nulls
    with pytest.raises(ConfigError, match="roots: unknown corpus 'librispech'; known: " + ", ".join(FIVE)):
        from_dict(DataPlan, plan_dict(tmp_path, {"mls": "/c/mls", "librispech": "/c"}, src))
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(yaml.safe_dump(plan_dict(tmp_path, {}, src)))
    with pytest.raises(ConfigError, match="roots: unknown corpus 'wenet'"):
        prep_plan.main(["--config", str(cfg), "--roots.wenet", "/c/ws"])
    with pytest.raises(ConfigError, match=r"roots\.mls: not set; the plan uses mls \(pass --roots\.mls DIR: "
                                          r"dir holding mls_<language>\[_opus\]/"):
        check_sources(from_dict(DataPlan, plan_dict(tmp_path, {"mls": None}, src)))


def test_unknown_or_mistyped_option_names_the_key_and_the_corpus(tmp_path):
    def plan(corpus, options):
        return plan_dict(tmp_path, {}, [{"corpus": "mls", "lang": "de", "split": "test"},
                                        {"corpus": corpus, "lang": "de", "split": "dev", "options": options}])
    assert from_dict(DataPlan, plan("mls", {"release": "opus"})).sets["t"][1].options == {"release": "opus"}
    with pytest.raises(ConfigError, match=r"sets\.t\[1\]\.options: unknown option\(s\) 'relase' for corpus "
                                          r"mls; its options: release"):
        from_dict(DataPlan, plan("mls", {"relase": "opus"}))
    with pytest.raises(ConfigError, match=r"release: must be one of \['auto', 'flac', 'opus'\], got 'mp3'"):
        from_dict(DataPlan, plan("mls", {"release": "mp3"}))
    with pytest.raises(ConfigError, match="'locale' for corpus msr86k; its options: none"):
        from_dict(DataPlan, plan("msr86k", {"locale": "de-DE"}))
    # prepare() checks them too, before reading anything
    with pytest.raises(ConfigError, match="'min_conf' for corpus wenetspeech; its options: min_confidence"):
        prepare("wenetspeech", tmp_path, "zh", "L", tmp_path / "out", min_conf=0.5)
    with pytest.raises(ConfigError, match=r"min_confidence: expected a number, got 'high'"):
        prepare("wenetspeech", tmp_path, "zh", "L", tmp_path / "out", min_confidence="high")
    assert not (tmp_path / "out").exists()


def test_prep_corpus_passes_the_options_it_passed_before(monkeypatch, tmp_path):
    """Flags come from the options dataclasses; prepare() gets the same options as before the
    registry (defaults that are not None included), so prep.yaml and dir names are unchanged."""
    got = []
    monkeypatch.setattr(prep_corpus, "prepare", lambda *a, **kw: got.append((a, kw)) or
                        {"utterances": 1, "speakers": 1, "skipped": {}})
    out = ["--out", str(tmp_path / "o")]
    for argv, want in [(["librispeech", "--split", "test-clean", "R"], {}),
                       (["mls", "--lang", "de", "--split", "test", "R"], {"release": "auto"}),
                       (["mls", "--lang", "de", "--split", "test", "--release", "opus", "R"], {"release": "opus"}),
                       (["commonvoice", "--lang", "ar", "--split", "train", "R"], {}),
                       (["commonvoice", "--lang", "zh", "--locale", "zh-CN", "--split", "dev", "R"], {"locale": "zh-CN"}),
                       (["msr86k", "--lang", "en", "--split", "dev", "R"], {}),
                       (["wenetspeech", "--split", "L", "R"], {"min_confidence": 0.0}),
                       (["wenetspeech", "--split", "L", "--min_confidence", "0.9", "R"], {"min_confidence": 0.9})]:
        assert prep_corpus.main(argv + out) == 0
        args, kw = got.pop()
        assert args == (argv[0], "R", {"librispeech": "en", "wenetspeech": "zh"}.get(argv[0], argv[2]),
                        argv[argv.index("--split") + 1], str(tmp_path / "o"))
        assert kw == {"skip_missing": False, **want}, argv
    with pytest.raises(SystemExit):
        prep_corpus.main(["mls", "--lang", "de", "--split", "test", "--release", "mp3", "R", *out])
    with pytest.raises(SystemExit):                  # a corpus without the option has no such flag
        prep_corpus.main(["msr86k", "--lang", "en", "--split", "dev", "--release", "opus", "R", *out])


def test_a_corpus_registered_outside_zlora_works_everywhere(toy, tmp_path, capsys):
    root = tmp_path / "toy"
    make_toy(root, "en", "train", [("a1", "spk1", "Hello  World"), ("b2", "spk2", "GOOD Night"),
                                   ("c3", "spk1", "one more")])
    make_toy(root, "en", "test", [("t1", "spk9", "Testing")])
    assert "toy" in CORPORA.names() and set(FIVE) <= set(CORPORA.names())
    # prepare(): through the registry, with the corpus's own typed option
    counts = prepare("toy", root, "en", "train", tmp_path / "d", lowercase=True)
    validate_data_dir(tmp_path / "d")                       # decodes every file
    d = DataDir(tmp_path / "d")
    assert counts["utterances"] == 3 and counts["speakers"] == 2
    assert d.text == {"spk1-a1": "hello world", "spk2-b2": "good night", "spk1-c3": "one more"}
    assert d.utt2spk == {"spk1-a1": "spk1", "spk2-b2": "spk2", "spk1-c3": "spk1"}
    assert set(d.utt2lang.values()) == {"en"}
    assert read_kv(tmp_path / "d/utt2corpusid") == {"spk1-a1": "a1", "spk2-b2": "b2", "spk1-c3": "c3"}
    assert read_provenance(tmp_path / "d")["options"] == {"lowercase": True}
    # a plan: roots and options checked against the toy entry; sets built
    p = plan_dict(tmp_path, {"toy": str(root)}, [{"corpus": "toy", "lang": "en", "split": "train",
                                                  "options": {"lowercase": True}}])
    p["sets"]["test_toy"] = [{"corpus": "toy", "lang": "en", "split": "test"}]
    plan = from_dict(DataPlan, p)
    assert check_sources(plan) == [f"toy en train: {root}/en/train.tsv", f"toy en test: {root}/en/test.tsv"]
    summary = run_plan(plan)
    assert summary["t"]["en"]["utterances"] == 3 and summary["test_toy"]["en"]["utterances"] == 1
    assert DataDir(tmp_path / "data/t").text["spk2-b2"] == "good night"
    assert (tmp_path / "data/local/toy_en_train_lowercase-True").is_dir()
    assert DataDir(tmp_path / "data/test_toy").text == {"spk9-t1": "Testing"}
    p["sets"]["t"][0]["options"] = {"upper": True}
    with pytest.raises(ConfigError, match=r"'upper' for corpus toy; its options: lowercase"):
        from_dict(DataPlan, p)
    p["sets"]["t"][0]["options"], p["sets"]["t"][0]["split"] = {}, "dev"
    with pytest.raises(PrepError, match=r"en/dev\.tsv: toy split file does not exist"):
        check_sources(from_dict(DataPlan, p))
    # the CLIs: a prep_corpus subcommand with the option's flag; the plan help lists the corpus
    assert prep_corpus.main(["toy", "--lang", "en", "--split", "train", "--lowercase", "false", str(root),
                             "--out", str(tmp_path / "cli")]) == 0
    assert DataDir(tmp_path / "cli").text["spk2-b2"] == "GOOD Night"
    with pytest.raises(SystemExit) as exit_:
        prep_plan.main(["--help"])
    assert exit_.value.code == 0
    assert "--roots.toy         DIR  dir holding <lang>/<split>.tsv and <lang>/wav/" in capsys.readouterr().out
    CORPORA.unregister("toy")
    with pytest.raises(ConfigError, match="unknown corpus 'toy'"):
        from_dict(DataPlan, plan_dict(tmp_path, {"toy": str(root)}, [{"corpus": "mls", "lang": "de", "split": "x"}]))


def test_prep_corpus_positional_out_is_a_deprecated_alias(toy, tmp_path, capsys):
    root = tmp_path / "toy"
    make_toy(root, "fr", "dev", [("x1", "s", "bonjour")])
    base = ["toy", "--lang", "fr", "--split", "dev", str(root)]
    assert prep_corpus.main([*base, str(tmp_path / "old")]) == 0
    assert "zlora.bin.prep_corpus: positional OUT is deprecated; use --out OUT" in capsys.readouterr().err
    assert DataDir(tmp_path / "old").text == {"s-x1": "bonjour"}
    assert prep_corpus.main([*base, "--out", str(tmp_path / "new")]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert (tmp_path / "new/text").read_text() == (tmp_path / "old/text").read_text()
    for argv in ([*base, str(tmp_path / "a"), "--out", str(tmp_path / "b")], base):   # both / neither
        with pytest.raises(SystemExit):
            prep_corpus.main(argv)
