"""Bad corpora, as a user meets them: each case runs the stage that reads the input (dump_feats,
train, decode, score) and checks the exit code and that the message names the file and the
utterance (issue 10, "Data and audio"). Library-level variants live in test/data/test_audio.py,
test/data/test_kaldi.py and test/data/test_dataset.py."""
import json
import shutil

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from rel_testlib import error_line, run_cli
from tiny_datadir import make_datadir, tone
from train_testlib import make_corpus, single_process_env, train_config, write_config

from zlora.bin.decode import main as decode_main
from zlora.bin.dump_feats import main as dump_main
from zlora.bin.score import main as score_main
from zlora.bin.train import main as train_main
from zlora.data.dataset import load_utterances
from zlora.utils.cli import UserError

BAD_UTT = "enspk0-001"


@pytest.fixture
def audio_dir(tmp_path):
    """en only, one speaker, utterances enspk0-000..002 of 0.3 s, wav.scp line 2 = BAD_UTT."""
    return make_datadir(tmp_path / "data dir", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.3)


def dump_fails(data, out, nj, *needles):
    code, err = run_cli(dump_main, ["--data", data, "--out", out, "--nj", nj])
    assert code == 2, err
    line = error_line(err)
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (out / ".done").exists() and not (out / "feats.scp").exists()
    return line


def set_wav_line(data, utt, value):
    lines = (data / "wav.scp").read_text().splitlines()
    lines = [f"{utt} {value}" if l.split()[0] == utt else l for l in lines]
    (data / "wav.scp").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage, needle, nj", [
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), "unreadable or corrupt", 1),
    (lambda p: p.write_bytes(p.read_bytes()[:2000]), "truncated", 2),        # error from a worker
    (lambda p: p.write_bytes(b""), "zero-length file", 1),
    (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "zero-length audio", 1),
])
def test_corrupt_truncated_or_empty_audio_stops_dump_feats_naming_utt_and_file(audio_dir, tmp_path, damage,
                                                                               needle, nj):
    wav = audio_dir / "wav" / f"{BAD_UTT}.wav"
    damage(wav)
    dump_fails(audio_dir, tmp_path / "dump", nj, f"utterance '{BAD_UTT}'", str(wav), needle)


def test_missing_audio_file_stops_dump_feats_naming_utt_and_file(audio_dir, tmp_path):
    wav = audio_dir / "wav" / f"{BAD_UTT}.wav"
    wav.unlink()
    dump_fails(audio_dir, tmp_path / "dump", 1, f"utterance '{BAD_UTT}'", str(wav), "does not exist")


def test_failing_pipe_stops_dump_feats_naming_utt_and_command(audio_dir, tmp_path):
    set_wav_line(audio_dir, BAD_UTT, "cat '/no such dir/x.wav' | cat |")
    line = dump_fails(audio_dir, tmp_path / "dump", 1, f"utterance '{BAD_UTT}'", "cat '/no such dir/x.wav'",
                      "failed with exit code 1")
    assert "No such file" in line          # the command's own stderr is passed on


def test_any_sample_rate_is_resampled_to_16k(tmp_path):
    """Policy: every rate is resampled to 16 kHz (never rejected), so 1 s of audio is 100 frames
    whatever the file's rate, and the features match those of a native 16-kHz recording."""
    rates = (8000, 16000, 22050, 44100, 48000)
    root = tmp_path / "sr"
    (root / "wav").mkdir(parents=True)
    wav, utts = [], []
    for sr in rates:
        t = np.arange(sr) / sr
        x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)).astype(np.float32)
        utt = f"en-{sr:05d}"
        sf.write(root / "wav" / f"{utt}.wav", x, sr, subtype="FLOAT")
        wav.append(f"{utt} {root / 'wav' / f'{utt}.wav'}")
        utts.append(utt)
    (root / "wav.scp").write_text("\n".join(wav) + "\n")
    (root / "utt2spk").write_text("".join(f"{u} en\n" for u in utts))
    code, err = run_cli(dump_main, ["--data", root, "--out", tmp_path / "dump"])
    assert code == 0, err
    feats = {u: m for u, m in kaldiio.load_scp(str(tmp_path / "dump" / "feats.scp")).items()}
    ref = feats["en-16000"]
    assert ref.shape == (100, 80)
    for utt, mat in feats.items():
        assert mat.shape == ref.shape, utt
        # 8 kHz holds nothing above 4 kHz, so compare the mel bins below ~3.5 kHz (the tones' band)
        diff = np.abs(mat[5:-5, :56] - ref[5:-5, :56]).mean()
        assert diff < 0.02, (utt, diff)


