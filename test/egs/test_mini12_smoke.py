"""The mini12 recipe end to end on a tiny setting (conf/smoke.conf): every stage's outputs, valid
data dirs, a RESULTS.md row per method, and re-running finished stages as a no-op.

Needs espeak-ng (apt-installed by `make install`) and the pinned Whisper-base weight packages.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs" / "mini12" / "asr1"
METHODS = ["lora", "independent", "flylora", "zipper-static", "zipper-hard", "zipper-soft",
           "zipper-soft-initb"]
LABELS = ["Vanilla-LoRA", "Independent-LoRA", "FlyLoRA", "Zipper-LoRA-Static", "Zipper-LoRA-Hard",
          "Zipper-LoRA-Soft", "Zipper-LoRA-Soft + initial-B"]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def run(recipe: Path, *args: str) -> str:
    env = dict(os.environ, ZLORA_ROOT=str(REPO), OMP_NUM_THREADS="1",
               ZLORA_CACHE=os.environ.get("ZLORA_CACHE", str(REPO / ".cache")))
    proc = subprocess.run(["bash", "run.sh", "--config", "conf/smoke.conf", *args], cwd=recipe,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make install apt-gets it)")
    d = tmp_path_factory.mktemp("smoke") / "mini 12"          # a space in the path, on purpose
    d.mkdir()
    shutil.copy(RECIPE / "run.sh", d)
    shutil.copy(RECIPE / "path.sh", d)
    shutil.copytree(RECIPE / "conf", d / "conf")
    (d / "utils").symlink_to(REPO / "utils")
    log = run(d)
    return d, log


def test_every_stage_leaves_its_outputs(recipe):
    d, log = recipe
    for s in ["foundation", "foundation_dev", "train_sft", "dev", "test"]:
        assert (d / "dump" / s / ".done").is_file()
    for s, enc in [("foundation", "enc6"), ("train_sft", "enc5"), ("test", "enc5"), ("test", "enc6")]:
        assert (d / "dump" / s / enc / ".done").is_file()
    assert (d / "exp/lid/lid.safetensors").is_file() and (d / "data/lang/spm.model").is_file()
    assert (d / "exp/stage1/final/model.safetensors").is_file()
    for m in METHODS:
        exp = d / "exp" / "stage2" / f"{m}_seed0"
        assert (exp / "final" / "adapter.safetensors").is_file(), m
        assert (exp / "decode_test" / "score" / "result.json").is_file(), m
        n_hyp = len((exp / "decode_test" / "text").read_text().splitlines())
        assert n_hyp == len((d / "data/test/text").read_text().splitlines())
    for fig in ["fig5_radar", "fig6_relchange", "fig7_lid", "loss", "router_p", "fig8_tsne"]:
        assert (d / "figures" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_dirs_validate(recipe):
    d, _ = recipe
    for s in ["foundation", "foundation_dev", "train_high", "train_low", "train_sft", "dev", "test"]:
        proc = subprocess.run(["bash", str(REPO / "utils/validate_data_dir.sh"), str(d / "data" / s)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "OK" in proc.stdout + proc.stderr


def test_results_has_a_row_per_method(recipe):
    d, log = recipe
    results = (d / "RESULTS.md").read_text()
    for label in LABELS + ["Foundation (stage 1)"]:
        assert f"| {label} |" in results, label
    assert "| ja (CER) |" in results or "ja (CER)" in results


def test_rerunning_finished_stages_is_a_noop(recipe):
    d, _ = recipe
    watched = [d / "dump/train_sft/feats.ark", d / "dump/test/enc5/feats.scp",
               *sorted((d / "dump/test/enc5").glob("feats*.ark")),
               d / "exp/stage2/lora_seed0/decode_test/text", d / "data/test/text"]
    assert len(watched) > 4
    before = [p.stat().st_mtime_ns for p in watched]
    run(d, "--stage", "1", "--stop_stage", "3")
    run(d, "--stage", "6", "--stop_stage", "6", "--methods", "lora")
    assert [p.stat().st_mtime_ns for p in watched] == before


LRE_LABELS = ["LoRA language experts", "LoRA-MoLE", "LoRA-MoLE (LID: MoLE classifier)", "LoRA-KD",
              "LoRA-KD (LID: Whisper)", "LoRA-KD output-only", "Zipper-LoRA-Soft (LID: Whisper)",
              "Zipper-LoRA-Soft (LID: Whisper, mixture)"]


@pytest.fixture(scope="module")
def lre(recipe):
    """Stages 9-11 (arXiv 2506.21555) on top of the finished smoke recipe."""
    d, _ = recipe
    return d, run(d, "--stage", "9", "--stop_stage", "11")


def test_second_paper_stages_train_decode_and_report(lre):
    d, _ = lre
    for lang in ["en", "de", "ja"]:
        assert (d / f"exp/lre/expert_{lang}/final/adapter.safetensors").is_file(), lang
        assert (d / f"data/train_sft_{lang}/utt2lang").read_text().split()[1::2] == \
            [lang] * len((d / f"data/train_sft_{lang}/utt2lang").read_text().splitlines())
    for m in ["mole", "kd", "kd_output"]:
        assert (d / f"exp/lre/{m}/final/adapter.safetensors").is_file(), m
    n_test = len((d / "data/test/text").read_text().splitlines())
    assert len((d / "exp/lre/experts/decode_test/text").read_text().splitlines()) == n_test
    for lid in ["exp/lre/mole/decode_test_mole", "exp/lre/kd/decode_test_wlid",
                "exp/stage2/zipper-soft_seed0/decode_test_wlidmix"]:
        assert len((d / lid / "utt2lang_pred").read_text().splitlines()) == n_test, lid
    results = (d / "RESULTS.md").read_text()
    for label in LRE_LABELS + LABELS:          # beside the Zipper-LoRA rows
        assert f"| {label} |" in results, label
    assert "## Language identification" in results
    assert "| LoRA-MoLE (LID: MoLE classifier) (test) | mole |" in results


def test_rerunning_second_paper_decoding_is_a_noop(lre):
    d, _ = lre
    watched = [d / "exp/lre/kd/decode_test_wlid/text", d / "exp/lre/expert_ja/decode_test/text"]
    before = [p.stat().st_mtime_ns for p in watched]
    run(d, "--stage", "11", "--stop_stage", "11")
    assert [p.stat().st_mtime_ns for p in watched] == before
