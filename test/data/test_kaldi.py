"""Kaldi data dir readers/writers and every validator failure class (issue 2 §4, issue 10)."""
import subprocess

import numpy as np
import pytest
import soundfile as sf
from tiny_datadir import make_datadir, tone

from zlora.data.kaldi import (KNOWN_LANGS, DataDir, DataDirError, Segment, copy_subset, read_kv,
                              validate_data_dir, write_kv)


@pytest.fixture
def ddir(tmp_path):
    return make_datadir(tmp_path / "data dir", langs=("en", "fr"))  # 8 utts, 4 speakers


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def set_lines(path, new):
    path.write_text("".join(f"{x}\n" for x in new), encoding="utf-8")


def fails(d, *needles, **kw):
    """Validate ``d``; assert it fails and the message contains every needle."""
    with pytest.raises(DataDirError) as e:
        validate_data_dir(d, **kw)
    msg = str(e.value)
    for n in needles:
        assert str(n) in msg, f"{n!r} not in message:\n{msg}"
    return msg


# ---- readers / writers -------------------------------------------------------------------------

def test_write_kv_sorts_like_lc_all_c_sort(tmp_path):
    keys = ["b", "a-2", "a_1", "Z", "é1", "z", "a10", "a9", "日本"]
    write_kv(tmp_path / "t", {k: f"v {k}" for k in keys})
    got = lines(tmp_path / "t")
    ref = subprocess.run(["sort"], input="\n".join(got) + "\n", capture_output=True, text=True,
                         env={"LC_ALL": "C"}).stdout.splitlines()
    assert got == ref
    assert read_kv(tmp_path / "t") == {k: f"v {k}" for k in sorted(keys)}


def test_read_kv_value_is_rest_of_line_and_field_counts(tmp_path):
    set_lines(tmp_path / "wav.scp", ["u1 /path with spaces/a.wav", "u2 sox x.wav -t wav - |"])
    assert read_kv(tmp_path / "wav.scp") == {"u1": "/path with spaces/a.wav", "u2": "sox x.wav -t wav - |"}
    set_lines(tmp_path / "f", ["u1 a b"])
    with pytest.raises(DataDirError, match=r"f:1: malformed line \(id 'u1'\): expected 2 fields, got 3"):
        read_kv(tmp_path / "f", n_fields=2)


def test_datadir_attributes_and_write_roundtrip(tmp_path):
    d = make_datadir(tmp_path / "seg", langs=("ja",), segments=True, utt2dur=True)
    dd = DataDir(d)
    assert dd.utts == sorted(dd.text) and len(dd.utts) == 4
    assert dd.segments["jaspk0-001"] == Segment("jaspk0-rec", 0.5, 1.0)
    assert dd.utt2dur["jaspk0-000"] == 0.5 and dd.utt2lang["jaspk1-000"] == "ja"
    assert dd.spk2utt["jaspk0"] == ["jaspk0-000", "jaspk0-001"]
    out = tmp_path / "copy"
    DataDir.write(out, text=dd.text, utt2spk=dd.utt2spk, utt2lang=dd.utt2lang, wav_scp=dd.wav_scp,
                  segments=dd.segments, utt2dur=dd.utt2dur)
    assert validate_data_dir(out).n_utts == 4
    assert DataDir(out).segments == dd.segments and lines(out / "spk2utt") == lines(d / "spk2utt")
    copy_subset(d, tmp_path / "sub", ["jaspk1-001"])  # the unused recordings/speakers go too
    sub = DataDir(tmp_path / "sub")
    assert sub.utts == ["jaspk1-001"] and list(sub.wav_scp) == ["jaspk1-rec"]
    assert list(sub.spk2utt) == ["jaspk1"]


def test_missing_optional_files_are_none_and_required_raise(ddir):
    dd = DataDir(ddir)
    assert dd.segments is None and dd.utt2dur is None
    (ddir / "utt2lang").unlink()
    with pytest.raises(DataDirError, match="utt2lang does not exist"):
        dd.utt2lang


def test_known_langs_cover_whisper():
    from transformers.models.whisper.tokenization_whisper import LANGUAGES
    assert set(LANGUAGES) <= set(KNOWN_LANGS)
    assert {"en", "fr", "de", "es", "it", "ru", "vi", "th", "ar", "ja", "ko", "pt", "zh"} <= set(KNOWN_LANGS)


# ---- the validator: a valid dir ----------------------------------------------------------------

def test_valid_dir_passes_with_summary_line(ddir):
    s = validate_data_dir(ddir)
    assert (s.n_utts, s.n_spks, s.lang_counts) == (8, 4, {"en": 4, "fr": 4})
    assert s.hours == pytest.approx(8 * 0.5 / 3600) and s.hours_source == "audio"
    assert "OK: 8 utterances, 4 speakers, 2 languages (en:4,fr:4), 0.001 hours" in s.line()


# ---- the validator: each failure class names file, line and utterance -------------------------

def test_unsorted_file(ddir):
    t = lines(ddir / "text")
    t[1], t[2] = t[2], t[1]
    set_lines(ddir / "text", t)
    fails(ddir, f"{ddir / 'text'}:3:", "not sorted", "enspk0-001")


def test_duplicate_id(ddir):
    t = lines(ddir / "utt2lang")
    set_lines(ddir / "utt2lang", t[:3] + [t[2]] + t[3:])
    fails(ddir, f"{ddir / 'utt2lang'}:4:", "duplicate id 'enspk1-000'", "first at line 3")


def test_id_sets_differ_partial_diff(ddir):
    set_lines(ddir / "text", lines(ddir / "text")[:-1] + ["frspk9-000 extra"])
    msg = fails(ddir, "utterance lists extracted from utt2spk and text differ", "partial diff is:",
                f"{ddir / 'utt2spk'}:8: frspk1-001", f"{ddir / 'text'}:8: frspk9-000")
    assert "fix_data_dir" in msg


