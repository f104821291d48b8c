"""Every failure becomes a message (issue 22): the cases that used to end in a traceback, or left
processes behind, now exit non-zero with one line naming the file, utterance or option."""
import copy
import os
import shutil
import signal
import subprocess
import time

import kaldiio
import numpy as np
import pytest
import torch

from rel_testlib import PY, REPO, decode_inprocess, error_line, run_cli, stage2_config
from train_testlib import env, single_process_env, write_config

from zlora.bin.dump_encoder import main as dump_encoder_main
from zlora.bin.train import main as train_main
from zlora.decode.jobs import split_utts


def train_cli(monkeypatch, cfg, path, *args):
    single_process_env(monkeypatch)
    return run_cli(train_main, ["--config", write_config(path, cfg), *args])


def test_a_text_file_as_lid_embeddings_is_named(tmp_path, trained, monkeypatch):
    lid = tmp_path / "lid.safetensors"
    lid.write_text("en 0.1 0.2\nfr 0.3 0.4\n")
    cfg = stage2_config(trained, tmp_path, "s2", kind="zipper-soft", rank=2, lid_embeddings=str(lid))
    code, err = train_cli(monkeypatch, cfg, tmp_path / "c.yaml")
    assert code == 2, err
    line = error_line(err)
    assert str(lid) in line and "safetensors" in line and "extract_lid" in line, line
    assert not (tmp_path / "s2").exists()                 # checked before the exp dir is created


def test_a_pickle_as_encoder_state_is_named(tmp_path, corpus):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from train_testlib import TINY_WHISPER

    WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).save_pretrained(tmp_path / "whisper")
    state = tmp_path / "state.pt"
    torch.save({"encoder.conv1.bias": torch.ones(32)}, state)
    _, feats, _ = corpus
    code, err = run_cli(dump_encoder_main, ["--whisper_dir", tmp_path / "whisper", "--feats", feats,
                                            "--layers", 1, "--out", tmp_path / "enc", "--encoder_state", state])
    assert code == 2, err
    line = error_line(err)
    assert str(state) in line and "safetensors" in line, line


def test_a_600s_utterance_in_dump_encoder_names_the_utterance(tmp_path, corpus):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from train_testlib import TINY_WHISPER

    WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).save_pretrained(tmp_path / "whisper")
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/f.ark,{tmp_path}/feats.scp") as w:
        w("long-utt", np.zeros((60000, 80), np.float32))
        w("short-utt", np.zeros((100, 80), np.float32))
    code, err = run_cli(dump_encoder_main, ["--whisper_dir", tmp_path / "whisper", "--feats", tmp_path / "feats.scp",
                                            "--layers", 1, "--out", tmp_path / "enc"])
    assert code == 2, err
    line = error_line(err)
    assert "long-utt" in line and "600" in line and "3000" in line and "long_inputs" not in line, line
    assert not (tmp_path / "enc" / ".done").exists()


def test_undecodable_bytes_in_the_latest_pointer_are_named(tmp_path, exp_copy, monkeypatch):
    exp, cfg = exp_copy
    latest = exp / "checkpoints" / "latest"
    latest.write_bytes(b"step-\xff\xfe\n")
    code, err = train_cli(monkeypatch, cfg, tmp_path / "c.yaml", "--resume", "true", "--optim.max_steps", "4")
    assert code == 2, err
    line = error_line(err)
    assert str(latest) in line and "step-N" in line, line


