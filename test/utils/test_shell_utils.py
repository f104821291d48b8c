"""utils/*.sh run as a user would (subprocess), on tiny data dirs under a path with a space."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tiny_datadir", REPO / "test" / "data" / "tiny_datadir.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
ENV = {**os.environ, "ZLORA_PYTHON": sys.executable}


def sh(script, *args, cwd=None):
    return subprocess.run(["bash", str(REPO / "utils" / script), *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=cwd)


def ok(script, *args):
    r = sh(script, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "with space"
    r.mkdir()
    return r


def lines(p):
    return Path(p).read_text(encoding="utf-8").splitlines()


# ---- parse_options.sh --------------------------------------------------------------------------

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
stage=0
use_gpu=false
out_dir="default dir"
nj=1
. "{repo}/utils/parse_options.sh"
printf '%s\\n' "stage=$stage" "use_gpu=$use_gpu" "out_dir=$out_dir" "nj=$nj" "nargs=$#" "$@"
"""


@pytest.fixture
def opts(root):
    script = root / "my script.sh"
    script.write_text(SCRIPT.format(repo=REPO))

    def run(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, cwd=root)
    return run


def test_parse_options_sets_variables_and_leaves_positionals(opts, root):
    r = opts("--stage", "3", "--out-dir", "/x y/z", "--use-gpu", "true", "a b", "c")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["stage=3", "use_gpu=true", "out_dir=/x y/z", "nj=1", "nargs=2",
                                     "a b", "c"]


def test_parse_options_config_is_sourced_first(opts, root):
    cfg = root / "my conf.sh"
    cfg.write_text("stage=5\nnj=4\n")
    r = opts("--nj", "8", "--config", str(cfg), "pos")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:5] == ["stage=5", "use_gpu=false", "out_dir=default dir", "nj=8", "nargs=1"]


@pytest.mark.parametrize("args,needle", [
    (["--bogus", "1"], "invalid option --bogus"),
    (["--use-gpu", "yes"], 'expected "true" or "false": --use-gpu yes'),
    (["--stage=3"], "must be of the form --name value"),
    (["--stage"], "option --stage needs a value"),
    (["--config", "/nonexistent/conf"], "cannot read config file"),
])
def test_parse_options_errors(opts, args, needle):
    r = opts(*args)
    assert r.returncode == 1 and needle in r.stderr and "stage=" not in r.stdout


def test_parse_options_never_evaluates_values(opts, root):
    evil = ['$(touch pwned1)', '"; touch pwned2; "', "`touch pwned3`"]
    for value in evil:
        r = opts("--out-dir", value)
        assert r.returncode == 0 and f"out_dir={value}" in r.stdout.splitlines()
    assert not list(root.glob("pwned*"))


def test_parse_options_help_lists_the_option_block(opts, root):
    """--help prints every option of the block with its default and comment (comment lines kept),
    exit 0, and nothing after the block (the lines sourcing parse_options.sh)."""
    script = root / "my script.sh"
    script.write_text(SCRIPT.format(repo=REPO).replace("nj=1\n", "# compute\nnj=1           # jobs at once\n"))
    r = opts("--help")
    assert r.returncode == 0 and r.stdout == ""
    got = r.stderr.splitlines()
    assert got[1:] == ["  --stage 0", "  --use_gpu false", '  --out_dir "default dir"', "  # compute",
                       "  --nj 1           # jobs at once"], r.stderr
    assert got[0].startswith("Options")


def test_recipes_help_lists_every_option():
    """Every egs recipe's --help names each of its options and carries each option's comment."""
    import re

    for run_sh in sorted(REPO.glob("egs/*/*/run.sh")):
        text = run_sh.read_text()
        block = text[:text.index("help_message=")]
        r = subprocess.run(["bash", "run.sh", "--help"], cwd=run_sh.parent, capture_output=True, text=True)
        assert r.returncode == 0, (run_sh, r.stderr)
        for name, comment in re.findall(r"^([a-z_][a-z0-9_]*)=[^#\n]*(#.*)?$", block, re.M):
            assert f"  --{name} " in r.stderr + " ", (run_sh, name)
            assert comment.strip() in r.stderr, (run_sh, name)


