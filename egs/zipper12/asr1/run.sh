#!/usr/bin/env bash
# zipper12: the paper's real-corpus setup (Zipper-LoRA, §V, Table I) for GPU clusters. Stages: 0 check
# inputs, 1 data prep, 2 audio shards, 3 LID, 4 stage-1 training, 5 stage-2 SFT per method, 6 decoding,
# 7 scoring + exp/RESULTS_<variant>*.md, 8 figures. Each is `python -m zlora.bin.<verb>` (zlora.bin.chain:
# --cmd local|slurm) or torchrun; a run writes only data/, dump/, exp/. ./run.sh --help lists the options;
# README.md has the data layout, an example command line, compute, multi-node and SLURM use.
set -euo pipefail

log() { echo "$(basename "$0") $(date '+%Y-%m-%d %H:%M:%S') $*" >&2; }

stage=0                    # first stage to run (0-8)
stop_stage=8               # last stage to run
variant=lite_1h            # lite_1h | lite_30h: 1 or 30 h per low-resource language (Table VI, Fig. 6)
plan=                      # data plan (default: conf/data/$variant.yaml); its unions name the test sets
hours_scale=1              # multiplies every hours budget of the plan (a pilot run: 0.01)
regimes="chunked full"     # encoder regimes (§IV-F): chunked and non-chunked ("full")
methods="lora independent flylora zipper-static zipper-hard zipper-soft zipper-soft-initb"  # conf/stage2/<method>_<regime>.yaml
baseline=lora              # method of the relative change (RESULTS, Fig. 6); none if not in --methods
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
cmd=local                  # local | slurm: where stages 1-3, 6, 7 run their jobs (zlora.bin.chain --cmd)
sbatch_opts=               # --cmd slurm: extra sbatch options, e.g. "--partition gpu --gres gpu:1"
ngpu=4                     # GPUs per node (§V-B: 4 x A800 80 GB)
nnodes=1                   # multi-node: run stages 4-5 on every node with its --node_rank
node_rank=0                # this node: 0 .. nnodes-1
rdzv_id=zipper12           # prefix: every torchrun job gets its own id, <prefix>-<job> (same on all nodes)
rdzv_backend=c10d          # torchrun rendezvous backend
rdzv_endpoint=localhost:29400   # multi-node: host:port of node 0, reachable from every node
nj=32                      # CPU processes of each data set's audio shards
shard_jobs=1               # data sets sharded at once (slurm: array tasks at once)
decode_nj=4                # decoding processes, one GPU each (local: per model; slurm: models at once)
train_opts=                # extra "--key value" overrides for every training run
decode_opts=               # extra "--key value" overrides for every decoding (e.g. --decoding.beam_size 4)

help_message="Usage: $0 [--stage N] [--stop_stage N] [--variant lite_1h|lite_30h] --whisper_dir DIR --llm_dir DIR --<corpus> DIR ..."
. ./path.sh
. utils/parse_options.sh
[[ "$cmd" == local || "$cmd" == slurm ]] || { log "--cmd $cmd: expected local or slurm"; exit 1; }  # before training

[ -n "$plan" ] || plan="conf/data/${variant}.yaml"
sft_train=train_sft_${variant} lid=exp/lid/lid.safetensors
source_tests="test_source test_source_ws_net" target_tests="test_target_${variant} test_target_ls_other"  # unions
stage1_langs=en,fr,th,zh stage2_langs=de,es,fr,ru,vi,it,en,th,ar,ja,ko,pt,zh
target_high=de,es,fr,ru,vi,it,en,th target_low=ar,ja,ko,pt
roots=(--root_flag_prefix "")   # a missing corpus's hint names this script's --<corpus> option
for c in librispeech mls commonvoice msr86k wenetspeech; do roots+=("--roots.$c" "${!c:-null}"); done  # null: not given
read -r -a extra_train_opts <<< "$train_opts"; read -r -a extra_decode_opts <<< "$decode_opts"
train() {  # JOB CONFIG ARGS...: one torchrun training (a failed rank's error last, no launcher traceback)
  python -m zlora.bin.torchrun --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$ngpu" --rdzv_backend "$rdzv_backend" \
    --rdzv_endpoint "$rdzv_endpoint" --rdzv_id "$rdzv_id-$1" -m zlora.bin.train --config "$2" "${@:3}" \
    --model.encoder.whisper_dir "$whisper_dir" --model.llm.model_dir "$llm_dir" --resume true "${extra_train_opts[@]}"; }
chain() { local stage_log=$1; shift; python -m zlora.bin.chain --cmd "$cmd" --sbatch_opts "$sbatch_opts" --log_dir "exp/log/$stage_log" "$@"; }
csv() { local IFS=,; echo "$*"; }
# REGIME's runs, stage 1 first (names without spaces), and the tests each is decoded on: stage 1 the
# source domain (Table II), stage 2 the source (III) and target (IV-VI) domains
exps() { echo "exp/stage1_$1"; for m in $methods; do echo "exp/${variant}/stage2_$1_$m"; done; }
tests_of() { case "$1" in exp/stage1_*) echo "$source_tests" ;; *) echo "$source_tests $target_tests" ;; esac; }
decodes() {  # REGIMES SETS: the decode dirs of those regimes' runs on those sets, one a line
  local r e s; for r in $1; do for e in $(exps "$r"); do for s in $(tests_of "$e"); do
    [[ " $2 " != *" $s "* ]] || echo "$e/decode_$s"; done; done; done; }
