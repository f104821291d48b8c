"""Real espeak-ng synthesis of a tiny corpus (3 languages, 1-3 utterances per split): Kaldi files
sorted and consistent, audio plausible, espeak-ng reads the transcripts in the right language,
byte-identical reruns, no-op reruns, refusal of a changed config."""
import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from zlora.data.kaldi import validate_data_dir
from zlora.config import from_dict
from zlora.data.synth.config import SynthConfig
from zlora.data.synth.corpus import KALDI_FILES, espeak_text_filter
from zlora.data.synth.espeak import language_switches
from zlora.data.synth.plan import SPLIT_NAMES
from zlora.data.synth.text import script_ok
from zlora.utils.cli import UserError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (tools/install.sh apt-installs it)")

ARGS = ["--high", "[en, zh]", "--low", "[ja]", "--n_test_variants", "4",
        "--counts", "{train_high: 3, train_low: 2, dev: 2, test: 2, foundation: 2, foundation_dev: 1}"]


def _run(out, extra=()):
    from zlora.bin.synth_mini12 import main
    assert main(["--out", str(out), *ARGS, *extra]) == 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini12") / "data"
    _run(out)
    return out


def _table(path):
    rows = [ln.split(" ", 1) for ln in Path(path).read_text("utf-8").splitlines()]
    keys = [r[0] for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), f"{path}: unsorted or duplicate keys"
    return dict(rows)


def test_kaldi_dirs_sorted_and_consistent(corpus):
    for split in SPLIT_NAMES:
        d = corpus / split
        assert not (corpus / f"{split}.tmp").exists()
        t = {f: _table(d / f) for f in KALDI_FILES}
        utts = list(t["text"])
        for f in ("wav.scp", "utt2spk", "utt2lang", "utt2dur"):
            assert list(t[f]) == utts, f"{d}/{f}: utterance list differs from text"
        inverse = {u: spk for spk, us in t["spk2utt"].items() for u in us.split()}
        assert inverse == t["utt2spk"]
        for utt, spk in t["utt2spk"].items():
            assert utt.startswith(spk + "-") and spk.startswith(t["utt2lang"][utt] + "-")
        assert set(t["utt2lang"].values()) == ({"en", "zh"} if split == "train_high" else
                                               {"ja"} if split == "train_low_full" else {"en", "zh", "ja"})
        # and the repo's own validator (utils/validate_data_dir.sh) accepts it, audio included
        summary = validate_data_dir(d, known_langs=["en", "zh", "ja"])
        assert summary.n_utts == len(utts) and not summary.warnings


def test_audio_is_16k_mono_and_plausible(corpus):
    for split in SPLIT_NAMES:
        text = _table(corpus / split / "text")
        dur = _table(corpus / split / "utt2dur")
        for utt, path in _table(corpus / split / "wav.scp").items():
            assert Path(path).is_absolute() and Path(path).parent == (corpus / split / "wav").resolve()
            with wave.open(path) as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
                seconds = w.getnframes() / 16000
            assert abs(seconds - float(dur[utt])) < 1e-3
            # Speech, not silence or a spelled-out error: ~0.05-0.4 s per written character.
            n_chars = len(text[utt].replace(" ", ""))
            assert 0.3 < seconds < 1.5 + 0.4 * n_chars, (utt, text[utt], seconds)


def _phonemes(text, voice):
    return subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, text],
                          capture_output=True, text=True, check=True).stdout


def test_espeak_reads_the_transcripts_natively(corpus):
    """espeak-ng marks a switch to another language's rules with "(en)" etc. in its phoneme output:
    kanji, unreadable kana or a wrong Mandarin voice would show up here. (vi and fr do switch to
    English rules for some country names, a reading of what is written; not these three.)"""
    voice = {"en": "en-us", "zh": "cmn-latn-pinyin", "ja": "ja"}
    for split in ("dev", "test", "foundation"):
        lang_of = _table(corpus / split / "utt2lang")
        for utt, text in _table(corpus / split / "text").items():
            ph = _phonemes(text, voice[lang_of[utt]])
            assert ph.strip() and "(" not in ph, (utt, text, ph)
    assert "(en)" in _phonemes("日本", "ja")          # the check above can fail
    assert "(en)" in _phonemes("スウェーデン", "ja")


def test_language_switch_detection_finds_the_bad_text():
    texts = ["いちがつ", "ドイツからフランスまで", "くがつモロッコオーストリア", "さんがつ"]  # コオー: spelled
    assert language_switches(texts, "ja") == [False, False, True, False]
    assert language_switches(["三月二十一日星期一"], "cmn-latn-pinyin") == [False]
    assert language_switches([], "ja") == []


