"""LibriSpeech converter on a fake corpus in the official layout (FLAC from espeak-ng)."""
import subprocess
from pathlib import Path

import pytest

from prep_testlib import make_librispeech
from zlora.bin import prep_corpus
from zlora.data.kaldi import DataDir, read_kv, validate_data_dir
from zlora.data.prep import PrepError, prepare

REPO = Path(__file__).resolve().parents[3]
CHAPTERS = {("1089", "134686"): ["HE HOPED THERE WOULD BE STEW", "STUFF IT INTO YOU"],
            ("121", "123852"): ["YES SIR"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ls")
    return root, make_librispeech(root, "test-clean", CHAPTERS)


def test_converts_and_passes_validate_data_dir_sh(corpus, tmp_path):
    root, want = corpus
    out = tmp_path / "test_clean"
    assert prep_corpus.main(["librispeech", "--split", "test-clean", str(root), "--out", str(out)]) == 0
    # the shell validator (Kaldi's interface), decoding every file
    res = subprocess.run(["bash", str(REPO / "utils/validate_data_dir.sh"), str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "3 utterances, 2 speakers" in res.stdout + res.stderr
    d = DataDir(out)
    assert d.text == want                                   # ids and transcripts (case kept)
    assert set(d.utt2lang.values()) == {"en"}
    assert d.utt2spk == {u: u.split("-")[0] for u in want}  # the reader
    assert all(Path(p).is_absolute() and p.endswith(f"{u}.flac") for u, p in d.wav_scp.items())
    assert read_kv(out / "utt2corpusid") == {u: u for u in want}


def test_root_may_be_the_librispeech_dir(corpus, tmp_path):
    root, want = corpus
    prepare("librispeech", root / "LibriSpeech", "en", "test-clean", tmp_path / "d")
    assert set(DataDir(tmp_path / "d").utts) == set(want)


def test_bad_transcript_line_names_file_and_line(tmp_path):
    make_librispeech(tmp_path / "c", "dev-clean", {("7", "8"): ["ONE"]})
    trans = tmp_path / "c/LibriSpeech/dev-clean/7/8/7-8.trans.txt"
    trans.write_text("7-8-0000 ONE\n9-9-0001 WRONG CHAPTER\n")
    with pytest.raises(PrepError, match=r"7-8\.trans\.txt:2: utterance id '9-9-0001'"):
        prepare("librispeech", tmp_path / "c", "en", "dev-clean", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_audio_is_an_error_unless_skipped(tmp_path):
    make_librispeech(tmp_path / "c", "dev-other", {("7", "8"): ["ONE", "TWO"]})
    (tmp_path / "c/LibriSpeech/dev-other/7/8/7-8-0001.flac").unlink()
    with pytest.raises(PrepError, match=r"7-8\.trans\.txt:2: audio file .*7-8-0001\.flac does not exist"):
        prepare("librispeech", tmp_path / "c", "en", "dev-other", tmp_path / "out")
    counts = prepare("librispeech", tmp_path / "c", "en", "dev-other", tmp_path / "out", skip_missing=True)
    assert counts["utterances"] == 1 and counts["skipped"] == {"audio file missing": 1}
    validate_data_dir(tmp_path / "out")


def test_unknown_split_lists_the_official_ones(tmp_path):
    (tmp_path / "LibriSpeech").mkdir()
    with pytest.raises(PrepError, match="train-clean-100"):
        prepare("librispeech", tmp_path, "en", "test-cleen", tmp_path / "out")


def test_source_fingerprint_follows_the_chapter_transcripts(tmp_path_factory):
    """The transcripts sit two levels below the split dir: an edited one must be noticed."""
    import os

    from zlora.data.prep import CORPORA
    from zlora.data.prep.registry import NoOptions

    root = tmp_path_factory.mktemp("ls_fp")
    make_librispeech(root, "test-clean", {("121", "123852"): ["YES SIR"]})
    spec = CORPORA.get("librispeech")
    fp = spec.fingerprint(root, "en", "test-clean", NoOptions())
    trans = root / "LibriSpeech/test-clean/121/123852/121-123852.trans.txt"
    st = trans.stat()
    os.utime(trans, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert spec.fingerprint(root, "en", "test-clean", NoOptions()) != fp
