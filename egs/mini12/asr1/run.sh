#!/usr/bin/env bash
# mini12: the Zipper-LoRA pipeline end to end on a 12-language corpus synthesised on the spot with
# espeak-ng, sized for a 2-core CPU (README.md explains the design and the demo shortcuts).
# Stages: 0 tools and models, 1 data prep, 2 features + encoder caches, 3 LID embeddings,
# 4 stage-1 training, 5 stage-2 SFT per method, 6 decoding, 7 scoring + exp/RESULTS.md, 8 figures.
# A run writes only data/, dump/ and exp/ (results: exp/RESULTS.md, exp/figures/); the committed
# RESULTS.md and figures/ are the reference, and the run ends by printing its averages beside them.
# The second paper's methods (LoRA language experts, MoLE, KD) are the sibling recipe ../lre1.
#   ./run.sh                                 # everything (what `make demo` runs)
#   ./run.sh --stage 5 --stop_stage 7 --methods "lora zipper-soft"
#   ./run.sh --config conf/multiseed.conf    # 3 seeds per method: mean and spread in exp/RESULTS.md
set -euo pipefail

log() { echo "$(basename "$0") $(date '+%Y-%m-%d %H:%M:%S') $*" >&2; }

stage=0
stop_stage=8
high="de es fr ru vi it en zh"  # high-resource languages (the paper's §V-A target set ...)
low="ar ja ko pt"               # ... and the low-resource ones (Thai: espeak-ng can't speak it)
methods="lora independent flylora zipper-static zipper-hard zipper-soft zipper-soft-initb"
seeds="0"                       # stage-2 seeds; several give mean +- std per language in RESULTS.md
synth_config=conf/synth.yaml
stage1_config=conf/train_stage1.yaml
stage2_dir=conf/stage2          # one YAML per method: $stage2_dir/<method>.yaml
decode_config=conf/decode.yaml
low_hours=0.0004                # per low-resource language: 1-2 utterances, <= 1/100 of a high one
whisper_dir=                    # default: $ZLORA_CACHE/whisper-base (converted in stage 0)
vocab_size=1500                 # sentencepiece vocabulary of the from-scratch LLM
prompts=conf/prompts_tags.yaml  # its prompts: one piece each (must match model.prompts_file)
nj=2                            # synthesis, feature-dump and encoder-cache processes
decode_nj=1                     # decoding jobs per set (a spawned job pays ~8 s of imports)
run_nj=2                        # stage-2 trainings/decodings at once, cores/run_nj threads each (exp/log/)
sft_cached=5                    # encoder layers cached for stage 2 (model.encoder.cached_layers there)
decode_sets="dev test"
train_opts=                     # extra "--key value" overrides for every training run
stage1_opts=                    # ... and for stage 1 only (after train_opts)
threads=                        # torch threads per process (default: all cores)
baseline=Vanilla-LoRA           # the row relative changes are measured against (Fig. 6)
reference=RESULTS.md            # committed results printed beside this run's at the end ('' for none)

help_message="Usage: $0 [--stage N] [--stop_stage N] [--methods \"lora zipper-soft ...\"] [--seeds \"0 1 2\"]"
. ./path.sh
. utils/parse_options.sh

[ -n "$whisper_dir" ] || whisper_dir="${ZLORA_CACHE:-$ZLORA_ROOT/.cache}/whisper-base"
[ -z "$threads" ] || export OMP_NUM_THREADS="$threads"
read -r -a extra_train_opts <<< "$train_opts"
read -r -a extra_stage1_opts <<< "$stage1_opts"
csv() { local IFS=,; echo "$*"; }
languages=$(csv $high $low)
lid=exp/lid/lid.safetensors
common=(--languages "[$languages]" --model.encoder.whisper_dir "$whisper_dir"
        --model.llm.tokenizer data/lang/spm.model)
