"""Recipe options (issue 22): utils/parse_options.sh, which every run.sh sources, refuses stages
that are not numbers, a stage range that runs nothing, and options that are not recipe variables
(environment variables such as PATH, bash's own variables). Tested on a small fake recipe."""
import subprocess

import pytest

from rel_testlib import REPO

RECIPE = """#!/usr/bin/env bash
set -euo pipefail
stage=0
stop_stage=8
nj=2
. "{repo}/utils/parse_options.sh"
for s in 0 1 2 3 4 5 6 7 8 9; do
  if [ "$stage" -le "$s" ] && [ "$stop_stage" -ge "$s" ]; then echo "ran stage $s"; fi
done
"""


@pytest.fixture
def recipe(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(RECIPE.format(repo=REPO))

    def run(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, cwd=tmp_path)
    return run


@pytest.mark.parametrize("args,needle", [
    (["--stage", "abc"], "--stage abc: not a stage number"),
    (["--stop_stage", "7x"], "--stop_stage 7x: not a stage number"),
    (["--stage", ""], "--stage : not a stage number"),
    (["--stage", "9", "--stop_stage", "7"], "--stage 9 is after --stop_stage 7: no stage would run"),
    (["--PATH", "/x"], "invalid option --PATH: PATH is an environment variable, not an option of"),
    (["--HOME", "/x"], "invalid option --HOME"),
    (["--IFS", "x"], "invalid option --IFS: IFS is a variable of bash itself"),
    (["--BASH_ENV", "/x"], "invalid option --BASH_ENV"),
])
def test_bad_recipe_options_stop_before_any_stage_runs(recipe, args, needle):
    r = recipe(*args)
    assert r.returncode != 0 and "ran stage" not in r.stdout, (r.stdout, r.stderr)
    assert needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_good_stage_options_still_work(recipe):
    r = recipe("--stage", "7", "--stop_stage", "8", "--nj", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ran stage 7", "ran stage 8"]
    r = recipe("--stage", "3", "--stop_stage", "3")
    assert r.returncode == 0 and r.stdout.splitlines() == ["ran stage 3"], r.stderr
