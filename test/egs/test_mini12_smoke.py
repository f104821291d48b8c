"""The mini12 recipes end to end on a tiny setting (conf/smoke.conf): every stage's outputs, valid
data dirs, a RESULTS.md row per method, re-running finished stages as a no-op; and, so that a change
that silently breaks learning fails `make test`, stage 1's loss and the test error rates pinned to
what was measured (see PINS below). A run must write nothing outside data/, dump/ and exp/: the
committed RESULTS.md, RESULTS_multiseed.md and figures/ are the reference, never rewritten.

Needs espeak-ng (apt-installed by `make install`) and the pinned Whisper-base weight packages.
"""
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from zlora.scoring.report import exp_config, method_label

REPO = Path(__file__).resolve().parents[2]
EGS = REPO / "egs" / "mini12"
METHODS = ["lora", "independent", "flylora", "zipper-static", "zipper-hard", "zipper-soft",
           "zipper-soft-initb"]
OUTPUTS = ("data", "dump", "exp")        # all a run may write into its recipe dir
REFERENCES = ("RESULTS.md", "RESULTS_multiseed.md", "figures")

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def run(recipe: Path, *args: str) -> str:
    env = dict(os.environ, ZLORA_ROOT=str(REPO), OMP_NUM_THREADS="1",
               ZLORA_CACHE=os.environ.get("ZLORA_CACHE", str(REPO / ".cache")))
    proc = subprocess.run(["bash", "run.sh", "--config", "conf/smoke.conf", *args], cwd=recipe,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def copy_recipe(name: str, dst: Path) -> Path:
    """The recipe's committed files (not a developer's data/, dump/, exp/), utils linked to the repo."""
    src = EGS / name
    top = lambda d, names: [n for n in names if Path(d) == src and n in (*OUTPUTS, "utils")]  # noqa: E731
    shutil.copytree(src, dst, symlinks=True, ignore=top)
    (dst / "utils").symlink_to(REPO / "utils")
    return dst


def snapshot(d: Path) -> dict[str, str]:
    """{path: sha256 (or link target)} of everything in ``d`` outside data/, dump/ and exp/."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d)
        if rel.parts[0] in OUTPUTS or rel.parts[0] == "utils" or p.is_dir() and not p.is_symlink():
            continue
        out[str(rel)] = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make install apt-gets it)")
    root = tmp_path_factory.mktemp("smoke") / "mini 12"          # a space in the path, on purpose
    d = copy_recipe("asr1", root / "asr1")
    before = snapshot(d)
    log = run(d)
    return d, log, before


def stage2_exp(d: Path, method: str) -> Path:
    return d / "exp" / "stage2" / f"{method}_seed0"


def labels(d: Path) -> list[str]:
    """The row labels, from each run's resolved config (the one function every recipe uses)."""
    return [method_label(exp_config(d / "exp/stage1"))] + \
        [method_label(exp_config(stage2_exp(d, m))) for m in METHODS]


def test_every_stage_leaves_its_outputs(recipe):
    d, log, _ = recipe
    for s in ["foundation", "foundation_dev", "train_sft", "dev", "test"]:
        assert (d / "dump" / s / ".done").is_file()
    for s, enc in [("foundation", "enc6"), ("train_sft", "enc5"), ("test", "enc5"), ("test", "enc6")]:
        assert (d / "dump" / s / enc / ".done").is_file()
    assert (d / "exp/lid/lid.safetensors").is_file() and (d / "data/lang/spm.model").is_file()
    assert (d / "exp/stage1/final/model.safetensors").is_file()
    for m in METHODS:
        exp = stage2_exp(d, m)
        assert (exp / "final" / "adapter.safetensors").is_file(), m
        assert (exp / "decode_test" / "score" / "result.json").is_file(), m
        n_hyp = len((exp / "decode_test" / "text").read_text().splitlines())
        assert n_hyp == len((d / "data/test/text").read_text().splitlines())
    for fig in ["fig5_radar", "fig6_relchange", "fig7_lid", "loss", "router_p", "fig8_tsne"]:
        assert (d / "exp" / "figures" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "imbalance" in log and "smallest high-resource language" in log    # stage 1's report


def test_data_dirs_validate(recipe):
    d, _, _ = recipe
    for s in ["foundation", "foundation_dev", "train_high", "train_low", "train_sft", "dev", "test"]:
        proc = subprocess.run(["bash", str(REPO / "utils/validate_data_dir.sh"), str(d / "data" / s)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "OK" in proc.stdout + proc.stderr


def test_results_has_a_row_per_method(recipe):
    d, log, _ = recipe
    names = labels(d)
    assert len(set(names)) == 1 + len(METHODS)               # every run got a row of its own
    results = (d / "exp" / "RESULTS.md").read_text()
    for label in names:
        assert f"| {label} |" in results, label
    assert "| ja (CER) |" in results or "ja (CER)" in results
    # the run ends with its averages beside the committed reference's
    assert "beside the reference RESULTS.md" in log
    for label in names:
        assert f"| {label} | " in log.split("beside the reference RESULTS.md")[1], label


def test_a_run_writes_only_data_dump_and_exp(recipe):
    """Nothing outside data/, dump/, exp/ is created or modified: a clone stays clean after
    `make demo`, and the committed reference results and figures are never overwritten."""
    d, _, before = recipe
    assert snapshot(d) == before
    for name in REFERENCES:
        assert name in {Path(p).parts[0] for p in before}, name
    for ref in (d / "RESULTS.md", d / "RESULTS_multiseed.md", *sorted((d / "figures").iterdir())):
        assert ref.read_bytes() == (EGS / "asr1" / ref.relative_to(d)).read_bytes(), ref


# --------------------------------------------------------------------------------------- the pins
# Measured with conf/smoke.conf on this project's 2-core CPU, OMP_NUM_THREADS=1 as run() sets it
# (2026-12-02). Two runs gave bit-identical losses, hypotheses and scores. To size the tolerances,
# stage 1 (then lora and zipper-soft) was retrained under changes that should not matter, and
# under one that breaks learning (test averages: WER for en/de, CER for ja):
#
#   stage 1 variant         loss step 1  step 200  valid  | test high  low | stage 2: loss 1  high  low
#   as pinned (2 runs)        14.820      0.0670   0.671  |   62.7    47.6 |          0.718  62.7  41.9-42.7
#   2 threads (sum order)     14.820      0.0659   0.756  |   68.7    41.9 |          0.824  60.7  41.1
#   --seed 1                  12.660      0.0952   0.692  |   66.9    44.4 |          0.984  56.9  52.4-54.8
#   --seed 2                  12.634      0.0946   0.667  |   70.8    40.3 |          0.945  80.5  44.4-48.4
#   20 steps (under-trained)  14.820      7.07     3.77   |  100.0   154.0 |          4.08  100.0  213.7
#
# So: step 1's loss is the untrained model's on the first batch. It does not move with the thread
# count (equal to 5 digits), so it is pinned to +-0.05: a changed loss (e.g. the CTC term, label
# masking) or a changed initialisation fails here. If you change the initialisation on purpose,
# re-measure and update this pin. Everything after step 1 is chaotic: the thread count alone moved
# the valid loss by 13 % and the test averages by 6 points, a seed by 8, so those are bands around
# all the measurements, with margin, that the under-trained model (and any model that does not
# learn, ~100 % or more) falls far outside; the lower bounds catch the suspiciously good (e.g.
# test transcripts leaking into training). Stage 2 trains 2 steps: its first loss is the stage-1
# model's on the target data (an untrained LLM starts above 4), its error rates track stage 1's.
PINS = {
    "stage1_steps": 200,
    "stage1_loss_first": (14.77, 14.87),       # measured 14.8196 (+-0.05)
    "stage1_loss_last": (0.02, 0.3),           # measured 0.066-0.095; 7.07 after 20 steps
    "stage1_valid_loss": (0.4, 1.2),           # measured 0.667-0.756; 3.77 after 20 steps
    "stage2_loss_first": (0.4, 1.6),           # measured 0.718-0.984; 4.08 from the 20-step model
    "wer_band": {"high": (30.0, 90.0),         # measured 56.9-80.5; 100 after 20 steps
                 "low": (20.0, 80.0)},         # measured 40.3-54.8; 154-214 after 20 steps
}


def metrics(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]


def averages(exp: Path) -> dict[str, float]:
    """Test error rate (WER; CER for ja), unweighted mean over the high (en, de) and low (ja) languages."""
    r = json.loads((exp / "decode_test" / "score" / "result.json").read_text())
    return {"high": (r["en"]["rate"] + r["de"]["rate"]) / 2, "low": r["ja"]["rate"]}


def within(value: float, band: tuple[float, float]) -> bool:
    return band[0] <= value <= band[1]


def test_stage1_loss_falls_as_measured(recipe):
    d, _, _ = recipe
    m = metrics(d / "exp/stage1")
    assert [x["step"] for x in (m[0], m[-1])] == [1, PINS["stage1_steps"]]
    assert within(m[0]["loss"], PINS["stage1_loss_first"]), m[0]["loss"]
    assert within(m[-1]["loss"], PINS["stage1_loss_last"]), m[-1]["loss"]
    assert within(m[-1]["valid_loss"], PINS["stage1_valid_loss"]), m[-1]["valid_loss"]


@pytest.mark.parametrize("method", ["lora", "zipper-soft"])
def test_stage2_starts_from_the_stage1_model(recipe, method):
    d, _, _ = recipe
    first = metrics(stage2_exp(d, method))[0]["loss"]
    assert within(first, PINS["stage2_loss_first"]), first


@pytest.mark.parametrize("run_dir", ["stage1", *(f"stage2/{m}_seed0" for m in METHODS)])
def test_error_rates_within_the_measured_band(recipe, run_dir):
    d, _, _ = recipe
    avg = averages(d / "exp" / run_dir)
    for group, band in PINS["wer_band"].items():
        assert within(avg[group], band), (run_dir, group, avg[group])


def test_rerunning_finished_stages_is_a_noop(recipe):
    d, _, _ = recipe
    watched = [d / "dump/train_sft/feats.ark", d / "dump/test/enc5/feats.scp",
               *sorted((d / "dump/test/enc5").glob("feats*.ark")),
               d / "exp/stage2/lora_seed0/decode_test/text", d / "data/test/text"]
    assert len(watched) > 4
    before = [p.stat().st_mtime_ns for p in watched]
    run(d, "--stage", "1", "--stop_stage", "3")
    run(d, "--stage", "6", "--stop_stage", "6", "--methods", "lora")
    assert [p.stat().st_mtime_ns for p in watched] == before


# --------------------------------------------------------------------- the second paper: ../lre1

LRE_LABELS = ["LoRA language experts", "LoRA-MoLE", "LoRA-MoLE (LID: MoLE classifier)", "LoRA-KD",
              "LoRA-KD (LID: Whisper)", "LoRA-KD output-only", "Zipper-LoRA-Soft (LID: Whisper)",
              "Zipper-LoRA-Soft (LID: Whisper, mixture)"]


@pytest.fixture(scope="module")
def lre(recipe):
    """egs/mini12/lre1 beside the finished asr1 smoke recipe, reusing its outputs."""
    d, _, _ = recipe
    lre1 = copy_recipe("lre1", d.parent / "lre1")
    before = snapshot(lre1)
    return lre1, run(lre1), before


def test_second_paper_stages_train_decode_and_report(lre, recipe):
    e, log, _ = lre
    d, _, _ = recipe
    for lang in ["en", "de", "ja"]:
        assert (e / f"exp/lre/expert_{lang}/final/adapter.safetensors").is_file(), lang
        utt2lang = (d / f"data/train_sft_{lang}/utt2lang").read_text()      # through lre1/data
        assert utt2lang.split()[1::2] == [lang] * len(utt2lang.splitlines())
    for m in ["mole", "kd", "kd_output"]:
        assert (e / f"exp/lre/{m}/final/adapter.safetensors").is_file(), m
    n_test = len((d / "data/test/text").read_text().splitlines())
    assert len((e / "exp/lre/experts/decode_test/text").read_text().splitlines()) == n_test
    for lid in ["exp/lre/mole/decode_test_mole", "exp/lre/kd/decode_test_wlid",
                "exp/stage2/zipper-soft_seed0/decode_test_wlidmix"]:
        assert len((e / lid / "utt2lang_pred").read_text().splitlines()) == n_test, lid
    assert (d / "dump/test/enc4/.done").is_file()                       # in asr1's dump, as before
    results = (e / "exp/RESULTS.md").read_text()
    for label in LRE_LABELS + labels(d):        # beside the Zipper-LoRA rows
        assert f"| {label} |" in results, label
    assert "## Language identification" in results
    assert "| LoRA-MoLE (LID: MoLE classifier) (test) | mole |" in results
    assert "| LoRA-KD (LID: Whisper) | " in log.split("beside the reference ../asr1/RESULTS.md")[1]
    assert (e / "exp/figures/lid_confusion_test.png").stat().st_size > 1000
    mole_log = (e / "exp/lre/mole/train.log").read_text()        # the LID phase drew on lid_extra too
    assert "MoLE LID phase:" in mole_log and "data/foundation_dev" in mole_log


def test_second_paper_writes_only_data_dump_and_exp(lre):
    e, _, before = lre
    assert snapshot(e) == before
    assert all((e / p).is_symlink() for p in ("data", "dump", "exp/stage1", "exp/stage2", "exp/lid"))


def test_rerunning_second_paper_decoding_is_a_noop(lre):
    e, _, _ = lre
    watched = [e / "exp/lre/kd/decode_test_wlid/text", e / "exp/lre/expert_ja/decode_test/text"]
    before = [p.stat().st_mtime_ns for p in watched]
    run(e, "--stage", "3", "--stop_stage", "3")
    assert [p.stat().st_mtime_ns for p in watched] == before
