"""Fake corpora in their official on-disk layouts, with speech from espeak-ng, for the prep tests;
and tiny stand-ins of the zipper12 recipe's pretrained model dirs (``make_standins``).

Each builder writes the corpus's real file layout and audio format (FLAC, OGG/Opus, MP3, WAV) and
returns what a correct converter must produce, so tests compare against independent expectations.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

ESPEAK_VOICE = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it", "pt": "pt",
                "ar": "ar", "ja": "ja", "ko": "ko", "th": "th", "ru": "ru", "vi": "vi", "zh": "cmn"}
_CACHE: dict[tuple[str, str], tuple[np.ndarray, int]] = {}


def speak(text: str, lang: str, tmp: Path) -> tuple[np.ndarray, int]:
    """(float32 samples, rate) of espeak-ng saying ``text`` in ``lang`` (cached per process)."""
    key = (lang, text)
    if key not in _CACHE:
        tmp.mkdir(parents=True, exist_ok=True)
        wav = tmp / "_espeak.wav"
        subprocess.run(["espeak-ng", "-v", ESPEAK_VOICE[lang], "-w", str(wav), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, sr = sf.read(str(wav), dtype="float32")
        wav.unlink()
        _CACHE[key] = (x, sr)
    return _CACHE[key]


def write_audio(path: Path, x: np.ndarray, sr: int, fmt: str) -> None:
    """Write in the corpus's format: flac, wav, mp3 (libsndfile MPEG layer III) or opus (OGG/Opus,
    which only takes 8/12/16/24/48 kHz, so espeak's 22.05 kHz is resampled to 16 kHz first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "opus":
        from scipy.signal import resample_poly

        x, sr = resample_poly(x, 320, 441).astype(np.float32), 16000
        sf.write(str(path), x, sr, format="OGG", subtype="OPUS")
    elif fmt == "mp3":
        sf.write(str(path), x, sr, format="MP3", subtype="MPEG_LAYER_III")
    else:
        sf.write(str(path), x, sr)


def make_librispeech(root: Path, split: str, chapters: dict[tuple[str, str], list[str]]) -> dict[str, str]:
    """LibriSpeech/<split>/<reader>/<chapter>/ with .flac + .trans.txt; returns {utt: text}."""
    want = {}
    for (reader, chapter), texts in chapters.items():
        d = root / "LibriSpeech" / split / reader / chapter
        lines = []
        for i, text in enumerate(texts):
            utt = f"{reader}-{chapter}-{i:04d}"
            write_audio(d / f"{utt}.flac", *speak(text.lower(), "en", root), "flac")
            lines.append(f"{utt} {text}\n")
            want[utt] = text
        (d / f"{reader}-{chapter}.trans.txt").write_text("".join(lines), encoding="utf-8")
    return want


def make_mls(root: Path, name: str, lang: str, split: str, rows: list[tuple[str, str]], fmt: str
             ) -> dict[str, str]:
    """mls_<name>[_opus]/<split>/transcripts.txt + audio/<spk>/<book>/<id>.<fmt>; rows: (id, text)."""
    d = root / (f"mls_{name}" + ("_opus" if fmt == "opus" else "")) / split
    for uid, text in rows:
        spk, book, _ = uid.split("_")
        write_audio(d / "audio" / spk / book / f"{uid}.{fmt}", *speak(text, lang, root), fmt)
    d.mkdir(parents=True, exist_ok=True)
    (d / "transcripts.txt").write_text("".join(f"{u}\t{t}\n" for u, t in rows), encoding="utf-8")
    return dict(rows)


CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
             "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]


def make_commonvoice(root: Path, locale: str, lang: str, split: str, rows: list[tuple[str, str, str]],
                     header: list[str] = CV_HEADER) -> dict[str, str]:
    """<locale>/<split>.tsv (CV 17/18 header) + clips/*.mp3; rows: (client_id, clip stem, sentence).
    Returns {expected utt id: sentence}."""
    d = root / locale
    lines = ["\t".join(header)]
    for client, stem, text in rows:
        write_audio(d / "clips" / f"{stem}.mp3", *speak(text, lang, root), "mp3")
        vals = {"client_id": client, "path": f"{stem}.mp3", "sentence": text, "text": text,
                "locale": locale, "up_votes": "2", "down_votes": "0"}
        lines.append("\t".join(vals.get(c, "") for c in header))
    (d / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {f"{client}-{stem}": text for client, stem, text in rows}


def make_wenetspeech(root: Path, audios: list[tuple[str, list[tuple[str, list[str]]]]]) -> dict[str, tuple]:
    """WenetSpeech.json + audio/.../<aid>.opus. audios: (aid, [(text, subsets)]); each recording is
    its phrases separated by 0.5 s of silence. Returns {sid: (aid, begin, end, text, subsets)}."""
    items, want = [], {}
    for aid, segs in audios:
        pieces, t, seg_items = [], 0.25, []
        gap = np.zeros(int(0.5 * 16000), dtype=np.float32)
        pieces.append(gap[: 4000])
        for k, (text, subsets) in enumerate(segs):
            x, sr = speak(text, "zh", root)
            from scipy.signal import resample_poly

            x = resample_poly(x, 320, 441).astype(np.float32)
            sid = f"{aid}_S{k:05d}"
            seg_items.append({"sid": sid, "confidence": 1.0, "begin_time": round(t, 3),
                              "end_time": round(t + len(x) / 16000, 3), "subsets": subsets, "text": text})
            want[sid] = (aid, seg_items[-1]["begin_time"], seg_items[-1]["end_time"], text, subsets)
            pieces += [x, gap]
            t += len(x) / 16000 + 0.5
        rel = f"audio/train/youtube/B00000/{aid}.opus"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), np.concatenate(pieces), 16000, format="OGG", subtype="OPUS")
        items.append({"aid": aid, "duration": round(t, 3), "format": "opus", "path": rel,
                      "sample_rate": 16000, "source": "youtube", "segments": seg_items})
    meta = {"dataset": "WenetSpeech", "description": "fake: \"audios\" appears in this string",
            "version": "v1.0", "audios": items}
    (root / "WenetSpeech.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    return want


ZIPPER12_LANGS = ["de", "es", "fr", "ru", "vi", "it", "en", "th", "ar", "ja", "ko", "pt", "zh"]


def make_standins(root: Path) -> Path:
    """Tiny Whisper (128 mels; a generation config whose lang_to_id covers the zipper12 languages,
    for LID extraction) and Qwen3 + byte-level BPE tokenizer, saved like the real dirs:
    root/whisper and root/qwen3."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM,
                              WhisperConfig, WhisperForConditionalGeneration)

    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(
        num_mel_bins=128, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=64, vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3)).save_pretrained(root / "whisper")
    GenerationConfig(decoder_start_token_id=3, lang_to_id={f"<|{lang}|>": 10 + i for i, lang in enumerate(ZIPPER12_LANGS)}
                     ).save_pretrained(root / "whisper")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["hello world", "guten tag", "привет", "สวัสดี", "你好", "مرحبا", "こんにちは"],
                            trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(root / "qwen3")
    Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        # two KV heads: k/v_proj are 32 wide, as wide as the recipes' LLM-LoRA rank (rank <= width)
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    ).save_pretrained(root / "qwen3")
    return root