def test_long_utterances_are_skipped_in_training_and_counted_in_the_log(tmp_path, corpus, trained, monkeypatch):
    """data.max_duration (default 30 s) skips and counts; with no max_duration the full-context
    encoder's own limit (Whisper: 3000 frames = 30 s) still skips instead of crashing mid-run."""
    from zlora.train.trained import load_model_for_inference

    data, feats = long_corpus(tmp_path, n_frames=3002)
    model, _ = load_model_for_inference(trained[0])
    got = load_utterances(data, feats, model, ["en", "fr"], 128, 30.0, 100.0)
    assert got.skipped == {"longer than data.max_duration=30 s": 1} and len(got.utterances) == 15
    exp = tmp_path / "exp"
    cfg = train_config(exp, data, feats, corpus[2], **{"optim.max_steps": 1, "data.max_duration": None})
    single_process_env(monkeypatch)
    code, err = run_cli(train_main, ["--config", write_config(tmp_path / "c.yaml", cfg)])
    assert code == 0, err
    log = (exp / "train.log").read_text()
    assert ("15 utterances used; 1 skipped: longer than the encoder accepts (3000 frames = 30 s; use "
            "chunked encoding) (e.g. enspk0-000)") in log


def long_corpus(tmp_path, n_frames):
    """The session corpus layout, with enspk0-000's features replaced by ``n_frames`` frames."""
    data, feats = make_corpus(tmp_path / "long", langs=("en", "fr"), n_per_lang=8)
    mats = dict(kaldiio.load_scp(str(feats)))
    mats["enspk0-000"] = np.zeros((n_frames, 80), np.float32)
    rewrite_feats(feats, mats)
    return data, feats


def rewrite_feats(feats, mats):
    dump = feats.parent
    mats = {u: np.array(m) for u, m in mats.items()}
    with kaldiio.WriteHelper(f"ark,scp:{dump / 'new.ark'},{dump / 'feats.scp'}") as w:
        for utt in sorted(mats):
            w(utt, mats[utt])
    (dump / "utt2num_frames").write_text("".join(f"{u} {m.shape[0]}\n" for u, m in sorted(mats.items())))


def test_too_long_input_to_the_model_names_the_limit(trained):
    """What the model does with > 30 s (non-chunked): a one-line error naming the limit and the
    batch row, never an obscure shape error."""
    from zlora.models.encoder import InputTooLongError
    from zlora.train.trained import load_model_for_inference

    model, _ = load_model_for_inference(trained[0])
    assert model.max_input_frames() == 3000
    x = torch.zeros(2, 3002, 80)
    with pytest.raises(InputTooLongError, match=r"batch row\(s\) \[1\]: input of up to 3002 mel frames "
                       r"\(30.02 s\) exceeds the full-context encoder's limit of 3000 frames \(30 s"):
        model.generate(x, torch.tensor([100, 3002]), torch.tensor([0, 1]))
    assert isinstance(InputTooLongError("x"), UserError)      # -> CLI exit 2, one line
    # chunked encoding has no length limit, but each chunk must fit the window
    from train_testlib import TINY_WHISPER

    from zlora.config import ConfigError, from_dict
    from zlora.models.config import EncoderConfig
    from zlora.models.encoder import WhisperSpeechEncoder

    enc_cfg = {"config": TINY_WHISPER, "chunked": True}
    assert WhisperSpeechEncoder(from_dict(EncoderConfig, enc_cfg, "e")).max_input_frames() is None
    with pytest.raises(ConfigError, match="chunk duration 40.0 s exceeds the encoder's 30 s window"):
        WhisperSpeechEncoder(from_dict(EncoderConfig, {**enc_cfg, "decode_chunk_seconds": 40.0}, "e"))


