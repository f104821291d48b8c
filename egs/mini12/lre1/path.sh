# Sourced by run.sh: the zlora repo on PYTHONPATH, its venv (if any) first on PATH, no model hub.
ZLORA_ROOT=${ZLORA_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
export ZLORA_ROOT
export PYTHONPATH="$ZLORA_ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -x "$ZLORA_ROOT/.venv/bin/python" ]; then
  export PATH="$ZLORA_ROOT/.venv/bin:$PATH"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