# ---- validate / get_utt2dur --------------------------------------------------------------------

def test_validate_valid_and_invalid(root):
    d = tiny.make_datadir(root / "data", langs=("en", "fr"))
    out = ok("validate_data_dir.sh", d)
    assert "OK: 8 utterances, 4 speakers, 2 languages (en:4,fr:4)" in out
    t = lines(d / "text")
    t[2] = "enspk1-000"
    (d / "text").write_text("\n".join(t) + "\n")
    r = sh("validate_data_dir.sh", d)
    assert r.returncode != 0 and f"{d / 'text'}:3: utterance 'enspk1-000' has an empty transcript" in r.stderr


def test_get_utt2dur(root):
    d = tiny.make_datadir(root / "data", langs=("en",), seconds=0.25, sr=22050)
    ok("get_utt2dur.sh", d)
    assert {k: float(v) for k, v in (x.split() for x in lines(d / "utt2dur"))} == \
        pytest.approx({f"enspk{s}-00{n}": 0.25 for s in range(2) for n in range(2)}, abs=1e-4)


# ---- fix_data_dir ------------------------------------------------------------------------------

def test_fix_data_dir_keeps_intersection_and_reports(root):
    d = tiny.make_datadir(root / "data", langs=("en", "fr"))
    text = lines(d / "text")
    text[0] = "enspk0-000"                           # empty transcript
    text[2], text[3] = text[3], text[2]              # unsorted
    (d / "text").write_text("\n".join(text + [text[-1]]) + "\n")  # duplicate of the last line
    lang = lines(d / "utt2lang")
    del lang[5]                                      # frspk0-001 missing from utt2lang
    lang[1] = "enspk0-001 xx"                        # unknown language
    (d / "utt2lang").write_text("\n".join(lang) + "\n")
    out = ok("fix_data_dir.sh", d)
    assert "dropped 1 utterance(s): empty transcript: enspk0-000" in out
    assert "dropped 1 utterance(s): not in utt2lang: frspk0-001" in out
    assert "unknown language code 'xx': enspk0-001" in out
    assert "duplicate id 'frspk1-001'" in out
    assert "kept 5 of 8 utterances (dropped 3)" in out
    assert (d / ".backup" / "text").is_file()
    assert "OK: 5 utterances, 3 speakers, 2 languages (en:2,fr:3)" in ok("validate_data_dir.sh", d)
    assert "enspk0" not in (d / "spk2utt").read_text()  # the speaker lost all its utterances


# ---- subset_data_dir ---------------------------------------------------------------------------

def test_subset_by_hours_is_reproducible_and_shareable(root):
    src = tiny.make_datadir(root / "src", langs=("de", "en", "fr"), spks_per_lang=2, utts_per_spk=3,
                            seconds=0.5)  # 18 utts, 6 per language, 3 s per language
    budget_h = 1.2 / 3600  # 1.2 s per language -> 3 utterances each
    ok("subset_data_dir.sh", "--hours", budget_h, "--seed", 7, "--per-lang", src, root / "a")
    assert (src / "utt2dur").is_file()  # computed because it was missing
    ok("subset_data_dir.sh", "--hours", budget_h, "--seed", 7, "--per-lang", src, root / "b")
    chosen = lines(root / "a" / "utt_list")
    assert chosen == lines(root / "b" / "utt_list") and len(chosen) == 9
    assert sorted(u[:2] for u in chosen) == ["de"] * 3 + ["en"] * 3 + ["fr"] * 3
    assert lines(root / "a" / "text") == [x for x in lines(src / "text") if x.split()[0] in chosen]
    ok("validate_data_dir.sh", root / "a")
    # whole-corpus budget, other seed: 4.1 s -> 9 utterances of 0.5 s (overshoot < 1 utterance)
    ok("subset_data_dir.sh", "--hours", 4.1 / 3600, "--seed", 8, src, root / "c")
    assert len(lines(root / "c" / "utt_list")) == 9 and lines(root / "c" / "utt_list") != chosen
    # the published list rebuilds the same subset
    ok("subset_data_dir.sh", "--utt-list", root / "a" / "utt_list", src, root / "d")
    for name in ("text", "utt2spk", "spk2utt", "utt2lang", "wav.scp", "utt2dur", "utt_list"):
        assert lines(root / "d" / name) == lines(root / "a" / name), name


