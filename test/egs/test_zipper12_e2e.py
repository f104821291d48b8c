"""egs/zipper12/asr1/run.sh end to end, stages 0-8, on tiny fake corpora in the five official
layouts (test/data/prep/prep_testlib.py) and tiny stand-in Whisper / Qwen3 dirs: the real
conf/data/lite_1h.yaml plan with its hours scaled down (--hours_scale), raw-audio shards, LID,
torchrun training of stage 1 and two stage-2 methods on the CPU (DDP, 2 steps), decoding,
scoring, both RESULTS tables and the figures, all under exp/; then stages 6-7 again change nothing.

Needs espeak-ng and a libsndfile that writes MP3 (Common Voice's format), like the prep tests.
"""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs" / "zipper12" / "asr1"
sys.path.insert(0, str(REPO / "test" / "data" / "prep"))
from prep_testlib import (make_commonvoice, make_librispeech, make_mls, make_standins,  # noqa: E402
                          make_wenetspeech, speak, write_audio)

pytestmark = [pytest.mark.slow]
METHODS = ("lora", "zipper-soft")
OUTPUTS = ("data", "dump", "exp")        # all a run may write into its recipe dir
# two short phrases per language: each training split gets both, each test split the first
PHRASES = {"en": ["hello world", "good morning"], "fr": ["bonjour", "merci beaucoup"],
           "th": ["สวัสดี", "ขอบคุณ"], "ru": ["привет", "спасибо"], "vi": ["xin chào", "cảm ơn"],
           "de": ["guten tag", "danke schön"], "es": ["hola", "muchas gracias"], "it": ["ciao", "grazie mille"],
           "ar": ["مرحبا", "شكرا"], "ja": ["こんにちは", "ありがとう"], "ko": ["안녕하세요", "감사합니다"],
           "pt": ["olá", "obrigado", "bom dia"], "zh": ["你好", "谢谢"]}


def make_msr86k(root: Path, lang: str, split: str, texts: list[str]) -> None:
    """Our documented MSR-86K layout: <lang>/<split>/manifest.jsonl + WAV audio."""
    import json

    d = root / lang / split
    rows = []
    for i, text in enumerate(texts):
        write_audio(d / f"{split}{i}.wav", *speak(text, lang, root), "wav")
        rows.append({"id": f"spk{i}_{split}{i}", "audio": f"{split}{i}.wav", "text": text})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                      encoding="utf-8")


