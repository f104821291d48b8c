#!/usr/bin/env bash
# Issue 19 item 5: CPU decoding of the mini12 test set (480 utts), LLM-LoRA merged (default) vs
# unmerged, interleaved, 3 reps; process CPU seconds (user+sys) as well as wall, since the machine
# is shared (CPU time is what the variant costs; wall is inflated by other jobs).
set -euo pipefail
# Usage (after `make demo`): bash tools/bench_decode_mini12.sh [OUT_DIR]   (default exp/bench_decode)
cd "$(dirname "$0")/../egs/mini12/asr1"
. ./path.sh
out="${1:-exp/bench_decode}"
[ ! -e "$out" ] || [ -f "$out/results.jsonl" ] || { echo "$out exists and is not an output of this script" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out"
for rep in 1 2 3; do
  for variant in unmerged merged; do
    for m in lora zipper-soft; do
      opt=(); [ "$variant" = unmerged ] && opt=(--merge_lora false)
      d="$out/${m}_${variant}_$rep"
      /usr/bin/time -f "%e %U %S" -o "$d.time" python -m zlora.bin.decode --config conf/decode.yaml \
        --exp "exp/stage2/${m}_seed0" --data data/test --feats dump/test/enc5/feats.scp --out "$d" --nj 1 \
        --batch_size 16 "${opt[@]}" 2> "$d.log"
      read -r wall user sys < "$d.time"
      same=$(cmp -s "$d/text" "$out/${m}_unmerged_1/text" && echo true || echo false)
      python3 -c "import json; r=json.load(open('$d/rtf.json')); print(json.dumps({'model':'$m','variant':'$variant','rep':$rep,'process_wall_s':$wall,'process_cpu_s':round($user+$sys,2),'decode_wall_s':r['decode_seconds'],'same_hyps_as_unmerged':$([ $same = true ] && echo True || echo False)}))" >> "$out/results.jsonl"
    done
  done
done
cat "$out/results.jsonl"
