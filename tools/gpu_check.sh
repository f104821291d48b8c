#!/usr/bin/env bash
# The prepared GPU check (issue "paper-scale training on GPUs"): one script, under 10 minutes on
# one GPU, for the day a GPU is lent. From the repository root:
#
#   bash tools/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else exp/gpu_check
#
# 1. env.json: torch / transformers / deepspeed versions and the device.
# 2. kinds.jsonl: tiny-model DeepSpeed ZeRO-2 bf16 training steps for every adapter kind, chunked
#    and full, on the device (python -m zlora.bin.gpu_check).
# 3. real_shapes.jsonl: one training run per stage and regime at Whisper-large-v3 + Qwen3-1.7B
#    shapes (random weights, no download), the zipper12 micro-batch (16 packs chunked, 10 full)
#    with activation checkpointing: peak memory, tokens/s, encoder frames/s, MFU
#    (python -m zlora.bin.bench_memory --step).
# Without CUDA, step 2 runs on the CPU and step 3 is a 1-layer, 1-pack smoke run of the same code:
# the script stays tested on CPUs (test/tools/test_gpu_check.py).
#
# Packages: torch, transformers, deepspeed, safetensors, sentencepiece, kaldiio, pyyaml, numpy.
# The repo's .venv is used when present, else python3 (PYTHON=... overrides). A machine without
# network that lacks some (deepspeed, kaldiio) gets them as carried wheels installed to a folder
# on PYTHONPATH before this script runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-exp/gpu_check}}
mkdir -p "$out"
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" >&2; }
status=0

if ! "$PY" -c 'import torch, transformers, deepspeed, safetensors, sentencepiece, kaldiio, yaml' 2>"$out/import.err"; then
  log "missing packages for $PY: $(tail -1 "$out/import.err")"
  exit 2
fi
"$PY" - "$out/env.json" <<'PYEOF'
import json, sys, torch, transformers, deepspeed   # deepspeed logs to stdout: write the file here
cuda = torch.cuda.is_available()
with open(sys.argv[1], "w") as f:
    json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
               "deepspeed": deepspeed.__version__, "cuda": cuda,
               "device": torch.cuda.get_device_name(0) if cuda else "cpu"}, f)
PYEOF
cat "$out/env.json" >&2
gpu=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')

log "tiny models: every adapter kind, chunked and full, DeepSpeed ZeRO-2 bf16"
"$PY" -m zlora.bin.gpu_check --out "$out/kinds.jsonl" >"$out/kinds.log" 2>&1 || { status=1; log "FAILED (see $out/kinds.*)"; }
cat "$out/kinds.jsonl" >&2

: >"$out/real_shapes.jsonl"
if [ "$gpu" = 1 ]; then
  for stage in 1 2; do
    for regime in chunked full; do
      packs=16; [ "$regime" = full ] && packs=10
      log "real shapes: stage $stage, $regime, $packs packs, activation checkpointing"
      timeout 240 "$PY" -m zlora.bin.bench_memory --step --stage "$stage" --regime "$regime" --batch_size "$packs" \
        --steps 3 --out "$out/real_shapes.jsonl" >>"$out/real_shapes.log" 2>&1 || { status=1; log "FAILED (see $out/real_shapes.log)"; }
    done
  done
else
  log "no CUDA device: real-shape steps skipped; a CPU smoke run (1 encoder + 1 LLM layer, 1 pack) instead"
  "$PY" -m zlora.bin.bench_memory --step --stage 2 --regime chunked --batch_size 1 --steps 1 --enc_layers 1 \
    --llm_layers 1 --out "$out/real_shapes.jsonl" >>"$out/real_shapes.log" 2>&1 || { status=1; log "FAILED (see $out/real_shapes.log)"; }
fi
cat "$out/real_shapes.jsonl" >&2
log "done (status $status); results in $out"
exit $status