def test_decoding_never_skips_a_long_utterance(tmp_path, trained, corpus):
    data, feats = long_corpus(tmp_path, n_frames=3002)
    out = tmp_path / "dec"
    code, err = run_cli(decode_main, ["--exp", trained[0], "--data", data, "--feats", feats, "--out", out,
                                      "--decoding.max_new_tokens", 2])
    if code == 0:
        hyp = dict((line.split(maxsplit=1) + [""])[:2] for line in (out / "text").read_text().splitlines())
        assert "enspk0-000" in hyp and len(hyp) == 16
    else:
        assert code == 2 and "enspk0-000" in error_line(err), err


def test_nan_or_inf_stops_feature_dumping_and_training(audio_dir, tmp_path, corpus, monkeypatch):
    # dump: non-finite samples (float WAV) never reach a feature file
    sf.write(audio_dir / "wav" / f"{BAD_UTT}.wav", np.array([0.1, np.inf] * 2400, np.float32), 16000,
             subtype="FLOAT")
    dump_fails(audio_dir, tmp_path / "dump", 1, f"utterance '{BAD_UTT}'", "NaN or Inf")
    # training: a feature matrix with Inf (e.g. a hand-made dump) stops the run naming it
    data, feats = make_corpus(tmp_path / "nan", n_per_lang=2)
    mats = {u: np.array(m) for u, m in kaldiio.load_scp(str(feats)).items()}
    for m in mats.values():
        m[3, 7] = np.inf
    rewrite_feats(feats, mats)
    cfg = train_config(tmp_path / "exp", data, feats, corpus[2], **{"optim.max_steps": 1})
    single_process_env(monkeypatch)
    code, err = run_cli(train_main, ["--config", write_config(tmp_path / "c.yaml", cfg)])
    assert code == 2
    line = error_line(err)
    assert str(feats) in line and "features contain NaN or Inf" in line
    assert "utterance '" in line and not (tmp_path / "exp" / "checkpoints").exists()


def test_nan_features_stop_decoding_naming_the_utterance(tmp_path, trained):
    data, feats = make_corpus(tmp_path / "nan", n_per_lang=2)
    mats = {u: np.array(m) for u, m in kaldiio.load_scp(str(feats)).items()}
    mats["frspk1-001"][3, 7] = np.nan
    rewrite_feats(feats, mats)
    code, err = run_cli(decode_main, ["--exp", trained[0], "--data", data, "--feats", feats,
                                      "--out", tmp_path / "dec", "--decoding.max_new_tokens", 2])
    assert code == 2 and "frspk1-001" in error_line(err) and "NaN" in error_line(err)


def test_punctuation_only_transcript_is_skipped_in_training_and_excluded_from_scoring(tmp_path, trained, audio_dir):
    from zlora.data.kaldi import validate_data_dir
    from zlora.train.trained import load_model_for_inference

    # data prep: not an empty transcript, so the validator lets it through
    lines = (audio_dir / "text").read_text().splitlines()
    (audio_dir / "text").write_text("\n".join([lines[0].split()[0] + " ?! --", *lines[1:]]) + "\n")
    assert validate_data_dir(audio_dir, check_audio=False).n_utts == 3

    data, feats = make_corpus(tmp_path / "p", n_per_lang=3)
    text = (data / "text").read_text().splitlines()
    text[1] = text[1].split()[0] + " ?! -- ¿ ,"
    (data / "text").write_text("\n".join(text) + "\n")
    punct_utt = text[1].split()[0]
    model, _ = load_model_for_inference(trained[0])
    corpus = load_utterances(data, feats, model, ["en", "fr"], 512, None, 100.0)
    assert corpus.skipped == {"transcript has no letter or digit (punctuation only)": 1}
    assert corpus.skipped_examples[next(iter(corpus.skipped))] == punct_utt
    # scoring: the utterance has no reference words, so it is left out (and listed), not a crash
    hyp = tmp_path / "hyp"
    hyp.write_text("".join(f"{line.split()[0]} hello\n" for line in text))
    out = tmp_path / "score"
    code, err = run_cli(score_main, ["--ref", data / "text", "--hyp", hyp, "--utt2lang", data / "utt2lang",
                                     "--out", out])
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["en"]["utts"] == 2 and result["fr"]["utts"] == 3
    assert punct_utt in (out / "summary.md").read_text()