baseline_run() { echo "exp/${variant}/stage2_$1_${baseline}"; }                                 # REGIME
run_baseline() { [[ " $methods " == *" $baseline "* ]]; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: check the models and the corpora"
  python -m zlora.bin.prep_check --whisper_dir "$whisper_dir" --llm_dir "$llm_dir" --n_mels 128 --plan "$plan" "${roots[@]}"
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data prep and Table-I sampling ($plan, hours x $hours_scale)"
  chain stage1 zlora.bin.prep_plan --config "$plan" --hours_scale "$hours_scale" "${roots[@]}"
fi
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: FLAC audio shards (training and decoding read raw audio; log-mel on the device)" && cmds=()
  for set in train_stage1 "$sft_train" $source_tests $target_tests; do
    cmds+=(--- zlora.bin.dump_audio --data "data/$set" --out "dump/$set" --nj "$nj")
  done
  chain stage2 --nj "$shard_jobs" "${cmds[@]}"
fi
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: Whisper LID embeddings for the Zipper router (Eq. 16)"
  chain stage3 zlora.bin.extract_lid --whisper_dir "$whisper_dir" --languages "$stage2_langs" --heatmap exp/lid/lid_cosine.png "$lid"
fi
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  for regime in $regimes; do
    log "stage 4: stage-1 training, $regime regime ($stage1_langs)"
    train "stage1-$regime" "conf/train_stage1_$regime.yaml" --exp_dir "exp/stage1_$regime" \
      --data.train data/train_stage1 --data.train_feats dump/train_stage1/audio.scp
  done
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for regime in $regimes; do for method in $methods; do
    log "stage 5: stage-2 SFT, $method, $regime regime ($variant)"
    opts=()                    # the router's LID input; Initial-B: B from the finished Zipper-Soft run
    case "$method" in zipper-hard|zipper-soft*) opts+=(--adapter.conf.lid_embeddings "$lid") ;; esac
    [ "$method" != zipper-soft-initb ] || opts+=(--adapter.init_b_from "exp/${variant}/stage2_${regime}_zipper-soft/final/adapter.safetensors")
    train "$variant-$regime-$method" "conf/stage2/${method}_$regime.yaml" --exp_dir "exp/$variant/stage2_${regime}_$method" \
      --init_from "exp/stage1_$regime" --data.train "data/$sft_train" --data.train_feats "dump/$sft_train/audio.scp" "${opts[@]}"
  done; done
fi
if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: decoding, one process per model for all its test sets (logs: exp/log/stage6)"
  models_at_once=1 per_model=$decode_nj cmds=()   # local: one model at a time over decode_nj GPUs
  [ "$cmd" = local ] || models_at_once=$decode_nj per_model=1
  for regime in $regimes; do for exp in $(exps "$regime"); do
    datas=() feats=() outs=()
    for set in $(tests_of "$exp"); do datas+=("data/$set") feats+=("dump/$set/audio.scp") outs+=("$exp/decode_$set"); done
    cmds+=(--- zlora.bin.decode --exp "$exp" --feats_type raw --data "[$(csv "${datas[@]}")]"
           --feats "[$(csv "${feats[@]}")]" --out "[$(csv "${outs[@]}")]" --nj "$per_model" "${extra_decode_opts[@]}")
  done; done
  chain stage6 --nj "$models_at_once" "${cmds[@]}"
fi
if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: scoring (row labels from each run's resolved config), exp/RESULTS_${variant}{,_source}.md" && cmds=()
  for regime in $regimes; do
    mapfile -t dirs < <(decodes "$regime" "$source_tests $target_tests")
    cmds+=(--- zlora.bin.score_decodes --regime "$regime" "${dirs[@]}")
  done
  chain stage7 --nj 2 "${cmds[@]}"
  run_baseline || log "stage 7: baseline $baseline is not among --methods ($methods): no relative change"
  mapfile -t src < <(decodes "$regimes" "$source_tests"); mapfile -t tgt < <(decodes "$regimes" "$target_tests")
  base=$(baseline_run "${regimes%% *}")           # stands for its row label (its resolved config)
  python -m zlora.bin.chain \
    zlora.bin.report --out "exp/RESULTS_${variant}.md" --title "zipper12 ($variant): target domain" \
      --high "$target_high" --low "$target_low" --baseline "$base" "${tgt[@]/%//score}" --- \
    zlora.bin.report --out "exp/RESULTS_${variant}_source.md" --title "zipper12 ($variant): source domain" \
      --high "$stage1_langs" --baseline "$base" "${src[@]/%//score}"
fi
if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  figures="exp/figures_${variant}" cmds=()
  log "stage 8: figures in $figures" && mkdir -p "$figures"
  for regime in $regimes; do
    mapfile -t scores < <(decodes "$regime" "test_target_${variant}")
    cmds+=(--- zlora.bin.plot radar --out "$figures/fig5_radar_${regime}.png" --languages "$target_high,$target_low" "${scores[@]/%//score}")
    if run_baseline && [ "${#scores[@]}" -gt 1 ]; then
      cmds+=(--- zlora.bin.plot relchange --out "$figures/fig6_relchange_${regime}.png" --baseline "$(baseline_run "$regime")" "${scores[@]/%//score}")
    else log "stage 8: no Fig. 6: baseline $baseline is not among --methods ($methods) or is the only one"; fi
  done
  python -m zlora.bin.chain "${cmds[@]}" --- zlora.bin.plot lid --out "$figures/fig7_lid.png" "$lid"
fi
log "done"
