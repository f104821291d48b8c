#!/usr/bin/env bash
# zipper12: the paper's real-corpus setup (Zipper-LoRA, §V, Table I) for GPU clusters.
# Stages as in egs/mini12: 0 check inputs, 1 data prep, 2 audio shards, 3 LID embeddings,
# 4 stage-1 training, 5 stage-2 SFT per method, 6 decoding, 7 scoring + RESULTS.md, 8 figures.
# Every stage is a `python -m zlora.bin.<verb>` call; see README.md for data layout, compute and
# multi-node use. Example:
#   ./run.sh --whisper_dir /models/whisper-large-v3 --llm_dir /models/Qwen3-1.7B \
#     --msr86k /corpora/msr86k --wenetspeech /corpora/wenetspeech --mls /corpora/mls \
#     --librispeech /corpora --commonvoice /corpora/cv-corpus-18.0-2024-06-14
set -euo pipefail

log() { echo "$(basename "$0") $(date '+%Y-%m-%d %H:%M:%S') $*" >&2; }

stage=0
stop_stage=8
variant=lite_1h            # lite_1h | lite_30h: 1 or 30 h per low-resource language (Table VI, Fig. 6)
regimes="chunked full"     # encoder regimes (§IV-F): chunked and non-chunked ("full")
methods="lora independent flylora zipper-static zipper-hard zipper-soft zipper-soft-initb"
# pretrained models: local Hugging Face dirs (no model hub access)
whisper_dir=               # Whisper-large-v3 (128 mels)
llm_dir=                   # Qwen3-1.7B
# corpus roots, official layouts (README.md, zlora/data/prep/<corpus>.py; python -m zlora.bin.prep_plan --help)
librispeech=               # dir holding LibriSpeech/
mls=                       # dir holding mls_<language>[_opus]/
commonvoice=               # cv-corpus-<version>/ (holding ar/ ja/ ko/ pt/ th/)
msr86k=                    # see zlora/data/prep/msr86k.py for the layout expected
wenetspeech=               # dir holding WenetSpeech.json and audio/
# compute
ngpu=4                     # GPUs per node (§V-B: 4 x A800 80 GB)
nnodes=1                   # multi-node: run this script on every node with its --node_rank
node_rank=0
rdzv_id=zipper12           # prefix: every torchrun job gets its own id, <prefix>-<job> (same on all nodes)
rdzv_backend=c10d
rdzv_endpoint=localhost:29400   # multi-node: host:port of node 0, reachable from every node
nj=32                      # CPU processes for the audio shards
decode_nj=4                # decoding processes (one GPU each)
train_opts=                # extra "--key value" overrides for every training run

help_message="Usage: $0 [--stage N] [--stop_stage N] [--variant lite_1h|lite_30h] --whisper_dir DIR --llm_dir DIR --<corpus> DIR ..."
. ./path.sh
. utils/parse_options.sh

sft_train=train_sft_${variant}
# One multilingual test set per table (unions in conf/data/${variant}.yaml)
source_tests="test_source test_source_ws_net"
target_tests="test_target_${variant} test_target_ls_other"
stage1_langs=en,fr,th,zh
stage2_langs=de,es,fr,ru,vi,it,en,th,ar,ja,ko,pt,zh
plan="conf/data/${variant}.yaml"
corpora="librispeech mls commonvoice msr86k wenetspeech"   # the plans' corpora: one root option each
roots=()
for corpus in $corpora; do roots+=("--roots.${corpus}" "${!corpus:-null}"); done   # null: not given
models=(--model.encoder.whisper_dir "$whisper_dir" --model.llm.model_dir "$llm_dir")
read -r -a extra_train_opts <<< "$train_opts"
launcher=(torchrun --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$ngpu"
          --rdzv_backend "$rdzv_backend" --rdzv_endpoint "$rdzv_endpoint")
lid=exp/lid/lid.safetensors