def test_non_utf8_text_stops_training_and_scoring_naming_file_and_line(tmp_path, corpus, monkeypatch):
    data, feats = make_corpus(tmp_path / "u", n_per_lang=2)
    raw = (data / "text").read_bytes().splitlines(keepends=True)
    raw[2] = raw[2].split(b" ")[0] + b" caf\xe9\n"
    (data / "text").write_bytes(b"".join(raw))
    cfg = train_config(tmp_path / "exp", data, feats, corpus[2], **{"optim.max_steps": 1})
    single_process_env(monkeypatch)
    code, err = run_cli(train_main, ["--config", write_config(tmp_path / "c.yaml", cfg)])
    assert code == 2 and f"{data / 'text'}:3: not valid UTF-8" in error_line(err)
    code, err = run_cli(score_main, ["--ref", data / "text", "--hyp", data / "text", "--utt2lang",
                                     data / "utt2lang", "--out", tmp_path / "s"])
    assert code == 2 and f"{data / 'text'}:3: not valid UTF-8" in error_line(err)
    assert not (tmp_path / "s" / "result.json").exists()


def test_language_the_model_lacks_stops_training_and_decoding(tmp_path, corpus, trained, monkeypatch):
    data, feats = make_corpus(tmp_path / "de", langs=("de", "en"), n_per_lang=2)
    cfg = train_config(tmp_path / "exp", data, feats, corpus[2], **{"optim.max_steps": 1})
    single_process_env(monkeypatch)
    code, err = run_cli(train_main, ["--config", write_config(tmp_path / "c.yaml", cfg)])
    assert code == 2
    assert f"{data / 'utt2lang'}: utterance 'despk0-000' has language 'de'" in error_line(err)
    out = tmp_path / "dec"          # the trained model knows en, fr
    code, err = run_cli(decode_main, ["--exp", trained[0], "--data", data, "--feats", feats, "--out", out,
                                      "--decoding.max_new_tokens", 2])
    assert code == 2
    line = error_line(err)
    assert "utt2lang" in line and "utterance despk" in line and "'de'" in line and "en, fr" in line
    assert not (out / "text").exists()


def test_mismatched_ids_fail_naming_the_files_and_ids(tmp_path, trained):
    """Policy: text and utt2lang must hold the same ids and every utterance needs features; a
    mismatch is an error naming the file and the ids (never a silent drop). Extra feature entries
    are allowed (a dump may serve subsets) and counted in the log. wav.scp is read by dump_feats."""
    from zlora.train.trained import load_model_for_inference

    model, _ = load_model_for_inference(trained[0])
    data, feats = make_corpus(tmp_path / "m", n_per_lang=3)

    def load():
        return load_utterances(data, feats, model, ["en", "fr"], 512, None, 100.0)

    def drop_line(path, utt):
        path.write_text("".join(l + "\n" for l in path.read_text().splitlines() if l.split()[0] != utt))

    saved = {n: (data / n).read_text() for n in ("text", "utt2lang")}
    drop_line(data / "utt2lang", "enspk1-001")
    with pytest.raises(UserError, match=r"utt2lang: no entry for utterance 'enspk1-001' \(1 of 6 in .*text\)"):
        load()
    (data / "utt2lang").write_text(saved["utt2lang"])
    drop_line(data / "text", "frspk0-000")
    with pytest.raises(UserError, match=r"text: no transcript for utterance 'frspk0-000' \(1 of 6 in .*utt2lang\)"):
        load()
    (data / "text").write_text(saved["text"])
    scp = feats.read_text()
    drop_line(feats, "enspk0-000"), drop_line(feats, "frspk1-001")
    with pytest.raises(UserError, match=r"feats.scp: no features for utterance 'enspk0-000', 'frspk1-001' "
                                        r"\(2 of 6 in"):
        load()
    feats.write_text(scp)
    drop_line(data / "text", "enspk0-000"), drop_line(data / "utt2lang", "enspk0-000")
    assert len(load().utterances) == 5          # an extra feature entry is fine
    # decoding: an utterance without features
    drop_line(feats, "frspk0-002")
    code, err = run_cli(decode_main, ["--exp", trained[0], "--data", data, "--feats", feats, "--out", tmp_path / "d"])
    assert code == 2 and str(feats) in error_line(err) and "frspk0-002" in error_line(err)
    # dump_feats: an utterance without a wav.scp entry
    audio = make_datadir(tmp_path / "a", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.3)
    drop_line(audio / "wav.scp", BAD_UTT)
    dump_fails(audio, tmp_path / "dump", 1, str(audio / "wav.scp"), f"utterance '{BAD_UTT}'")
