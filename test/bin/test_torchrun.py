"""zlora.bin.torchrun: a failed rank's one-line error ends the output, with the rank's exit code,
instead of torchrun's ChildFailedError traceback and exit code 1."""
import subprocess
import sys

import pytest

from zlora.bin.torchrun import exit_code


def test_a_rank_user_error_is_one_line_and_keeps_its_exit_code(tmp_path):
    res = subprocess.run([sys.executable, "-m", "zlora.bin.torchrun", "--nproc_per_node", "1",
                          "-m", "zlora.bin.score", "--ref", str(tmp_path / "missing_text"),
                          "--hyp", str(tmp_path / "hyp"), "--utt2lang", str(tmp_path / "u2l"),
                          "--out", str(tmp_path / "score")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 2, res.stderr                 # the rank's code (torchrun: 1)
    assert "Traceback" not in res.stderr and "ChildFailedError" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert any(": error: reference file " in line and "missing_text" in line for line in lines), res.stderr
    assert lines[-1] == "zlora.bin.torchrun: zlora.bin.score: rank 0 exited with code 2 (its own error, " \
                        "if it printed one, is above)"


@pytest.mark.parametrize("code,want", [(2, 2), (1, 1), (-9, 137), (-15, 143), (300, 1)])
def test_exit_code_as_a_shell_reports_it(code, want):
    assert exit_code(code) == want
