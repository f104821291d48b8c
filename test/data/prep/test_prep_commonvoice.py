"""Common Voice converter on fake releases (tsv + clips/*.mp3 from espeak-ng)."""
import pytest
import soundfile as sf

from prep_testlib import make_commonvoice
from zlora.bin import prep_corpus
from zlora.data.kaldi import DataDir, read_kv, validate_data_dir
from zlora.data.prep import PrepError, prepare

pytestmark = pytest.mark.skipif("MP3" not in sf.available_formats(),
                                reason="this libsndfile cannot write MP3 (Common Voice's format)")
C1, C2 = "a" * 64, "b" * 64   # client_id hashes
ROWS_AR = [(C1, "common_voice_ar_24042033", "مرحبا بكم"), (C2, "common_voice_ar_24042034", "شكرا جزيلا"),
           (C1, "common_voice_ar_19404469", 'قال "نعم"')]     # a quote: tsvs are not quoted


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("cv-corpus-18.0")
    make_commonvoice(r, "ar", "ar", "train", ROWS_AR)
    old = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent",
           "locale", "segment"]
    make_commonvoice(r, "ja", "ja", "test", [(C2, "common_voice_ja_1", "こんにちは")], header=old)
    make_commonvoice(r, "zh-CN", "zh", "dev", [(C1, "common_voice_zh-CN_5", "你好")],
                     header=["client_id", "path", "text", "locale"])
    return r


def test_cv18_header_ids_text_language(root, tmp_path):
    counts = prepare("commonvoice", root, "ar", "train", tmp_path / "d")
    validate_data_dir(tmp_path / "d")                      # decodes every mp3
    d = DataDir(tmp_path / "d")
    want = {f"{c}-{stem}": text for c, stem, text in ROWS_AR}
    assert d.text == want and counts["speakers"] == 2
    assert d.utt2spk == {u: u[:64] for u in want}         # client_id, a prefix of the utterance id
    assert set(d.utt2lang.values()) == {"ar"}
    assert read_kv(tmp_path / "d/utt2corpusid") == {f"{c}-{s}": s for c, s, _ in ROWS_AR}
    assert all(p.endswith(".mp3") for p in d.wav_scp.values())


def test_older_header_and_text_column_variant(root, tmp_path):
    prepare("commonvoice", root, "ja", "test", tmp_path / "ja")
    assert DataDir(tmp_path / "ja").text == {f"{C2}-common_voice_ja_1": "こんにちは"}
    prepare("commonvoice", root, "zh", "dev", tmp_path / "zh", locale="zh-CN")
    d = DataDir(tmp_path / "zh")
    assert d.utt2lang == {f"{C1}-common_voice_zh-CN_5": "zh"} and validate_data_dir(tmp_path / "zh")


def test_header_without_transcript_column(root, tmp_path):
    (root / "ar" / "other.tsv").write_text("client_id\tpath\tup_votes\nx\ty.mp3\t1\n")
    with pytest.raises(PrepError, match=r"other\.tsv:1: header lacks column\(s\) sentence"):
        prepare("commonvoice", root, "ar", "other", tmp_path / "out")


def test_short_row_and_empty_sentence(root, tmp_path):
    lines = (root / "ar" / "train.tsv").read_text().splitlines()
    (root / "ar" / "dev.tsv").write_text("\n".join([lines[0], lines[1], f"{C2}\tx.mp3"]) + "\n")
    with pytest.raises(PrepError, match=r"dev\.tsv:3: 2 columns"):
        prepare("commonvoice", root, "ar", "dev", tmp_path / "out")
    cols = lines[2].split("\t")
    cols[3] = "   "
    (root / "ar" / "dev.tsv").write_text("\n".join([lines[0], lines[1], "\t".join(cols)]) + "\n")
    counts = prepare("commonvoice", root, "ar", "dev", tmp_path / "out")
    assert counts["utterances"] == 1 and counts["skipped"] == {"empty transcript": 1}


def test_map_ids_takes_the_authors_corpus_ids(root, tmp_path):
    prepare("commonvoice", root, "ar", "train", tmp_path / "d")
    lst = tmp_path / "train_com_voice_ar_ids.txt"
    lst.write_text("common_voice_ar_24042034\n\ncommon_voice_ar_19404469\n")
    assert prep_corpus.main(["map-ids", "--data", str(tmp_path / "d"), str(lst), "--out", str(tmp_path / "ids")]) == 0
    assert (tmp_path / "ids").read_text().split() == sorted([f"{C2}-common_voice_ar_24042034",
                                                             f"{C1}-common_voice_ar_19404469"])
    lst.write_text("common_voice_ar_24042034\ncommon_voice_ar_99\n")
    with pytest.raises(Exception, match="common_voice_ar_99"):
        prep_corpus.main(["map-ids", "--data", str(tmp_path / "d"), str(lst), "--out", str(tmp_path / "ids2")])
