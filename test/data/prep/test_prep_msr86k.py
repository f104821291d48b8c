"""MSR-86K converter on the two documented layouts (manifest.jsonl, Kaldi-style) with WAV audio."""
import json

import numpy as np
import pytest

from prep_testlib import speak, write_audio
from zlora.data.audio import load_utterance
from zlora.data.kaldi import DataDir, read_kv, validate_data_dir
from zlora.data.prep import PrepError, prepare


def test_manifest_whole_files(tmp_path):
    d = tmp_path / "msr" / "russian" / "dev"           # English-name language dir
    rows = [{"id": "vid1_0001", "audio": "wavs/vid1_0001.wav", "text": "привет  мир", "speaker": "vid1"},
            {"id": "x9", "audio": "wavs/x9.wav", "text": "спасибо"}]
    for r in rows:
        write_audio(d / r["audio"], *speak(r["text"], "ru", tmp_path), "wav")
    (d / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    prepare("msr86k", tmp_path / "msr", "ru", "dev", tmp_path / "out")
    validate_data_dir(tmp_path / "out")
    dd = DataDir(tmp_path / "out")
    # ids: language prefix; speaker a prefix; whitespace collapsed in the text
    assert dd.text == {"msr86k_ru-vid1_0001": "привет мир", "msr86k_ru-x9": "спасибо"}
    assert dd.utt2spk == {"msr86k_ru-vid1_0001": "msr86k_ru-vid1", "msr86k_ru-x9": "msr86k_ru-x9"}
    assert set(dd.utt2lang.values()) == {"ru"}
    assert read_kv(tmp_path / "out/utt2corpusid") == {"msr86k_ru-vid1_0001": "vid1_0001", "msr86k_ru-x9": "x9"}


def test_manifest_segments_of_long_recordings(tmp_path):
    d = tmp_path / "msr" / "vi" / "train"
    a, sr = speak("xin chào", "vi", tmp_path)
    b, _ = speak("cảm ơn bạn", "vi", tmp_path)
    gap = np.zeros(sr // 2, dtype=np.float32)
    write_audio(d / "yt" / "AbC.wav", np.concatenate([gap, a, gap, b, gap]), sr, "wav")
    t1, t2 = 0.5 + len(a) / sr, 1.0 + (len(a) + len(b)) / sr
    rows = [{"id": "AbC_1", "audio": "yt/AbC.wav", "text": "xin chào", "start": 0.5, "end": round(t1, 3)},
            {"id": "AbC_2", "audio": "yt/AbC.wav", "text": "cảm ơn bạn", "start": round(t1 + 0.5, 3),
             "end": round(t2, 3)}]
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare("msr86k", tmp_path / "msr", "vi", "train", tmp_path / "out")
    validate_data_dir(tmp_path / "out")                 # segment bounds checked against the audio
    dd = DataDir(tmp_path / "out")
    assert dd.wav_scp == {"msr86k_vi-AbC": str(d / "yt" / "AbC.wav")}
    assert dd.segments["msr86k_vi-AbC_2"].rec == "msr86k_vi-AbC"
    assert dd.utt2spk["msr86k_vi-AbC_1"] == "msr86k_vi-AbC"      # the recording as speaker
    assert abs(len(load_utterance(dd, "msr86k_vi-AbC_2")) / 16000 - len(b) / sr) < 0.01


def test_kaldi_style_layout_unsorted_with_pipe(tmp_path):
    d = tmp_path / "msr" / "en" / "dev"
    for utt, text in (("u2", "good night"), ("u1", "hello there")):
        write_audio(d / f"{utt}.wav", *speak(text, "en", tmp_path), "wav")
    (d / "wav.scp").write_text(f"u2 u2.wav\nu1 cat {d / 'u1.wav'} |\n")   # relative path and a pipe
    (d / "text").write_text("u2 good night\nu1 hello there\n")           # not sorted: allowed here
    (d / "utt2spk").write_text("u2 spkA\nu1 spkB\n")
    prepare("msr86k", tmp_path / "msr", "en", "dev", tmp_path / "out")
    validate_data_dir(tmp_path / "out")
    dd = DataDir(tmp_path / "out")
    assert dd.utts == ["msr86k_en-spkA-u2", "msr86k_en-spkB-u1"]
    assert dd.wav_scp["msr86k_en-spkB-u1"].endswith("|") and dd.wav_scp["msr86k_en-spkA-u2"] == str(d / "u2.wav")


def test_layout_errors(tmp_path):
    with pytest.raises(PrepError, match=r"manifest\.jsonl or wav\.scp \+ text"):
        prepare("msr86k", tmp_path, "th", "dev", tmp_path / "out")
    d = tmp_path / "th" / "dev"
    d.mkdir(parents=True)
    (d / "manifest.jsonl").write_text('{"id": "a", "audio": "a.wav", "text": "x"}\n{"id": "b", "text": "y"}\n')
    with pytest.raises(PrepError, match=r"manifest\.jsonl:2: needs string fields id, audio, text"):
        prepare("msr86k", tmp_path, "th", "dev", tmp_path / "out", skip_missing=True)
