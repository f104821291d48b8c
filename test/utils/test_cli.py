"""zlora.utils.cli.ArgumentParser: renamed options keep their old spelling as hidden, deprecated
aliases (one stderr line each); '-' and '_' in option names are the same."""
import pytest

from zlora.utils.cli import ArgumentParser


def parser():
    p = ArgumentParser("demo", description="demo")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--languages", default="", help="comma-separated codes")
    p.add_argument("--no_text", action="store_true", help="text is optional")
    p.add_argument("rest", nargs="*", help="positional")
    p.add_alias("--outdir", "--out")
    p.add_alias("--langs", "--languages")
    return p


def test_old_spelling_works_and_prints_one_deprecation_line(capsys):
    args = parser().parse_args(["--outdir", "x", "--langs=en,fr", "--outdir", "y"])
    assert args.out == "y" and args.languages == "en,fr"      # a required option given by its alias
    assert capsys.readouterr().err.splitlines() == [
        "zlora.bin.demo: --outdir is deprecated; use --out",
        "zlora.bin.demo: --langs is deprecated; use --languages"]


def test_new_spelling_is_silent_and_aliases_are_hidden_from_help(capsys):
    p = parser()
    assert p.parse_args(["--out", "x"]).out == "x"
    assert capsys.readouterr().err == ""
    text = p.format_help()
    assert "--out OUT" in text and "--outdir" not in text and "--langs" not in text
    assert p.prog == "python -m zlora.bin.demo"


def test_dash_and_underscore_are_the_same():
    args = parser().parse_args(["--out", "x", "--no-text", "--", "--no-text"])
    assert args.no_text and args.rest == ["--no-text"]          # after --, arguments are left alone


def test_an_alias_of_an_unknown_option_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown option --output"):
        ArgumentParser("demo").add_alias("--out_dir", "--output")


def test_sub_commands_get_aliases_too(capsys):
    p = ArgumentParser("demo")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("radar", help="a figure")
    s.add_argument("--languages", help="codes")
    s.add_alias("--langs", "--languages")
    assert p.parse_args(["radar", "--langs", "en"]).languages == "en"
    assert "zlora.bin.demo: --langs is deprecated; use --languages" in capsys.readouterr().err