sft_exps=()                     # the stage-2 runs, seed by seed
for seed in $seeds; do for m in $methods; do sft_exps+=("exp/stage2/${m}_seed$seed"); done; done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: tools and the pretrained Whisper-base encoder"
  command -v espeak-ng >/dev/null || { log "espeak-ng is missing: run 'make install' (apt-get install espeak-ng)"; exit 1; }
  python -m zlora.bin.convert_whisper "$whisper_dir"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: synthesise the corpus ($synth_config), subset the low-resource languages ($low_hours h each)"
  python -m zlora.bin.synth_mini12 --out data --config "$synth_config" --high "[$(csv $high)]" --low "[$(csv $low)]"
  utils/subset_data_dir.sh --hours "$low_hours" --per_lang --seed 1 data/train_low_full data/train_low
  utils/combine_data.sh data/train_sft data/train_high data/train_low
  python -m zlora.bin.imbalance --low "$(csv $low)" data/train_sft   # the paper: 1000:1; mini12 keeps >= 100:1
  for set in foundation foundation_dev train_sft dev test; do utils/validate_data_dir.sh --no_audio_check "data/$set"; done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: log-mel features, then caches of the frozen encoder (all 6 layers: stage 1; bottom $sft_cached: stage 2)"
  cmds=()                         # one zlora.bin.chain: the imports are paid once per stage
  for set in foundation foundation_dev train_sft dev test; do
    cmds+=(--- zlora.bin.dump_feats --data "data/$set" --out "dump/$set" --nj "$nj")
  done
  enc=(--- zlora.bin.dump_encoder --whisper_dir "$whisper_dir" --nj "$nj")
  for set in foundation foundation_dev; do
    cmds+=("${enc[@]}" --feats "dump/$set/feats.scp" --layers 6 --out "dump/$set/enc6")
  done
  cmds+=("${enc[@]}" --feats dump/train_sft/feats.scp --layers "$sft_cached" --out "dump/train_sft/enc$sft_cached")
  for set in dev test; do          # both caches in one pass: stage-1 and stage-2 models decode these
    cmds+=("${enc[@]}" --feats "dump/$set/feats.scp" --layers "$sft_cached" 6 --out "dump/$set/enc$sft_cached" "dump/$set/enc6")
  done
  python -m zlora.bin.chain "${cmds[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: Whisper LID embeddings (router input, §IV-E) and their cosine heatmap (Fig. 7)"
  python -m zlora.bin.extract_lid --whisper_dir "$whisper_dir" --languages "$languages" \
    --heatmap exp/lid/fig7_lid_cosine.png "$lid"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: tokenizer and stage-1 (foundation) training"
  python -m zlora.bin.chain \
    zlora.bin.train_tokenizer --text data/foundation/text data/train_sft/text \
      --vocab_size "$vocab_size" --languages "$languages" --out data/lang/spm \
      --prompts_file "$prompts" --prompt_symbols --- \
    zlora.bin.train --config "$stage1_config" "${common[@]}" --resume true "${extra_train_opts[@]}" "${extra_stage1_opts[@]}"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: stage-2 SFT of $methods, seed(s) $seeds ($run_nj at a time; logs: exp/log/stage5*)"
  first=() initb=()               # Initial-B starts from the converged Zipper-Soft run: after it
  for seed in $seeds; do
    for m in $methods; do
      cmd=(--- zlora.bin.train --config "$stage2_dir/$m.yaml" "${common[@]}" --exp_dir "exp/stage2/${m}_seed$seed"
           --seed "$seed" --resume true "${extra_train_opts[@]}")
      if [ "$m" != zipper-soft-initb ]; then first+=("${cmd[@]}"); else
        initb+=("${cmd[@]}" --adapter.init_b_from "exp/stage2/zipper-soft_seed$seed/final/adapter.safetensors"); fi
    done
  done
  [ "${#first[@]}" -eq 0 ] || python -m zlora.bin.chain --nj "$run_nj" --log_dir exp/log/stage5 "${first[@]}"
  [ "${#initb[@]}" -eq 0 ] || python -m zlora.bin.chain --nj "$run_nj" --log_dir exp/log/stage5_initb "${initb[@]}"
fi

decode() {  # EXP CACHE: one zlora.bin.decode of every $decode_sets set, from dump/<set>/CACHE
  local datas=() scps=() outs=() set
  for set in $decode_sets; do datas+=("data/$set") scps+=("dump/$set/$2/feats.scp") outs+=("$1/decode_$set"); done
  cmds+=(--- zlora.bin.decode --config "$decode_config" --exp "$1" --data "[$(csv "${datas[@]}")]"
         --feats "[$(csv "${scps[@]}")]" --out "[$(csv "${outs[@]}")]" --nj "$decode_nj")
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: decode $decode_sets with $((1 + ${#sft_exps[@]})) models ($run_nj at a time; logs: exp/log/stage6)"
  cmds=()
  decode exp/stage1 enc6
  for exp in "${sft_exps[@]}"; do decode "$exp" "enc$sft_cached"; done
  python -m zlora.bin.chain --nj "$run_nj" --log_dir exp/log/stage6 "${cmds[@]}"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: scoring (row labels from each run's resolved config) and exp/RESULTS.md"
  decodes=()
  for exp in exp/stage1 "${sft_exps[@]}"; do for set in $decode_sets; do decodes+=("$exp/decode_$set"); done; done
  python -m zlora.bin.score_decodes "${decodes[@]}"
  python -m zlora.bin.report --out exp/RESULTS.md --title "mini12 (synthetic speech, 2-core CPU demo)" \
    --high "$(csv $high)" --low "$(csv $low)" --baseline "$baseline" "${decodes[@]/%//score}"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: figures (exp/figures): Fig. 5-8, loss, router p"
  exps=()                         # one seed; runs are recognised by their resolved configs
  for m in $methods; do exps+=("exp/stage2/${m}_seed${seeds%% *}"); done
  python -m zlora.bin.figures --out exp/figures --languages "$languages" --baseline "$baseline" --lid "$lid" \
    --loss exp/stage1/metrics.jsonl --data data/test --feats "dump/test/enc$sft_cached/feats.scp" "${exps[@]}"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 7 ] && [ -n "$reference" ]; then
  python -m zlora.bin.compare_results --reference "$reference" exp/RESULTS.md
fi
log "done"
