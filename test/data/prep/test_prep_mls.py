"""MLS converter on fake FLAC and Opus releases in the official layout (espeak-ng speech)."""
from pathlib import Path

import pytest
import soundfile as sf

from prep_testlib import make_mls
from zlora.data.audio import load_utterance
from zlora.data.kaldi import DataDir, read_kv, validate_data_dir
from zlora.data.prep import PrepError, prepare

ROWS_DE = [("1234_5678_000001", "guten tag"), ("1234_5678_000002", "danke schön"),
           ("99_5678_000007", "auf wiedersehen")]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("mls")
    make_mls(r, "german", "de", "test", ROWS_DE, "flac")
    make_mls(r, "german", "de", "test", ROWS_DE[:2], "opus")
    make_mls(r, "portuguese", "pt", "train", [("10_20_000003", "bom dia")], "opus")
    return r


def test_flac_release(root, tmp_path):
    prepare("mls", root, "de", "test", tmp_path / "d")     # auto: FLAC preferred when both exist
    res = validate_data_dir(tmp_path / "d")                 # decodes every file
    d = DataDir(tmp_path / "d")
    assert d.text == dict(ROWS_DE)
    assert d.utt2spk == {u: u.split("_")[0] for u, _ in ROWS_DE}
    assert set(d.utt2lang.values()) == {"de"} and res.n_spks == 2
    assert d.wav_scp["99_5678_000007"].endswith("mls_german/test/audio/99/5678/99_5678_000007.flac")
    assert read_kv(tmp_path / "d/utt2corpusid") == {u: u for u, _ in ROWS_DE}


def test_opus_release(root, tmp_path):
    prepare("mls", root, "de", "test", tmp_path / "d", release="opus")
    validate_data_dir(tmp_path / "d")
    d = DataDir(tmp_path / "d")
    assert d.text == dict(ROWS_DE[:2])
    path = d.wav_scp["1234_5678_000001"]
    assert path.endswith("mls_german_opus/test/audio/1234/5678/1234_5678_000001.opus")
    assert sf.info(path).subtype == "OPUS"
    assert len(load_utterance(d, "1234_5678_000001")) > 8000   # decodes to 16-kHz samples
    # the language dir itself as root, opus only
    prepare("mls", root / "mls_portuguese_opus", "pt", "train", tmp_path / "pt")
    assert DataDir(tmp_path / "pt").utt2lang == {"10_20_000003": "pt"}


def test_malformed_transcript_line(root, tmp_path):
    bad = tmp_path / "mls_french/dev"
    bad.mkdir(parents=True)
    (bad / "transcripts.txt").write_text("1_2_3\tok\n1_2_4 no tab here\n")
    with pytest.raises(PrepError, match=r"transcripts\.txt:2: expected '<speaker>_<book>_<segment><TAB>"):
        prepare("mls", tmp_path, "fr", "dev", tmp_path / "out", skip_missing=True)


def test_missing_language_names_where_it_looked(root, tmp_path):
    with pytest.raises(PrepError, match=r"mls_spanish/test/transcripts\.txt"):
        prepare("mls", root, "es", "test", tmp_path / "out")
    with pytest.raises(PrepError, match="MLS has no language 'ja'"):
        prepare("mls", root, "ja", "test", tmp_path / "out")
    assert not Path(tmp_path / "out").exists()
