"""zlora.bin.chain: commands run in order in forked children; the first failure stops the chain
with its exit status; --no_fork gives the same outcome."""
import subprocess
import sys

import pytest

from zlora.bin.chain import split_commands
from zlora.utils.cli import UserError


def test_split_commands_on_the_separator():
    assert split_commands(["---", "zlora.bin.a", "x", "---", "zlora.bin.b", "--k", "v", "---"]) == \
        [["zlora.bin.a", "x"], ["zlora.bin.b", "--k", "v"]]
    # '--' is an argument like any other, not a separator
    assert split_commands(["zlora.bin.a", "--", "zlora.bin.b"]) == [["zlora.bin.a", "--", "zlora.bin.b"]]
    with pytest.raises(UserError, match="starts with a zlora module"):
        split_commands(["train", "--config", "x.yaml"])


def test_own_options_take_dash_or_underscore_spellings():
    from zlora.bin.chain import parse_args

    for spelling in ("--log_dir", "--log-dir"):
        args, commands = parse_args(["--nj", "2", spelling, "logs", "zlora.bin.a", "--x", "1"])
        assert args.nj == 2 and args.log_dir == "logs" and commands == [["zlora.bin.a", "--x", "1"]]


def data_dir(path, utt):
    path.mkdir()
    (path / "wav.scp").write_text(f"{utt} {utt}.wav\n")
    (path / "text").write_text(f"{utt} hello\n")
    (path / "utt2spk").write_text(f"{utt} spk\n")
    (path / "utt2lang").write_text(f"{utt} en\n")
    return str(path)


@pytest.mark.parametrize("opts", [[], ["--no_fork"]], ids=["fork", "no_fork"])
def test_runs_in_order_and_stops_at_the_first_failure(tmp_path, opts):
    a, b = data_dir(tmp_path / "a", "u1"), data_dir(tmp_path / "b", "u2")
    ab, never = tmp_path / "ab", tmp_path / "never"
    cmd = [sys.executable, "-m", "zlora.bin.chain", *opts,
           "zlora.bin.combine_data", str(ab), a, b, "---",
           "zlora.bin.validate_data_dir", "--no-audio-check", str(ab), "---",
           "zlora.bin.validate_data_dir", "--no-audio-check", str(tmp_path / "missing"), "---",
           "zlora.bin.combine_data", str(never), a, b]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2, p.stderr                       # validate_data_dir's own status
    assert (ab / "text").read_text() == "u1 hello\nu2 hello\n"
    assert "2/4 done" in p.stderr                            # the combined dir validated
    assert "missing" in p.stderr and "3/4 failed (exit status 2)" in p.stderr
    assert "1 later command(s) not run" in p.stderr and not never.exists()


def test_an_unknown_module_fails_before_anything_runs(tmp_path):
    a, b = data_dir(tmp_path / "a", "u1"), data_dir(tmp_path / "b", "u2")
    p = subprocess.run([sys.executable, "-m", "zlora.bin.chain", "zlora.bin.combine_data",
                        str(tmp_path / "ab"), a, b, "---", "zlora.bin.no_such_tool"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no module zlora.bin.no_such_tool" in p.stderr
    assert not (tmp_path / "ab").exists()


def test_parallel_commands_log_to_files_and_a_failure_shows_its_log(tmp_path):
    a, b = data_dir(tmp_path / "a", "u1"), data_dir(tmp_path / "b", "u2")
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "zlora.bin.chain", "--nj", "2", "--log_dir", str(logs),
           "zlora.bin.combine_data", str(tmp_path / "ab"), a, b, "---",
           "zlora.bin.validate_data_dir", "--no-audio-check", str(tmp_path / "missing")]
    for k in range(4):
        cmd += ["---", "zlora.bin.combine_data", str(tmp_path / f"later{k}"), a, b]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert (tmp_path / "ab/text").is_file() and not (tmp_path / "later3").exists()
    assert "2 utterances from 2 sources" in (logs / "01.combine_data.log").read_text()
    assert f"last lines of {logs / '02.validate_data_dir.log'}" in p.stderr and "missing" in p.stderr
    assert "later command(s) not run" in p.stderr
    bad = subprocess.run([sys.executable, "-m", "zlora.bin.chain", "--nj", "2", "zlora.bin.combine_data"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "needs --log_dir" in bad.stderr


class FakeJob:
    """A command that runs for ``ticks`` polls, then exits with ``rc``."""
    def __init__(self, index, cmd, plan, started):
        self.index, self.cmd, self.log_file, self.t0 = index, cmd, None, 0.0
        self.ticks, self.rc = plan[cmd[0]]
        started.append(cmd[0])

    def poll(self):
        self.ticks -= 1
        return self.rc if self.ticks < 0 else None


def test_schedule_keeps_nj_running_and_starts_nothing_after_a_failure(monkeypatch):
    import argparse

    from zlora.bin import chain

    plan = {"zlora.a": (5, 0), "zlora.b": (1, 0), "zlora.c": (1, 3), "zlora.d": (9, 0), "zlora.e": (0, 0)}
    started = []
    monkeypatch.setattr(chain, "start", lambda i, cmd, *rest: FakeJob(i, cmd, plan, started))
    monkeypatch.setattr(chain.time, "sleep", lambda s: None)
    args = argparse.Namespace(nj=2)
    rc = chain.schedule([[m] for m in plan], args, True, 1)
    # b ends -> c starts; c fails while a runs -> d and e never start; a still finishes
    assert rc == 3 and started == ["zlora.a", "zlora.b", "zlora.c"]
    started.clear()
    plan["zlora.c"] = (1, 0)
    assert chain.schedule([[m] for m in plan], argparse.Namespace(nj=1), True, None) == 0
    assert started == list(plan)