def test_build_corpus_filters_strict_languages_only():
    accept = espeak_text_filter(from_dict(SynthConfig, {}))
    assert accept("ja", ["いちがつ", "くがつモロッコオーストリア"]) == [True, False]
    assert accept("vi", ["từ canada đến nga"]) == [True]   # English-rule name reading: kept


def test_every_kana_the_script_check_accepts_is_readable():
    kana = [chr(c) for c in list(range(0x3041, 0x3097)) + list(range(0x30A1, 0x30FB)) + [0x30FC]]
    ok = [ch for ch in kana if script_ok(ch, "ja")]
    assert len(ok) > 150
    for before in "あき":
        flagged = language_switches([before + ch + "か" for ch in ok], "ja")
        assert not any(flagged), [ch for ch, f in zip(ok, flagged) if f]
    # ... and every kana it rejects is spelled out in at least one of two contexts
    rejected = [ch for ch in kana if not script_ok(ch, "ja")]
    assert rejected
    for ch in rejected:
        assert any("(" in _phonemes(f"{a}{ch}{b}", "ja") for a, b in ("ああ", "きか")), ch


def test_same_seed_same_bytes_and_rerun_is_noop(corpus, tmp_path):
    again = tmp_path / "again"
    _run(again, ["--nj", "1"])                      # nj does not change the output
    for split in SPLIT_NAMES:
        assert (again / split / "text").read_text() == (corpus / split / "text").read_text()
        for wav in sorted((corpus / split / "wav").iterdir()):
            assert (again / split / "wav" / wav.name).read_bytes() == wav.read_bytes(), wav.name
    stamp = {p: p.stat().st_mtime_ns for p in again.rglob("*")}
    _run(again)
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*")} == stamp


def test_missing_split_is_rebuilt_and_stale_tmp_discarded(corpus, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(corpus, out)
    shutil.rmtree(out / "dev")
    (out / "dev.tmp" / "wav").mkdir(parents=True)
    (out / "dev.tmp" / "text").write_text("junk\n")
    _run(out)
    assert not (out / "dev.tmp").exists()
    assert (out / "dev" / "text").read_text() == (corpus / "dev" / "text").read_text()


def test_changed_config_is_refused(corpus):
    with pytest.raises(UserError, match="different config.*seed"):
        _run(corpus, ["--seed", "99"])


def test_missing_out_is_an_error():
    from zlora.bin.synth_mini12 import main
    with pytest.raises(UserError, match="--out DIR is required"):
        main(ARGS)


def test_bad_voice_fails_naming_the_utterance(tmp_path):
    with pytest.raises(UserError, match=r"utterance en-\w+-ts\d+ \(nosuchvoice\+\w+: '.+'\): espeak-ng exited"):
        _run(tmp_path / "bad", ["--voices", "{en: nosuchvoice, zh: cmn-latn-pinyin, ja: ja}", "--nj", "1"])
    assert not (tmp_path / "bad" / "test").exists()          # nothing that looks complete
    with pytest.raises(UserError, match=r"espeak-ng -v nosuchvoice \(phoneme check of"):
        _run(tmp_path / "bad2", ["--voices", "{en: en-us, zh: cmn-latn-pinyin, ja: nosuchvoice}"])


def test_trailing_silence_is_cut_to_the_configured_length():
    import numpy as np

    from zlora.data.synth.espeak import UttSpec, synthesize, trim_trailing_silence

    x = np.zeros(100, dtype=np.int16)
    x[10], x[40], x[60] = 1000, -20000, 150           # 150 < 1 % of the 20000 peak: silence
    assert len(trim_trailing_silence(x, keep=5)) == 46 and len(trim_trailing_silence(x, 0)) == 41
    assert len(trim_trailing_silence(x, keep=500)) == 100 and len(trim_trailing_silence(x[:5], 3)) == 5
    spec = UttSpec("u", "s", "en", "twenty three apples", "en", 170, 50, 0)
    full, cut = synthesize(spec), synthesize(spec, max_trailing_silence=0.1)
    assert len(full) - len(cut) > 0.2 * 16000                 # espeak-ng's tail is ~0.4 s
    np.testing.assert_array_equal(cut, full[:len(cut)])       # only the end is cut
    assert len(cut) - len(trim_trailing_silence(cut, 0)) == 1600


def test_negative_trailing_silence_is_a_config_error():
    from zlora.config import ConfigError

    with pytest.raises(ConfigError, match="max_trailing_silence"):
        SynthConfig(max_trailing_silence=-0.1)
