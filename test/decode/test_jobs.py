import json

import pytest

from zlora.decode.jobs import merge_parts, split_utts, write_part


def _utts(n):
    return [(f"utt{i:03d}", 100 + (i * 37) % 50) for i in range(n)]


def test_split_is_deterministic_and_covers_all(tmp_path):
    a = split_utts(_utts(23), 4, tmp_path)
    b = split_utts(list(reversed(_utts(23))), 4, tmp_path)
    assert [p.utts for p in a] == [p.utts for p in b]
    flat = [u for p in a for u in p.utts]
    assert sorted(flat) == sorted(u for u, _ in _utts(23)) and len(flat) == len(set(flat))
    assert max(len(p.utts) for p in a) - min(len(p.utts) for p in a) <= 1


def test_merge_needs_all_parts_and_resume_skips_done(tmp_path):
    parts = split_utts(_utts(7), 3, tmp_path)
    for p in parts[:2]:
        write_part(p, {u: f"hyp {u}" for u in p.utts}, {"utts": len(p.utts), "audio_seconds": 1.0,
                                                          "decode_seconds": 0.5})
    with pytest.raises(RuntimeError, match=r"parts \[3\] are not finished"):
        merge_parts(parts, tmp_path)
    assert not (tmp_path / "text").exists()
    again = split_utts(_utts(7), 3, tmp_path)
    assert [p.index for p in again if not p.done] == [3]
    p3 = again[2]
    write_part(p3, {u: "x" for u in p3.utts}, {"utts": len(p3.utts), "audio_seconds": 2.0,
                                                 "decode_seconds": 0.5})
    summary = merge_parts(again, tmp_path)
    lines = (tmp_path / "text").read_text().splitlines()
    assert len(lines) == 7 and len({l.split()[0] for l in lines}) == 7
    assert summary["rtf"] == pytest.approx(1.5 / 4.0, abs=1e-4)
    assert json.loads((tmp_path / "rtf.json").read_text())["utts"] == 7


def test_write_part_refuses_missing_hyp(tmp_path):
    (p,) = split_utts(_utts(2), 1, tmp_path)
    with pytest.raises(RuntimeError, match="no hypothesis"):
        write_part(p, {p.utts[0]: "a"}, {})
    assert not p.done


def test_merged_output_is_current_only_for_the_same_parts(tmp_path):
    from zlora.decode.jobs import merged_is_current

    parts = split_utts(_utts(5), 2, tmp_path)
    for p in parts:
        write_part(p, {u: "h" for u in p.utts}, {"utts": len(p.utts), "audio_seconds": 1.0,
                                                 "decode_seconds": 0.1})
    assert not merged_is_current(parts, tmp_path)
    merge_parts(parts, tmp_path)
    assert merged_is_current(split_utts(_utts(5), 2, tmp_path), tmp_path)
    assert not merged_is_current(split_utts(_utts(6), 2, tmp_path), tmp_path)
