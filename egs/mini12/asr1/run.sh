#!/usr/bin/env bash
# mini12: the Zipper-LoRA pipeline end to end on a 12-language corpus synthesised on the spot with
# espeak-ng, sized for a 2-core CPU (README.md explains the design and the demo shortcuts).
# Stages: 0 tools and models, 1 data prep, 2 features + encoder caches, 3 LID embeddings,
# 4 stage-1 training, 5 stage-2 SFT per method, 6 decoding, 7 scoring + RESULTS.md, 8 figures.
#   ./run.sh                                 # everything (what `make demo` runs)
#   ./run.sh --stage 5 --stop_stage 7 --methods "lora zipper-soft"
#   ./run.sh --config conf/multiseed.conf    # 3 seeds per method: mean and spread in RESULTS.md
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
low_hours=0.0016                # hours kept per low-resource language (~1/100+ of a high one)
whisper_dir=                    # default: $ZLORA_ROOT/.cache/whisper-base (converted in stage 0)
vocab_size=1500                 # sentencepiece vocabulary of the from-scratch LLM
nj=2
decode_sets="dev test"
train_opts=                     # extra "--key value" overrides for every training run
threads=                        # torch threads per process (default: all cores)

help_message="Usage: $0 [--stage N] [--stop_stage N] [--methods \"lora zipper-soft ...\"] [--seeds \"0 1 2\"]"
. ./path.sh
. utils/parse_options.sh

[ -n "$whisper_dir" ] || whisper_dir="${ZLORA_CACHE:-$ZLORA_ROOT/.cache}/whisper-base"
[ -z "$threads" ] || export OMP_NUM_THREADS="$threads"
read -r -a extra_train_opts <<< "$train_opts"
csv() { local IFS=,; echo "$*"; }
languages=$(csv $high $low)
lid=exp/lid/lid.safetensors
common=(--languages "[$languages]" --model.encoder.whisper_dir "$whisper_dir"
        --model.llm.tokenizer data/lang/spm.model)

label() {  # method -> row label in RESULTS.md (the paper's names)
  case "$1" in
    stage1) echo "Foundation (stage 1)" ;;
    lora) echo "Vanilla-LoRA" ;;
    independent) echo "Independent-LoRA" ;;
    flylora) echo "FlyLoRA" ;;
    zipper-static) echo "Zipper-LoRA-Static" ;;
    zipper-hard) echo "Zipper-LoRA-Hard" ;;
    zipper-soft) echo "Zipper-LoRA-Soft" ;;
    zipper-soft-initb) echo "Zipper-LoRA-Soft + initial-B" ;;
    *) echo "$1" ;;
  esac
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: tools and the pretrained Whisper-base encoder"
  command -v espeak-ng >/dev/null || { log "espeak-ng is missing: run 'make install' (apt-get install espeak-ng)"; exit 1; }
  python -m zlora.bin.convert_whisper "$whisper_dir"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: synthesise the corpus ($synth_config)"
  python -m zlora.bin.synth_mini12 --out data --config "$synth_config" \
    --high "[$(csv $high)]" --low "[$(csv $low)]"
  log "stage 1: low-resource subset ($low_hours h per language) and the stage-2 training set"
  utils/subset_data_dir.sh --hours "$low_hours" --per-lang --seed 1 data/train_low_full data/train_low
  utils/combine_data.sh data/train_sft data/train_high data/train_low
  for set in foundation foundation_dev train_sft dev test; do
    utils/validate_data_dir.sh --no-audio-check "data/$set"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: log-mel features, then caches of the frozen encoder (all 6 layers: stage 1; bottom 4: stage 2)"
  for set in foundation foundation_dev train_sft dev test; do
    python -m zlora.bin.dump_feats --data "data/$set" --out "dump/$set" --nj "$nj"
  done
  for set in foundation foundation_dev; do
    python -m zlora.bin.dump_encoder --whisper "$whisper_dir" --feats "dump/$set/feats.scp" \
      --layers 6 --out "dump/$set/enc6"
  done
  python -m zlora.bin.dump_encoder --whisper "$whisper_dir" --feats dump/train_sft/feats.scp \
    --layers 4 --out dump/train_sft/enc4
  for set in dev test; do
    python -m zlora.bin.dump_encoder --whisper "$whisper_dir" --feats "dump/$set/feats.scp" \
      --layers 4 6 --out "dump/$set/enc4" "dump/$set/enc6"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: Whisper LID embeddings (router input, §IV-E) and their cosine heatmap (Fig. 7)"
  python -m zlora.bin.extract_lid --whisper "$whisper_dir" --langs "$languages" \
    --heatmap exp/lid/fig7_lid_cosine.png "$lid"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: tokenizer and stage-1 (foundation) training"
  python -m zlora.bin.train_tokenizer --text data/foundation/text data/train_sft/text \
    --vocab_size "$vocab_size" --languages "$languages" --out data/lang/spm
  python -m zlora.bin.train --config "$stage1_config" "${common[@]}" --resume true "${extra_train_opts[@]}"
