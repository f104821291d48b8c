#!/usr/bin/env bash
# Usage: utils/subset_data_dir.sh --hours H [--seed S] [--per-lang] <src-dir> <dst-dir>
#        utils/subset_data_dir.sh --utt-list FILE <src-dir> <dst-dir>
#        utils/subset_data_dir.sh --lang LANG <src-dir> <dst-dir>
# Thin wrapper: all logic lives in zlora/bin/subset_data_dir.py (run with --help for the options).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The repo's python: $ZLORA_PYTHON, else the .venv next to the repo, else python3 on PATH.
py=${ZLORA_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then py=$repo/.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m zlora.bin.subset_data_dir "$@"