def make_corpora(root: Path) -> dict[str, Path]:
    """Every (corpus, language, split) conf/data/lite_1h.yaml reads, a phrase or two each."""
    p = PHRASES
    for lang in ("en", "fr", "th", "ru", "vi"):
        make_msr86k(root / "msr", lang, "train", p[lang])
        make_msr86k(root / "msr", lang, "dev", p[lang][:1])
    make_wenetspeech(root / "ws", [("Y0000000001", [(p["zh"][0], ["L", "M", "S"]), (p["zh"][1], ["L"])]),
                                   ("Y0000000002", [(p["zh"][0], ["TEST_MEETING"])]),
                                   ("Y0000000003", [(p["zh"][1], ["TEST_NET"])])])
    for k, (lang, name) in enumerate((("de", "german"), ("es", "spanish"), ("fr", "french"), ("it", "italian"))):
        # MLS speaker ids (the id's first field) differ between languages, as in the release
        make_mls(root / "mls", name, lang, "train", [(f"{k}1_2_00000{i}", t) for i, t in enumerate(p[lang])], "flac")
        make_mls(root / "mls", name, lang, "test", [(f"{k}3_4_000001", p[lang][0])], "flac")
    for k, split in enumerate(("train-clean-100", "train-clean-360", "train-other-500", "test-clean", "test-other")):
        make_librispeech(root / "ls", split, {(str(10 + k), "100"): [p["en"][k % 2].upper()]})
    cv = root / "cv"
    rows = {lang: [(f"client{i}", f"common_voice_{lang}_{100 + i}", t) for i, t in enumerate(p[lang])]
            for lang in ("th", "ar", "ja", "ko", "pt")}
    th_extra = ("client9", "common_voice_th_199", "ขอบคุณมาก")
    make_commonvoice(cv, "th", "th", "validated", rows["th"] + [th_extra])    # minus dev and test
    make_commonvoice(cv, "th", "th", "dev", rows["th"][:1])
    make_commonvoice(cv, "th", "th", "test", rows["th"][1:])
    for lang in ("ar", "ja", "ko"):
        make_commonvoice(cv, lang, lang, "train", rows[lang][1:])
        make_commonvoice(cv, lang, lang, "test", rows[lang][:1])
    make_commonvoice(cv, "pt", "pt", "train", rows["pt"])        # 1 held out as the test hour, 2 train
    return {"msr86k": root / "msr", "wenetspeech": root / "ws", "mls": root / "mls",
            "librispeech": root / "ls", "commonvoice": cv}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def snapshot(d: Path) -> dict[str, str]:
    """{path: sha256} of the recipe's own files (everything outside data/, dump/, exp/, utils)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file() and p.relative_to(d).parts[0] not in (*OUTPUTS, "utils")}


def run(recipe: Path, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return proc.stderr


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make install apt-gets it)")
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3 (Common Voice's format)")
    tmp = tmp_path_factory.mktemp("zipper12")
    roots = make_corpora(tmp / "corpora")
    models = make_standins(tmp / "models")
    d = tmp / "zipper 12" / "asr1"                               # a space in the path, on purpose
    shutil.copytree(RECIPE, d, ignore=lambda src, names: [n for n in names if Path(src) == RECIPE
                                                          and n in (*OUTPUTS, "utils")])
    (d / "utils").symlink_to(REPO / "utils")
    before = snapshot(d)
    args = ["--whisper_dir", str(models / "whisper"), "--llm_dir", str(models / "qwen3"),
            *(a for corpus, root in roots.items() for a in (f"--{corpus}", str(root))),
            "--hours_scale", "1e-6", "--regimes", "chunked", "--methods", " ".join(METHODS),
            "--ngpu", "1", "--nj", "1", "--decode_nj", "1", "--rdzv_endpoint", f"localhost:{free_port()}",
            "--train_opts", "--engine.engine ddp --engine.bf16 false --optim.max_steps 2 --data.batch_size 2 "
                            "--data.num_workers 0",
            "--decode_opts", "--decoding.max_new_tokens 3"]
    start = time.time()
    log = run(d, *args)
    return d, args, log, before, time.time() - start


def test_every_stage_leaves_its_outputs(recipe):
    d, _, log, before, seconds = recipe
    print(f"zipper12 stages 0-8: {seconds:.0f} s")
    for name in ("train_stage1", "train_sft_lite_1h", "test_source", "test_source_ws_net",
                 "test_target_lite_1h", "test_target_ls_other"):
        assert (d / "data" / name / "text").stat().st_size > 0
        assert (d / "dump" / name / "audio.scp").stat().st_size > 0
    # every target language made it into the SFT set and its test union
    langs = {line.split()[1] for line in (d / "data/test_target_lite_1h/utt2lang").read_text().splitlines()}
    assert langs == {"de", "es", "fr", "ru", "vi", "it", "en", "th", "ar", "ja", "ko", "pt"}
    assert (d / "exp/lid/lid.safetensors").stat().st_size > 0
    for exp in ("exp/stage1_chunked", *(f"exp/lite_1h/stage2_chunked_{m}" for m in METHODS)):
        assert (d / exp / "final").is_dir(), exp
    assert snapshot(d) == before                                   # no tracked file rewritten


def test_results_tables_have_a_row_per_method(recipe):
    d = recipe[0]
    target = (d / "exp/RESULTS_lite_1h.md").read_text()
    source = (d / "exp/RESULTS_lite_1h_source.md").read_text()
    for label in ("Vanilla-LoRA", "Zipper-LoRA-Soft"):
        rows = [line for line in target.splitlines() if line.startswith(f"| {label} |")]
        assert rows and any(c.strip().replace(".", "").isdigit() for c in rows[0].split("|")), target
    assert any(line.startswith("| Foundation (stage 1) |") for line in source.splitlines()), source
    assert "Relative change vs Vanilla-LoRA" in target          # the baseline method was run


def test_figures_are_pngs(recipe):
    d = recipe[0]
    for name in ("fig5_radar_chunked.png", "fig6_relchange_chunked.png", "fig7_lid.png"):
        assert (d / "exp/figures_lite_1h" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_rerun_of_decoding_and_scoring_changes_nothing(recipe):
    d, args, _, _, _ = recipe
    texts = sorted(d.glob("exp/**/decode_*/text"))
    assert len(texts) == 2 + 2 * 4                     # stage 1: 2 source sets; each method: 4 sets
    stamps = {p: p.stat().st_mtime_ns for p in texts}
    results = {p: p.read_text() for p in d.glob("exp/RESULTS_*.md")}
    run(d, *args, "--stage", "6", "--stop_stage", "7")
    assert {p: p.stat().st_mtime_ns for p in texts} == stamps
    logs = sorted((d / "exp/log/stage6").glob("*.decode.log"))
    assert len(logs) == 3                              # one decode process per model
    text = "".join(log.read_text() for log in logs)    # every set of every model: already decoded
    assert text.count("nothing to do") == len(texts) and "redoing" not in text, text[-3000:]
    assert {p: p.read_text() for p in results} == results