fi

stage2_exp() { echo "exp/stage2/${1}_seed${2}"; }

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for seed in $seeds; do
    for method in $methods; do
      log "stage 5: stage-2 SFT, $method, seed $seed"
      init_b=()
      if [ "$method" = zipper-soft-initb ]; then  # Initial-B: B banks of the converged Zipper-Soft run
        init_b=(--adapter.init_b_from "$(stage2_exp zipper-soft "$seed")/final/adapter.safetensors")
      fi
      python -m zlora.bin.train --config "$stage2_dir/$method.yaml" "${common[@]}" \
        --exp_dir "$(stage2_exp "$method" "$seed")" --seed "$seed" "${init_b[@]}" \
        --resume true "${extra_train_opts[@]}"
    done
  done
fi

runs=("stage1:0:exp/stage1:enc6")
for seed in $seeds; do
  for method in $methods; do runs+=("$method:$seed:$(stage2_exp "$method" "$seed"):enc4"); done
done

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  for run in "${runs[@]}"; do
    IFS=: read -r method seed exp feats <<< "$run"
    for set in $decode_sets; do
      log "stage 6: decode $set with $exp"
      python -m zlora.bin.decode --config "$decode_config" --exp "$exp" --data "data/$set" \
        --feats "dump/$set/$feats/feats.scp" --out "$exp/decode_$set" --nj "$nj"
    done
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  scores=()
  for run in "${runs[@]}"; do
    IFS=: read -r method seed exp feats <<< "$run"
    for set in $decode_sets; do
      python -m zlora.bin.score --ref "data/$set/text" --hyp "$exp/decode_$set/text" \
        --utt2lang "data/$set/utt2lang" --outdir "$exp/decode_$set/score" \
        --method "$(label "$method")" --regime full --seed "$seed" --test_set "$set" --exp "$exp"
      scores+=("$exp/decode_$set/score")
    done
  done
  log "stage 7: RESULTS.md"
  python -m zlora.bin.report --out RESULTS.md --title "mini12 (synthetic speech, 2-core CPU demo)" \
    --high "$(csv $high)" --low "$(csv $low)" --baseline Vanilla-LoRA "${scores[@]}"
  cat RESULTS.md
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: figures"
  mkdir -p figures
  scores=()
  for method in $methods; do scores+=("$(stage2_exp "$method" "${seeds%% *}")/decode_test/score"); done
  python -m zlora.bin.plot radar --out figures/fig5_radar.png --langs "$languages" "${scores[@]}"
  python -m zlora.bin.plot relchange --out figures/fig6_relchange.png --baseline Vanilla-LoRA "${scores[@]}"
  python -m zlora.bin.plot lid --out figures/fig7_lid.png "$lid"
  python -m zlora.bin.plot loss --out figures/loss.png exp/stage1/metrics.jsonl
  seed=${seeds%% *}
  if [[ " $methods " == *" zipper-soft "* ]]; then    # where each language leans on its own ranks
    zs=$(stage2_exp zipper-soft "$seed")
    python -m zlora.bin.router_probs --exp "$zs" --out "$zs/router_p.json"
    python -m zlora.bin.plot router --out figures/router_p.png "$zs/router_p.json"
  fi
  if [[ " $methods " == *" lora "* && " $methods " == *" zipper-soft "* ]]; then   # Fig. 8
    for m in lora zipper-soft; do
      python -m zlora.bin.dump_embeddings --exp "$(stage2_exp "$m" "$seed")" --data data/test \
        --feats dump/test/enc4/feats.scp --out "$(stage2_exp "$m" "$seed")/embeddings_test.safetensors"
    done
    python -m zlora.bin.plot tsne --out figures/fig8_tsne.png --utt2lang data/test/utt2lang \
      "Vanilla-LoRA=$(stage2_exp lora "$seed")/embeddings_test.safetensors" \
      "Zipper-LoRA-Soft=$(stage2_exp zipper-soft "$seed")/embeddings_test.safetensors"
  fi
fi
log "done"
