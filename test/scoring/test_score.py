"""WER/CER on hand-made ref/hyp pairs with known error counts, bad hypothesis files, result.json schema."""
import json

import pytest

from zlora.bin import score as score_cli
from zlora.scoring.score import (RESULT_KEYS, format_ops, metric_for, score_corpus, score_files,
                                 validate_result_dict)
from zlora.utils.cli import UserError, run_main


def _score(pairs, lang, **kw):
    refs = {f"u{i}": r for i, (r, _) in enumerate(pairs)}
    hyps = {f"u{i}": h for i, (_, h) in enumerate(pairs)}
    return score_corpus(refs, hyps, {u: lang for u in refs}, **kw).result_dict()[lang]


def _counts(r):
    return (r["sub"], r["del"], r["ins"], r["ref_units"], r["errors"])


@pytest.mark.parametrize("lang,pairs,expected", [
    # Latin (French): chat->chien substitution, noir deleted
    ("fr", [("Le chat est noir.", "le chien est")], (1, 1, 0, 4, 2)),
    # Latin (German), two utterances, one insertion
    ("de", [("Guten Morgen", "guten morgen"), ("Wie geht es", "wie geht es dir")], (0, 0, 1, 5, 1)),
    # Cyrillic: punctuation/case removed; two inserted words
    ("ru", [("Привет, мир! Как дела?", "привет мир как дела у тебя")], (0, 0, 2, 4, 2)),
    # Arabic: one word deleted
    ("ar", [("مرحبا بالعالم الجميل", "مرحبا بالعالم")], (0, 1, 0, 3, 1)),
    # Chinese CER: spaces removed; 气->汽 substitution, 啊 inserted
    ("zh", [("今天 天气 很好", "今天天汽很好啊")], (1, 0, 1, 6, 2)),
    # Japanese CER: punctuation removed, は->わ
    ("ja", [("こんにちは、世界。", "こんにちわ 世界")], (1, 0, 0, 7, 1)),
    # Korean CER: spacing differences are free, one extra syllable inserted
    ("ko", [("안녕 하세요", "안녕하세요 요")], (0, 0, 1, 5, 1)),
    # Thai CER: Whisper's basic normaliser drops the marks, leaving ส ว ส ด ค ร บ vs ส ว ส ด ค ะ
    ("th", [("สวัสดี ครับ", "สวัสดีค่ะ")], (1, 1, 0, 7, 2)),
])
def test_known_error_counts(lang, pairs, expected):
    r = _score(pairs, lang)
    assert _counts(r) == expected
    assert r["metric"] == metric_for(lang) == ("cer" if lang in ("zh", "ja", "ko", "th") else "wer")
    assert r["rate"] == pytest.approx(expected[4] / expected[3] * 100)
    assert r["utts"] == len(pairs)


def test_thai_marks_count_when_preserved():
    # With marks kept, ref สวัสดีครับ (10 chars) vs hyp สวัสดีค่ะ (9): ร ั บ vs ่ ะ -> 2 sub + 1 del
    r = _score([("สวัสดี ครับ", "สวัสดีค่ะ")], "th", preserve_marks=["th"])
    assert r["ref_units"] == 10 and r["errors"] == 3


def test_english_normalisation_removes_case_punctuation_number_differences():
    r = _score([("Mr. Smith has Twenty-One cats, doesn't he?", "mister smith has 21 cats does not he"),
                ("The colour is GREY.", "the color is gray")], "en")
    assert r["errors"] == 0 and r["ref_units"] == 12
    # without the English rules the same pair is wrong: French uses the basic normaliser
    assert _score([("Twenty-One cats", "21 cats")], "fr")["errors"] == 2


def test_alignment_ops_icefall_style():
    rep = score_corpus({"a": "x y z"}, {"a": "x q z w"}, {"a": "fr"})
    (u,) = rep.alignments["fr"]
    assert format_ops(u.ops) == "x (y->q) z (*->w)"
    rep = score_corpus({"a": "x y z"}, {"a": "x"}, {"a": "fr"})
    assert format_ops(rep.alignments["fr"][0].ops) == "x (y->*) (z->*)"


def _write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def files(tmp_path):
    ref = _write(tmp_path, "ref", "u1 red green blue\nu2 四五六\nu3 alpha beta\nu4 [noise]\n")
    u2l = _write(tmp_path, "utt2lang", "u1 en\nu2 zh\nu3 en\nu4 en\n")
    return tmp_path, ref, u2l


def test_missing_hypothesis_counts_as_deletions(files):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "u1 red green blue\nu2 四五\n")
    rep = score_files(ref, hyp, u2l)
    assert rep.missing == ["u3"]
    en = rep.result_dict()["en"]
    assert (en["del"], en["errors"], en["ref_units"], en["utts"]) == (2, 2, 5, 2)
    assert rep.result_dict()["zh"]["del"] == 1
    assert rep.empty_refs == ["u4"]   # "[noise]" normalises to nothing: excluded