label() {  # method -> row label in RESULTS.md
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
  log "stage 0: check the models and the corpora"
  python -m zlora.bin.prep_check --whisper_dir "$whisper_dir" --llm_dir "$llm_dir" --n_mels 128 \
    --plan "$plan" "${roots[@]}"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data prep and Table-I sampling ($plan)"
  python -m zlora.bin.prep_plan --config "$plan" "${roots[@]}"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: FLAC audio shards (training and decoding read raw audio; log-mel on the device)"
  for set in train_stage1 "$sft_train" $source_tests $target_tests; do
    python -m zlora.bin.dump_audio --data "data/$set" --out "dump/$set" --nj "$nj"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: Whisper LID embeddings for the Zipper router (Eq. 16)"
  python -m zlora.bin.extract_lid --whisper_dir "$whisper_dir" --languages "$stage2_langs" \
    --heatmap exp/lid/lid_cosine.png "$lid"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  for regime in $regimes; do
    log "stage 4: stage-1 training, $regime regime ($stage1_langs)"
    "${launcher[@]}" --rdzv_id "${rdzv_id}-stage1-${regime}" \
      -m zlora.bin.train --config "conf/train_stage1_${regime}.yaml" \
      --exp_dir "exp/stage1_${regime}" "${models[@]}" \
      --data.train data/train_stage1 --data.train_feats dump/train_stage1/audio.scp \
      --resume true "${extra_train_opts[@]}"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for regime in $regimes; do
    for method in $methods; do
      log "stage 5: stage-2 SFT, $method, $regime regime ($variant)"
      init_b=()
      if [ "$method" = zipper-soft-initb ]; then  # Initial-B: B from the converged Zipper-Soft run
        init_b=(--adapter.init_b_from "exp/${variant}/stage2_${regime}_zipper-soft/final/adapter.safetensors")
      fi
      lid_opt=()
      case "$method" in zipper-hard|zipper-soft*) lid_opt=(--adapter.conf.lid_embeddings "$lid") ;; esac
      "${launcher[@]}" --rdzv_id "${rdzv_id}-${variant}-${regime}-${method}" \
        -m zlora.bin.train --config "conf/stage2/${method}_${regime}.yaml" \
        --exp_dir "exp/${variant}/stage2_${regime}_${method}" --init_from "exp/stage1_${regime}" \
        "${models[@]}" --data.train "data/$sft_train" --data.train_feats "dump/$sft_train/audio.scp" \
        "${lid_opt[@]}" "${init_b[@]}" --resume true "${extra_train_opts[@]}"
    done
  done
fi

# every trained model with its test sets: stage-1 models on the source domain (Table II),
# stage-2 models on the source (Table III) and target (Tables IV-VI) domains
runs=()
for regime in $regimes; do
  runs+=("stage1:${regime}:exp/stage1_${regime}")
  for method in $methods; do runs+=("${method}:${regime}:exp/${variant}/stage2_${regime}_${method}"); done
done

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  for run in "${runs[@]}"; do
    IFS=: read -r method regime exp <<< "$run"
    tests="$source_tests"
    [ "$method" = stage1 ] || tests="$source_tests $target_tests"
    for set in $tests; do
      log "stage 6: decode $set with $exp"
      python -m zlora.bin.decode --exp "$exp" --data "data/$set" --feats_type raw --feats "dump/$set/audio.scp" \
        --out "$exp/decode_$set" --nj "$decode_nj"
    done
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  source_scores=()
  target_scores=()
  for run in "${runs[@]}"; do
    IFS=: read -r method regime exp <<< "$run"
    tests="$source_tests"
    [ "$method" = stage1 ] || tests="$source_tests $target_tests"
    for set in $tests; do
      log "stage 7: score $exp/decode_$set"
      python -m zlora.bin.score --ref "data/$set/text" --hyp "$exp/decode_$set/text" \
        --utt2lang "data/$set/utt2lang" --out "$exp/decode_$set/score" \
        --method "$(label "$method")" --regime "$regime" --test_set "$set" --exp "$exp"
      case "$set" in
        test_source*) source_scores+=("$exp/decode_$set/score") ;;
        *) target_scores+=("$exp/decode_$set/score") ;;
      esac
    done
  done
  python -m zlora.bin.report --out "RESULTS_${variant}.md" --title "zipper12 ($variant): target domain" \
    --high de,es,fr,ru,vi,it,en,th --low ar,ja,ko,pt --baseline Vanilla-LoRA "${target_scores[@]}"
  python -m zlora.bin.report --out "RESULTS_${variant}_source.md" --baseline Vanilla-LoRA \
    --title "zipper12 ($variant): source domain" --high en,fr,th,zh "${source_scores[@]}"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: figures"
  mkdir -p "figures_${variant}"
  for regime in $regimes; do
    scores=()
    for method in $methods; do
      scores+=("exp/${variant}/stage2_${regime}_${method}/decode_test_target_${variant}/score")
    done
    python -m zlora.bin.plot radar --out "figures_${variant}/fig5_radar_${regime}.png" \
      --languages de,es,fr,ru,vi,it,en,th,ar,ja,ko,pt "${scores[@]}"
    python -m zlora.bin.plot relchange --out "figures_${variant}/fig6_relchange_${regime}.png" \
      --baseline Vanilla-LoRA "${scores[@]}"
  done
  python -m zlora.bin.plot lid --out "figures_${variant}/fig7_lid.png" "$lid"
fi
log "done"
