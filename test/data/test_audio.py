"""Audio loading: formats, resampling policy, pipes, segments and every failure naming the utterance."""
import numpy as np
import pytest
import soundfile as sf
from tiny_datadir import make_datadir, tone

from zlora.data.audio import AudioError, audio_duration, load_audio, load_utterance, utterance_durations
from zlora.data.kaldi import DataDir


@pytest.mark.parametrize("ext,kw,sr,tol", [
    ("wav", {}, 16000, 1e-4),
    ("flac", {}, 16000, 1e-4),
    ("ogg", {"subtype": "VORBIS"}, 16000, None),
    ("opus", {"format": "OGG", "subtype": "OPUS"}, 48000, None),
    ("mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}, 16000, None),
])
def test_formats_decode_at_16k(tmp_path, ext, kw, sr, tol):
    x = tone(0.5, sr)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, sr, **kw)
    y = load_audio(str(path))
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 8000  # 0.5 s at 16 kHz (libsndfile trims mp3/opus encoder padding)
    if tol is not None:  # lossless: samples survive (16-bit quantisation)
        np.testing.assert_allclose(y, x, atol=tol)
    else:  # lossy: same energy (measured within 0.5 %)
        assert np.std(y) == pytest.approx(np.std(x), rel=0.03)


def test_resampling_keeps_the_tone(tmp_path):
    sr = 22050
    t = np.arange(sr) / sr
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), sr,
             subtype="FLOAT")
    y = load_audio(str(tmp_path / "a.wav"))
    assert len(y) == 16000  # ceil(22050 * 160 / 441)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins over 1 s
    assert np.max(np.abs(y[1000:-1000])) == pytest.approx(0.5, abs=0.01)


def test_stereo_is_averaged_to_mono(tmp_path):
    a, b = tone(0.2, seed=1), tone(0.2, freq=330, seed=2)
    sf.write(tmp_path / "s.wav", np.stack([a, b], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(str(tmp_path / "s.wav")), (a + b) / 2, atol=1e-6)


def test_pipe_and_segment(tmp_path):
    x = tone(1.0)
    sf.write(tmp_path / "r r.wav", x, 16000, subtype="FLOAT")
    spec = f"cat '{tmp_path / 'r r.wav'}' |"
    np.testing.assert_array_equal(load_audio(spec), x)
    np.testing.assert_array_equal(load_audio(spec, 0.25, 0.5), x[4000:8000])
    np.testing.assert_array_equal(load_audio(str(tmp_path / "r r.wav"), 0.25, -1), x[4000:])
    assert audio_duration(spec) == audio_duration(str(tmp_path / "r r.wav")) == 1.0


def test_load_utterance_with_segments(tmp_path):
    d = make_datadir(tmp_path / "d", langs=("en",), segments=True, sr=8000)
    dd = DataDir(d)
    rec = sf.read(d / "wav" / "enspk1-rec.wav", dtype="float32")[0]
    y = load_utterance(dd, "enspk1-001")
    assert len(y) == 8000  # 0.5 s at 16 kHz after resampling from 8 kHz
    np.testing.assert_allclose(y, load_audio(str(d / "wav" / "enspk1-rec.wav"), 0.5, 1.0), atol=0)
    assert abs(np.std(y) - np.std(rec[4000:])) < 0.01
    assert utterance_durations(dd) == {u: 0.5 for u in dd.utts}


@pytest.mark.parametrize("make,spec_name,needle", [
    (None, "missing.wav", "file does not exist"),
    (lambda p: p.write_bytes(b""), "z.wav", "zero-length file"),
    (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "h.wav", "zero-length audio"),
    (lambda p: p.write_bytes(b"RIFF" + bytes(range(256)) * 8), "c.wav", "unreadable or corrupt"),
    (lambda p: (sf.write(p, tone(1.0), 16000), p.write_bytes(p.read_bytes()[:9000])), "t.wav", "truncated"),
    (lambda p: (sf.write(p, tone(1.0), 16000), p.write_bytes(p.read_bytes()[:5000])), "t.flac", "corrupt"),
    (lambda p: sf.write(p, np.array([0.1, np.nan] * 400, np.float32), 16000, subtype="FLOAT"), "n.wav",
     "NaN or Inf"),
])
def test_bad_files_name_utterance_and_path(tmp_path, make, spec_name, needle):
    path = tmp_path / spec_name
    if make:
        make(path)
    with pytest.raises(AudioError) as e:
        load_audio(str(path), utt="utt-7")
    assert "utterance 'utt-7'" in str(e.value) and str(path) in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("spec,needle", [
    ("false |", "failed with exit code 1"),
    ("true |", "produced no output"),
    ("cat /nonexistent/x.wav | cat |", "No such file"),  # pipefail: a failure mid-pipeline counts
    ("echo notaudio |", "unreadable or corrupt"),
])
def test_failing_pipes_name_utterance_and_command(spec, needle):
    with pytest.raises(AudioError) as e:
        load_audio(spec, utt="utt-9")
    msg = str(e.value)
    assert "utterance 'utt-9'" in msg and spec.rstrip(" |") in msg and needle in msg


def test_pipe_is_not_reinterpreted_by_python(tmp_path):
    """The pipe runs once under bash; its text is not eval'ed again or split by Python."""
    marker = tmp_path / "ran"
    x = tone(0.1)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    spec = f"touch '{marker}' && cat '{tmp_path / 'a.wav'}' |"
    np.testing.assert_array_equal(load_audio(spec), x)
    assert marker.exists()


def test_segment_outside_recording_names_utterance(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    with pytest.raises(AudioError, match=r"utterance 'u1'.*segment \[0.5, 1.5\] lies outside"):
        load_audio(str(tmp_path / "a.wav"), 0.5, 1.5, utt="u1")