def test_a_full_disk_inside_torch_save_keeps_the_previous_checkpoint(tmp_path, trained, monkeypatch):
    """torch.save raises RuntimeError (not OSError) when the disk fills up: /dev/full is a real
    ENOSPC device behind torch's own writer."""
    import stat

    if not (os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)):
        pytest.skip("/dev/full is not the ENOSPC character device here")
    _, base = trained
    cfg = {**copy.deepcopy(base), "exp_dir": str(tmp_path / "exp")}
    cfg["optim"]["max_steps"] = 4
    real = torch.save

    def save(obj, f, *a, **k):
        return real(obj, "/dev/full" if "step-4" in str(f) else f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    code, err = train_cli(monkeypatch, cfg, tmp_path / "c.yaml")
    assert code == 2, err
    line = error_line(err)
    assert "writing checkpoint" in line and "step-4" in line and "previous checkpoint is intact: " in line, line
    ckpts = tmp_path / "exp" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-2"
    assert not list(ckpts.glob(".step-*.partial")) and not (ckpts / "step-4").exists()


def test_a_read_only_output_dir_is_one_line(tmp_path, trained, corpus):
    data, feats, _ = corpus
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:          # root ignores permission bits unless it drops CAP_DAC_OVERRIDE
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    out = ro / "decode"
    proc = subprocess.run([*prefix, PY, "-m", "zlora.bin.decode", "--exp", str(trained[0]), "--data", str(data),
                           "--feats", str(feats), "--out", str(out)], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "Permission denied" in lines[0], proc.stderr


def test_nj_above_the_number_of_utterances_spawns_no_empty_worker(tmp_path):
    parts = split_utts([(f"u{i}", 10 * i) for i in range(3)], 8, tmp_path)
    assert len(parts) == 3 and all(p.utts for p in parts)


@pytest.mark.parametrize("option", ["--nj", "--batch_size", "--decoding.beam_size", "--decoding.max_new_tokens"])
def test_a_zero_count_option_exits_2_before_loading_the_model(tmp_path, corpus, option, monkeypatch):
    data, feats, _ = corpus
    start = time.time()
    code, err = decode_inprocess(monkeypatch, ["--exp", tmp_path / "no exp", "--data", data, "--feats", feats,
                                               "--out", tmp_path / "d", option, 0])
    assert code == 2 and option.split(".")[-1].lstrip("-") in error_line(err) and ">= 1" in error_line(err), err
    assert "does not exist" not in err and time.time() - start < 5        # before any model loading
    assert not (tmp_path / "d").exists()


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            try:
                kids = open(f"/proc/{p}/task/{task}/children").read().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def big_set(tmp_path, corpus, copies: int = 1500):
    """The corpus repeated ``copies`` times (new ids, the same feature matrices): a decode of it
    keeps two workers busy for a minute or more (150 copies took 14 s on a 2-core CPU and under
    6 s on CI's machine, which was too short for the test below)."""
    from zlora.data.kaldi import DataDir

    data, feats, _ = corpus
    dd = DataDir(data)
    scp = dict(line.split(maxsplit=1) for line in feats.read_text().splitlines())
    text, utt2spk, utt2lang, lines = {}, {}, {}, []
    for k in range(copies):
        for u in dd.utts:
            v = f"c{k:03d}-{u}"
            text[v], utt2spk[v], utt2lang[v] = dd.text[u], f"c{k:03d}", dd.utt2lang[u]
            lines.append(f"{v} {scp[u]}")
    DataDir.write(tmp_path / "big", text=text, utt2spk=utt2spk, utt2lang=utt2lang)
    (tmp_path / "feats.scp").write_text("\n".join(sorted(lines)) + "\n")
    return tmp_path / "big", tmp_path / "feats.scp"


def test_decode_workers_die_with_their_parent(tmp_path, trained, corpus):
    data, feats = big_set(tmp_path, corpus)
    proc = subprocess.Popen([PY, "-m", "zlora.bin.decode", "--exp", str(trained[0]), "--data", str(data),
                             "--feats", str(feats), "--out", str(tmp_path / "d"), "--nj", "2"],
                            cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(workers) < 2:
        workers = {p for p in descendants(proc.pid) if "spawn_main" in cmdline(p)}
        time.sleep(0.1)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(4)                               # past their imports: decoding
    all_kids = descendants(proc.pid)
    assert proc.poll() is None, f"the decode ended (exit {proc.returncode}) before the test could kill it"
    assert all(alive(p) for p in workers), "the workers ended before the test could kill their parent"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 5
    while time.time() < deadline and any(alive(p) for p in all_kids):
        time.sleep(0.1)
    left = [p for p in all_kids if alive(p)]
    for p in left:                              # never leave them to the rest of the suite
        os.kill(p, signal.SIGKILL)
    assert not left, f"{len(left)} process(es) outlived the killed decode"
