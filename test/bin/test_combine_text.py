"""zlora.bin.combine_text: per-language decodes into one text, sorted by id, lines verbatim."""
import pytest

from zlora.bin import combine_text
from zlora.utils.cli import UserError


def test_sorted_union_keeps_lines_and_empty_hypotheses(tmp_path):
    (tmp_path / "ja").write_text("ja-2 こんにちは\nja-1\n", encoding="utf-8")
    (tmp_path / "en").write_text("en-1 hello  world\n", encoding="utf-8")
    out = tmp_path / "experts" / "decode_test" / "text"
    assert combine_text.main(["--out", str(out), str(tmp_path / "ja"), str(tmp_path / "en")]) == 0
    assert out.read_text(encoding="utf-8") == "en-1 hello  world\nja-1\nja-2 こんにちは\n"


def test_duplicate_or_bad_input_writes_nothing(tmp_path):
    (tmp_path / "a").write_text("u1 x\n")
    (tmp_path / "b").write_text("u1 y\n")
    (tmp_path / "blank").write_text("u2 x\n\n")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"'u1' is in both .*a and .*b"):
        combine_text.main(["--out", str(out), str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(UserError, match="blank line"):
        combine_text.main(["--out", str(out), str(tmp_path / "blank")])
    with pytest.raises(UserError, match="does not exist"):
        combine_text.main(["--out", str(out), str(tmp_path / "missing")])
    assert not out.exists()
