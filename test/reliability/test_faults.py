"""Kills and interruptions (issue 10, "Faults"): nothing is lost and nothing half-written is ever
taken as complete. Slower multi-rank variants: test/train/test_distributed.py (DDP SIGKILL after a
step, ZeRO-2 SIGKILL inside a checkpoint); in-process ones: test/train/test_train_run.py (abort
inside a checkpoint, disk full while saving); atomic files: test/utils/test_io.py."""
import copy
import os
import random
import signal
import subprocess
import time

import kaldiio
import numpy as np
import pytest
import torch

from rel_testlib import PY, REPO, run_cli
from tiny_datadir import make_datadir
from train_testlib import env, final_weights, read_metrics, train_inprocess, write_config

import zlora.bin.decode as decode_cli
from zlora.bin.dump_feats import main as dump_main


def test_sigkill_at_a_random_step_then_resume_ends_identical(tmp_path, trained, monkeypatch):
    _, base = trained
    cfg = copy.deepcopy(base)
    cfg["optim"]["max_steps"] = 4
    cfg["model"]["llm_lora"]["dropout"] = 0.1       # the run depends on the RNG: resume must restore it
    step = random.Random().randint(1, 3)            # checkpoints every 2 steps: 1 = before the first one
    killed = {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / "killed")}
    path = write_config(tmp_path / "killed.yaml", killed)
    proc = subprocess.run([PY, "-m", "zlora.bin.train", "--config", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env=env(ZLORA_DEBUG_KILL=f"after_step:{step}"))
    assert proc.returncode == -signal.SIGKILL, (step, proc.stderr[-2000:])
    assert [m["step"] for m in read_metrics(tmp_path / "killed")] == list(range(1, step + 1))
    assert not (tmp_path / "killed" / "final").exists()
    assert train_inprocess(monkeypatch, killed, path, "--resume", "true") == 0
    full = {**copy.deepcopy(cfg), "exp_dir": str(tmp_path / "full")}
    assert train_inprocess(monkeypatch, full, tmp_path / "full.yaml") == 0
    got, want = read_metrics(tmp_path / "killed"), read_metrics(tmp_path / "full")
    assert [m["step"] for m in got] == [1, 2, 3, 4], step
    assert [m["loss"] for m in got] == [m["loss"] for m in want], step         # bit-identical, every step
    a, b = final_weights(tmp_path / "killed"), final_weights(tmp_path / "full")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), step


def test_killed_decoding_rerun_finishes_only_the_missing_part(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    args = ["--exp", trained[0], "--data", data, "--feats", feats, "--nj", 2, "--decoding.max_new_tokens", 3]
    with monkeypatch.context() as m:       # uninterrupted; parts decoded in this process (no spawn)
        m.setattr(decode_cli, "run_parts", lambda cfg, parts: [decode_cli.decode_part(cfg, p) for p in parts])
        code, err = run_cli(decode_cli.main, [*args, "--out", tmp_path / "ref"])
    assert code == 0, err
    out = tmp_path / "dec"

    def killed_after_part_1(cfg, parts):
        decode_cli.decode_part(cfg, parts[0])
        d = parts[1].dir                   # part 2 died mid-way: a partial text, no .done marker
        d.mkdir(parents=True)
        (d / "text").write_text(f"{parts[1].utts[0]} partial\n")
        (d / ".text.x.tmp").write_text("half a line")
        raise KeyboardInterrupt

    monkeypatch.setattr(decode_cli, "run_parts", killed_after_part_1)
    with pytest.raises(KeyboardInterrupt):
        run_cli(decode_cli.main, [*args, "--out", out])
    assert not (out / "text").exists()                 # no output that looks complete
    part1 = out / "split2" / "1" / "text"
    stamp = part1.stat().st_mtime_ns
    monkeypatch.undo()
    code, err = run_cli(decode_cli.main, [*args, "--out", out])
    assert code == 0, err
    assert "16 utts in 2 parts; 1 to decode" in err
    assert part1.stat().st_mtime_ns == stamp           # the finished part was not redone
    lines = (out / "text").read_text().splitlines()
    assert len(lines) == 16 and len({l.split()[0] for l in lines}) == 16
    assert lines == (tmp_path / "ref" / "text").read_text().splitlines()


def test_decode_parts_of_another_utterance_list_are_never_reused(tmp_path):
    from zlora.decode.jobs import merge_parts, split_utts, write_part

    old = split_utts([(f"a{i}", 100) for i in range(4)], 2, tmp_path)
    for p in old:
        write_part(p, {u: "old" for u in p.utts}, {"utts": len(p.utts), "audio_seconds": 1.0, "decode_seconds": 1.0})
    new = split_utts([(f"b{i}", 100) for i in range(4)], 2, tmp_path)    # the data dir changed
    if all(p.done for p in new):       # acceptable only if merging then refuses the stale parts
        with pytest.raises(RuntimeError):
            merge_parts(new, tmp_path)
    assert not (tmp_path / "text").exists()


def test_feature_dump_killed_midway_is_never_taken_as_complete(tmp_path):
    """SIGKILL dump_feats while it waits on a slow pipe: no feats.scp or .done is left; the rerun
    starts over and produces the same features as an uninterrupted dump."""
    data = make_datadir(tmp_path / "d", langs=("en",), spks_per_lang=1, utts_per_spk=3, seconds=0.3)
    wav_lines = (data / "wav.scp").read_text().splitlines()
    last_utt, last_wav = wav_lines[-1].split(maxsplit=1)
    gate = tmp_path / "gate"
    wav_lines[-1] = f"{last_utt} while [ ! -e '{gate}' ]; do sleep 0.1; done; cat '{last_wav}' |"
    (data / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    out = tmp_path / "dump"
    proc = subprocess.Popen([PY, "-m", "zlora.bin.dump_feats", "--data", str(data), "--out", str(out)],
                            cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    part = out / "split" / "feats.1.ark"
    deadline = time.time() + 60
    while not (part.is_file() and part.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.05)         # the first utterances are written; the last one waits on the gate
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert part.is_file(), proc.stderr.read().decode()
    assert not (out / ".done").exists() and not (out / "feats.scp").exists()
    gate.touch()
    code, err = run_cli(dump_main, ["--data", data, "--out", out])
    assert code == 0, err
    assert (out / ".done").is_file() and not (out / "split").exists()
    got = dict(kaldiio.load_scp(str(out / "feats.scp")))
    ref_out = tmp_path / "ref"
    assert run_cli(dump_main, ["--data", data, "--out", ref_out])[0] == 0
    want = dict(kaldiio.load_scp(str(ref_out / "feats.scp")))
    assert sorted(got) == sorted(want) and len(got) == 3
    assert all(np.array_equal(got[u], want[u]) for u in want)
