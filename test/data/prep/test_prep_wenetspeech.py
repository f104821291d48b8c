"""WenetSpeech converter on a fake WenetSpeech.json + OGG/Opus long recordings (espeak-ng speech)."""
import json

import pytest

from prep_testlib import make_wenetspeech
from zlora.data.audio import load_utterance
from zlora.data.kaldi import DataDir, validate_data_dir
from zlora.data.prep import PrepError, prepare
from zlora.data.prep import wenetspeech as ws

AUDIOS = [("Y0000000001_abc", [("你好世界", ["S", "M", "L"]), ("今天天气很好", ["M", "L"]),
                               ("谢谢", ["TEST_NET"])]),
          ("M0000000002_meet", [("开会了", ["TEST_MEETING"]), ("再见", ["L"])])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("wenetspeech")
    return root, make_wenetspeech(root, AUDIOS)


@pytest.mark.parametrize("subset", ["L", "S", "TEST_NET", "TEST_MEETING"])
def test_subsets_segments_and_audio(corpus, tmp_path, subset):
    root, want = corpus
    prepare("wenetspeech", root / "WenetSpeech.json", "zh", subset, tmp_path / "d")
    validate_data_dir(tmp_path / "d")             # decodes the opus files, checks segment bounds
    d = DataDir(tmp_path / "d")
    mine = {sid: w for sid, w in want.items() if subset in w[4]}
    assert d.text == {sid: w[3] for sid, w in mine.items()}
    assert {u: (s.rec, s.start, s.end) for u, s in d.segments.items()} == {
        sid: (w[0], w[1], w[2]) for sid, w in mine.items()}
    assert d.utt2spk == {sid: w[0] for sid, w in mine.items()}       # aid, a prefix of sid
    assert set(d.utt2lang.values()) == {"zh"}
    assert set(d.wav_scp) == {w[0] for w in mine.values()}
    assert all(p.endswith(".opus") for p in d.wav_scp.values())
    for u, s in d.segments.items():              # each segment decodes to its own length
        assert abs(len(load_utterance(d, u)) / 16000 - (s.end - s.start)) < 0.002


def test_streaming_parse_matches_json_load(corpus, monkeypatch):
    root, _ = corpus
    path = root / "WenetSpeech.json"
    monkeypatch.setattr(ws, "_CHUNK", 13)         # items and keys straddle every chunk boundary
    assert [item for _, item in ws.iter_audios(path)] == json.loads(path.read_text())["audios"]


def test_truncated_json_and_bad_subset(corpus, tmp_path):
    root, _ = corpus
    text = (root / "WenetSpeech.json").read_text()
    (tmp_path / "WenetSpeech.json").write_text(text[: len(text) // 2])
    with pytest.raises(PrepError, match=r"malformed or truncated JSON in audios item"):
        prepare("wenetspeech", tmp_path, "zh", "L", tmp_path / "out")
    with pytest.raises(PrepError, match="TEST_MEETING"):
        prepare("wenetspeech", root, "zh", "TEST_MEETNG", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_recording_skips_all_its_segments(corpus, tmp_path):
    root, _ = corpus
    meta = json.loads((root / "WenetSpeech.json").read_text())
    meta["audios"][0]["path"] = "audio/missing.opus"
    (tmp_path / "WenetSpeech.json").write_text(json.dumps(meta))
    (tmp_path / "audio").symlink_to(root / "audio")
    with pytest.raises(PrepError, match=r"audios\[0\] \(aid Y0000000001_abc\): audio file .*missing\.opus"):
        prepare("wenetspeech", tmp_path, "zh", "L", tmp_path / "out")
    counts = prepare("wenetspeech", tmp_path, "zh", "L", tmp_path / "out", skip_missing=True)
    assert counts["utterances"] == 1 and counts["skipped"] == {"audio file missing": 2}
