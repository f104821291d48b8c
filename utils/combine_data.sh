#!/usr/bin/env bash
# Usage: utils/combine_data.sh <dst-dir> <src-dir1> <src-dir2> ...
# Thin wrapper: all logic lives in zlora/bin/combine_data.py (run with --help for the options).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The repo's python: $ZLORA_PYTHON, else the .venv next to the repo, else python3 on PATH.
py=${ZLORA_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then py=$repo/.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m zlora.bin.combine_data "$@"