def test_subset_utt_list_with_unknown_ids_fails(root):
    src = tiny.make_datadir(root / "src", langs=("en",))
    (root / "list").write_text("enspk0-000\nnope-1\nnope-2\n")
    r = sh("subset_data_dir.sh", "--utt-list", root / "list", src, root / "dst")
    assert r.returncode != 0 and "2 id(s) are not in" in r.stderr and "nope-1 nope-2" in r.stderr
    assert not (root / "dst" / "utt_list").exists()


def test_subset_by_language_equals_its_utt_list(root):
    """--lang LANG (a language expert's data) is the --utt-list of that language's ids."""
    src = tiny.make_datadir(root / "src", langs=("de", "en", "ja"), spks_per_lang=2, utts_per_spk=2)
    ok("subset_data_dir.sh", "--lang", "en", src, root / "en")
    ids = [x.split()[0] for x in lines(src / "utt2lang") if x.split()[1] == "en"]
    assert lines(root / "en" / "utt_list") == ids and len(ids) == 4
    (root / "list").write_text("".join(f"{u}\n" for u in ids))
    ok("subset_data_dir.sh", "--utt-list", root / "list", src, root / "by_list")
    for name in ("text", "utt2spk", "spk2utt", "utt2lang", "wav.scp"):
        assert lines(root / "en" / name) == lines(root / "by_list" / name), name
    r = sh("subset_data_dir.sh", "--lang", "fr", src, root / "fr")
    assert r.returncode != 0 and "no utterance of language 'fr'" in r.stderr and "de, en, ja" in r.stderr
    assert not (root / "fr").exists()
    r = sh("subset_data_dir.sh", "--lang", "en", "--per-lang", src, root / "x")
    assert r.returncode != 0 and "--per_lang and --allow_fewer only apply to --hours" in r.stderr


# ---- combine_data ------------------------------------------------------------------------------

def test_combine_data_with_and_without_segments(root):
    a = tiny.make_datadir(root / "a", langs=("en",))
    b = tiny.make_datadir(root / "b", langs=("ja",), segments=True)
    out = ok("combine_data.sh", root / "all", a, b)
    assert "8 utterances from 2 sources" in out
    assert "enspk0-000 enspk0-000 0 -1" in lines(root / "all" / "segments")
    assert "OK: 8 utterances, 4 speakers, 2 languages (en:4,ja:4), 0.001 hours" in \
        ok("validate_data_dir.sh", root / "all")
    r = sh("combine_data.sh", root / "dup", a, root / "all")
    assert r.returncode != 0 and "enspk0-000" in r.stderr and str(a) in r.stderr


def test_spk2utt_converters(root):
    r = subprocess.run(f"printf 'a s1\\nb s2\\nc s1\\n' | '{REPO}/utils/utt2spk_to_spk2utt.pl'", shell=True,
                       capture_output=True, text=True)
    assert r.stdout.splitlines() == ["s1 a c", "s2 b"]
    r = subprocess.run(["perl", str(REPO / "utils" / "spk2utt_to_utt2spk.pl")], input="s1 a c\ns2 b\n",
                       capture_output=True, text=True)
    assert r.stdout.splitlines() == ["a s1", "c s1", "b s2"]