def test_empty_hypothesis_line_is_not_missing(files):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "u1\nu2 四五六\nu3 alpha beta\n")
    rep = score_files(ref, hyp, u2l)
    assert rep.missing == [] and rep.result_dict()["en"]["del"] == 3


def test_extra_hypothesis_is_an_error_naming_utt_and_file(files):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "u1 red green blue\nzz9 stray\n")
    with pytest.raises(UserError, match=r"hyp.*zz9"):
        score_files(ref, hyp, u2l)


def test_empty_hypothesis_file_is_an_error_naming_it(files):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "")
    with pytest.raises(UserError, match=f"hypothesis file {hyp} is empty"):
        score_files(ref, hyp, u2l)


def test_non_utf8_and_duplicates_name_file_and_line(files):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", b"u1 one\nu2 \xff\xfe\n")
    with pytest.raises(UserError, match=r"hyp:2: not valid UTF-8"):
        score_files(ref, hyp, u2l)
    hyp = _write(tmp, "hyp", "u1 one\nu1 two\n")
    with pytest.raises(UserError, match=r"hyp:2: duplicate utterance id 'u1' \(first on line 1\)"):
        score_files(ref, hyp, u2l)


def test_reference_without_language_is_an_error(files):
    tmp, ref, _ = files
    u2l = _write(tmp, "u2l_short", "u1 en\n")
    hyp = _write(tmp, "hyp", "u1 one\n")
    with pytest.raises(UserError, match=r"u2l_short: no language .*u2"):
        score_files(ref, hyp, u2l)


def test_cli_writes_exact_schema_errs_summary_and_meta(files, capsys):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "u1 Red, green, BLUE!\nu2 四五七\nu3 alpha\n")
    out = tmp / "score"
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l), "--out", str(out),
                           "--method", "Vanilla-LoRA", "--regime", "chunked", "--seed", "3"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert list(result) == ["en", "zh"]
    for lang, r in result.items():
        assert list(r) == list(RESULT_KEYS)
        assert all(type(r[k]) is int for k in ("errors", "ref_units", "sub", "del", "ins", "utts"))
        assert type(r["rate"]) is float and r["metric"] in ("wer", "cer")
    assert result["en"] == {"metric": "wer", "errors": 1, "ref_units": 5, "rate": 20.0, "sub": 0,
                            "del": 1, "ins": 0, "utts": 2}
    assert result["zh"]["sub"] == 1 and result["zh"]["rate"] == pytest.approx(100 / 3)
    validate_result_dict(result)
    errs = (out / "errs-en.txt").read_text()
    assert "u1:\tref=red green blue" in errs and "u3:\talpha (beta->*)" in errs
    assert "(六->七)" in (out / "errs-zh.txt").read_text()
    summary = (out / "summary.md").read_text()
    assert "| en | WER | 20.00 |" in summary and "- u4" in summary
    assert "| zh | CER | 33.33 |" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "Vanilla-LoRA" and meta["seed"] == 3 and meta["regime"] == "chunked"
    assert "zlora.bin.score" in meta["commands"][-1]


def test_cli_bad_input_exits_2_with_one_line(files, capsys):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "")
    with pytest.raises(SystemExit) as e:
        run_main(score_cli.main, ["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l),
                                  "--out", str(tmp / "o")])
    assert e.value.code == 2
    assert f"hypothesis file {hyp} is empty" in capsys.readouterr().err
    assert not (tmp / "o" / "result.json").exists()


def test_validate_result_dict_rejects_wrong_schema():
    good = {"en": {"metric": "wer", "errors": 1, "ref_units": 2, "rate": 50.0, "sub": 1, "del": 0, "ins": 0,
                   "utts": 1}}
    assert validate_result_dict(good) is good
    with pytest.raises(UserError, match="expected keys"):
        validate_result_dict({"en": {**good["en"], "wer": 1.0}})
    with pytest.raises(UserError, match="non-negative integer"):
        validate_result_dict({"en": {**good["en"], "errors": 1.5}})


def test_meta_takes_the_seed_from_the_exp_config_when_not_given(files):
    tmp, ref, u2l = files
    hyp = _write(tmp, "hyp", "u1 red green blue\n")
    exp = tmp / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text("stage: 2\nseed: 7\n")
    common = ["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l), "--method", "A", "--regime", "full"]
    score_cli.main([*common, "--out", str(tmp / "s1"), "--exp", str(exp)])
    assert json.loads((tmp / "s1/meta.json").read_text())["seed"] == 7
    score_cli.main([*common, "--out", str(tmp / "s2"), "--exp", str(exp), "--seed", "3"])
    assert json.loads((tmp / "s2/meta.json").read_text())["seed"] == 3     # the flag wins
    score_cli.main([*common, "--out", str(tmp / "s3")])
    assert json.loads((tmp / "s3/meta.json").read_text())["seed"] is None
