"""Tiny corpora, tokenizers and configs for the training tests (CPU, offline).

A corpus is a Kaldi data dir (text, utt2spk, spk2utt, utt2lang) plus a kaldiio feature dump
(feats.ark/feats.scp/utt2num_frames) of random "log-mel" matrices, so training runs without audio.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable

WORDS = {"en": "one two three four five six seven eight nine ten cat dog sun".split(),
         "fr": "un deux trois quatre cinq six sept huit neuf dix chat chien".split(),
         "de": "eins zwei drei vier funf sechs sieben acht neun zehn katze hund".split()}

TINY_WHISPER = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                    num_mel_bins=80, max_source_positions=1500, decoder_layers=1,
                    decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=60,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
TINY_QWEN3 = dict(model_type="qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096)


def make_corpus(root: Path, langs=("en", "fr"), n_per_lang: int = 8, frames=(40, 120), seed: int = 0,
                n_mels: int = 80) -> tuple[Path, Path]:
    """Write ``root/data`` (Kaldi dir) and ``root/dump`` (features); return (data dir, feats.scp)."""
    import kaldiio

    from zlora.data.kaldi import DataDir

    rng = np.random.default_rng(seed)
    text, utt2spk, utt2lang, mats = {}, {}, {}, {}
    for lang in langs:
        for i in range(n_per_lang):
            utt = f"{lang}spk{i % 2}-{i:03d}"
            words = rng.choice(WORDS[lang], size=int(rng.integers(2, 5)))
            text[utt] = " ".join(words)
            utt2spk[utt] = f"{lang}spk{i % 2}"
            utt2lang[utt] = lang
            t = int(rng.integers(frames[0], frames[1] + 1))
            # A language-dependent offset so the model has something learnable.
            mats[utt] = (rng.standard_normal((t, n_mels)) * 0.5 + (0.5 if lang == "fr" else -0.5)).astype(np.float32)
    data = root / "data"
    DataDir.write(data, text=dict(sorted(text.items())), utt2spk=dict(sorted(utt2spk.items())),
                  utt2lang=dict(sorted(utt2lang.items())))
    dump = root / "dump"
    dump.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{dump / 'feats.ark'},{dump / 'feats.scp'}") as w:
        for utt in sorted(mats):
            w(utt, mats[utt])
    (dump / "utt2num_frames").write_text("".join(f"{u} {m.shape[0]}\n" for u, m in sorted(mats.items())))
    return data, dump / "feats.scp"


def make_tokenizer(root: Path, data: Path, langs=("en", "fr")) -> str:
    from zlora.models.tokenizer import train_sentencepiece

    train_sentencepiece([data / "text"], root / "bpe", 80, languages=list(langs))
    return str(root / "bpe.model")


def model_section(sp_model: str, **over) -> dict:
    m = {"encoder": {"config": dict(TINY_WHISPER)},
         "llm": {"config": dict(TINY_QWEN3), "tokenizer": sp_model},
         "llm_lora": {"rank": 4, "alpha": 8.0}}
    for k, v in over.items():
        m.setdefault(k, {}).update(v)
    return m


def train_config(exp: Path, data: Path, feats: Path, sp_model: str, langs=("en", "fr"), **over) -> dict:
    """A stage-1 config dict; ``over`` maps dotted keys to values (``optim.max_steps=4``)."""
    cfg = {
        "exp_dir": str(exp), "languages": list(langs), "stage": 1, "seed": 3,
        "model": model_section(sp_model),
        "data": {"train": str(data), "train_feats": str(feats), "max_tokens": 128, "batch_size": 2},
        "optim": {"lr": 3e-3, "max_steps": 4, "warmup_ratio": 0.25},
        "engine": {"engine": "ddp", "timeout_s": 60},
        "checkpoint": {"every_n_steps": 2, "keep_last": 0},
        "log_every": 1, "progress_bar": False, "tensorboard": False,
    }
    for key, value in over.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def env(**extra) -> dict:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)})
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ZLORA_DEBUG_KILL"):
        e.pop(k, None)
    e.update(extra)
    return e


def run_train(config: Path, nproc: int = 1, args=(), timeout: float = 240, **env_extra) -> subprocess.CompletedProcess:
    """``python -m zlora.bin.train`` (nproc 1) or ``torchrun --nproc_per_node N``; never raises."""
    if nproc == 1:
        cmd = [PY, "-m", "zlora.bin.train"]
    else:
        cmd = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "zlora.bin.train"]
    cmd += ["--config", str(config), *args]
    return subprocess.run(cmd, cwd=REPO, env=env(**env_extra), capture_output=True, text=True, timeout=timeout)


def read_metrics(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]


def final_weights(exp: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(exp / "final" / "model.safetensors"))


def single_process_env(monkeypatch) -> None:
    """The variables init_distributed would set, via monkeypatch so they vanish after the test."""
    from zlora.train.distributed import free_port

    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ZLORA_DEBUG_KILL", raising=False)


def train_inprocess(monkeypatch, cfg: dict, path: Path, *args: str) -> int:
    """``zlora.bin.train.main`` in this process (one rank, gloo): fast, and monkeypatchable."""
    from zlora.bin.train import main

    single_process_env(monkeypatch)
    write_config(path, cfg)
    return main(["--config", str(path), *args])
