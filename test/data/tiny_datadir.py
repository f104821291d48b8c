"""Tiny Kaldi data dirs with real (synthetic) audio for tests: numpy tones + noise via soundfile."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int = 16000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """(N,) float32: a tone with two harmonics plus a little noise (non-silent, finite)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 3 * freq * t)
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def make_datadir(root: Path, langs=("en", "fr"), spks_per_lang: int = 2, utts_per_spk: int = 2,
                 seconds: float = 0.5, sr: int = 16000, fmt: str = "wav",
                 segments: bool = False, utt2dur: bool = False) -> Path:
    """Write a valid data dir under ``root`` (audio in ``root/wav``) and return it.

    Utterance ids are ``<spk>-<n>`` with speaker ``<lang>spk<j>``, so sorting is Kaldi-consistent.
    With ``segments``, each speaker's utterances are cut from one recording ``<spk>-rec``.
    """
    root = Path(root).resolve()
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    text, utt2spk, utt2lang, wav, segs, durs, spk2utt = [], [], [], [], [], [], []
    seed = 0
    for lang in sorted(langs):
        for j in range(spks_per_lang):
            spk = f"{lang}spk{j}"
            utts = [f"{spk}-{n:03d}" for n in range(utts_per_spk)]
            spk2utt.append(f"{spk} {' '.join(utts)}")
            if segments:
                rec = f"{spk}-rec"
                path = wav_dir / f"{rec}.{fmt}"
                sf.write(path, tone(seconds * utts_per_spk, sr, 200 + 20 * seed, seed), sr)
                wav.append(f"{rec} {path}")
            for n, utt in enumerate(utts):
                seed += 1
                text.append(f"{utt} {lang} sentence number {n}")
                utt2spk.append(f"{utt} {spk}")
                utt2lang.append(f"{utt} {lang}")
                durs.append(f"{utt} {seconds}")
                if segments:
                    segs.append(f"{utt} {spk}-rec {n * seconds} {(n + 1) * seconds}")
                else:
                    path = wav_dir / f"{utt}.{fmt}"
                    sf.write(path, tone(seconds, sr, 200 + 20 * seed, seed), sr)
                    wav.append(f"{utt} {path}")
    d = root
    write_lines(d / "text", text)
    write_lines(d / "utt2spk", utt2spk)
    write_lines(d / "spk2utt", spk2utt)
    write_lines(d / "utt2lang", utt2lang)
    write_lines(d / "wav.scp", sorted(wav))
    if segments:
        write_lines(d / "segments", segs)
    if utt2dur:
        write_lines(d / "utt2dur", durs)
    return d