def test_recording_ids_differ_with_segments(tmp_path):
    d = make_datadir(tmp_path / "seg", langs=("ja",), segments=True)
    set_lines(d / "wav.scp", lines(d / "wav.scp")[:1])
    fails(d, "recording lists extracted from segments and wav.scp differ", f"{d / 'segments'}:3: jaspk1-rec")


def test_feats_scp_ids_must_match(ddir):
    set_lines(ddir / "feats.scp", [f"{u} x.ark:1" for u in read_kv(ddir / "text")][1:])
    fails(ddir, "utt2spk and feats.scp differ", f"{ddir / 'utt2spk'}:1: enspk0-000")


def test_empty_transcript(ddir):
    t = lines(ddir / "text")
    t[4] = t[4].split()[0] + "   "
    set_lines(ddir / "text", t)
    fails(ddir, f"{ddir / 'text'}:5:", "'frspk0-000'", "empty transcript")


def test_unknown_language_code(ddir):
    t = lines(ddir / "utt2lang")
    t[5] = t[5].replace(" fr", " xx")
    set_lines(ddir / "utt2lang", t)
    fails(ddir, f"{ddir / 'utt2lang'}:6:", "'frspk0-001'", "unknown language code 'xx'")


def test_language_outside_given_set(ddir):
    fails(ddir, f"{ddir / 'utt2lang'}:5:", "'frspk0-000'", "'fr'", "[de, en]", known_langs=["en", "de"])


def test_missing_audio_file(ddir):
    (ddir / "wav" / "enspk1-001.wav").unlink()
    fails(ddir, f"{ddir / 'wav.scp'}:4:", "'enspk1-001'", "enspk1-001.wav", "does not exist")


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_bytes(b""), "zero-length file"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), "unreadable or corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:3000]), "truncated"),
    (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "zero-length audio"),
])
def test_corrupt_truncated_zero_length_audio(ddir, damage, needle):
    damage(ddir / "wav" / "frspk1-000.wav")
    fails(ddir, f"{ddir / 'wav.scp'}:7:", "'frspk1-000'", "frspk1-000.wav", needle)


def test_failing_pipe(ddir):
    t = lines(ddir / "wav.scp")
    t[0] = "enspk0-000 cat /nonexistent.wav |"
    set_lines(ddir / "wav.scp", t)
    fails(ddir, f"{ddir / 'wav.scp'}:1:", "'enspk0-000'", "cat /nonexistent.wav", "exit code")


def test_non_utf8_text(ddir):
    t = (ddir / "text").read_bytes().splitlines(keepends=True)
    t[2] = b"enspk1-000 caf\xe9 latin-1\n"
    (ddir / "text").write_bytes(b"".join(t))
    fails(ddir, f"{ddir / 'text'}:3:", "not valid UTF-8")


def test_segment_outside_recording(tmp_path):
    d = make_datadir(tmp_path / "seg", langs=("ja",), segments=True)  # recordings are 1.0 s
    t = lines(d / "segments")
    t[3] = "jaspk1-001 jaspk1-rec 0.5 1.4"
    set_lines(d / "segments", t)
    fails(d, f"{d / 'segments'}:4:", "'jaspk1-001'", "outside recording 'jaspk1-rec'", "1.000 s")


def test_segment_with_bad_times(tmp_path):
    d = make_datadir(tmp_path / "seg", langs=("ja",), segments=True)
    t = lines(d / "segments")
    t[1] = "jaspk0-001 jaspk0-rec 0.9 0.5"
    set_lines(d / "segments", t)
    fails(d, f"{d / 'segments'}:2:", "'jaspk0-001'", "bad segment times")


@pytest.mark.parametrize("name,bad", [("utt2spk", "enspk0-001 enspk0 extra"),
                                      ("utt2lang", "enspk0-001"),
                                      ("segments", None)])
def test_malformed_line(tmp_path, name, bad):
    d = make_datadir(tmp_path / "d", langs=("en",), segments=name == "segments")
    t = lines(d / name)
    t[1] = bad or "enspk0-001 enspk0-rec 0.5"
    set_lines(d / name, t)
    fails(d, f"{d / name}:2:", "malformed line", "enspk0-001", "fields")


def test_spk2utt_inconsistent(ddir):
    t = lines(ddir / "spk2utt")
    t[0] = "enspk0 enspk0-000"
    set_lines(ddir / "spk2utt", t)
    fails(ddir, f"{ddir / 'spk2utt'}:1:", "speaker 'enspk0'", "enspk0-001")


def test_missing_required_file(ddir):
    (ddir / "utt2lang").unlink()
    fails(ddir, "utt2lang does not exist")


def test_bad_utt2dur(ddir):
    set_lines(ddir / "utt2dur", [f"{u} 0.5" for u in read_kv(ddir / "text")])
    assert validate_data_dir(ddir, check_audio=False).hours_source == "utt2dur"
    t = lines(ddir / "utt2dur")
    t[2] = "enspk1-000 abc"
    set_lines(ddir / "utt2dur", t)
    fails(ddir, f"{ddir / 'utt2dur'}:3:", "'enspk1-000'", "not a number")


def test_resampled_and_stereo_audio_validate(tmp_path):
    d = make_datadir(tmp_path / "d", langs=("en",), sr=22050, fmt="flac")
    sf.write(d / "wav" / "enspk0-000.flac", np.stack([tone(0.5, 22050)] * 2, 1), 22050)
    assert validate_data_dir(d).hours == pytest.approx(4 * 0.5 / 3600, rel=1e-3)
