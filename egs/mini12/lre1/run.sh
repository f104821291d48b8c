#!/usr/bin/env bash
# mini12, the second paper (arXiv 2506.21555): LoRA language experts, LoRA-MoLE, LoRA-KD and
# language-agnostic decoding, on the data, features, stage-1 model and LID embeddings of ../asr1
# (run that first, stages 0-7). README.md explains the methods and what was measured.
# Stages: 0 link asr1's outputs, 1 4-layer encoder caches, a linear LID probe and one LoRA expert per language,
# 2 LoRA-MoLE and LoRA-KD (layer-wise, output-only), 3 decoding (the language given, and
# language-agnostic), scoring, exp/RESULTS.md beside asr1's rows, LID confusion figures (exp/figures/);
# 4 (opt-in: --stop_stage 4) the experts' gap, like for like (conf/gap/, exp/RESULTS_gap.md).
# Stage 0 links asr1's data/, dump/, exp/stage1, exp/stage2 and exp/lid here; through those links
# this recipe adds data/*_<lang>, dump/*/enc4 and Zipper-LoRA-Soft's decode_*_wlid* to asr1's
# dirs (where the combined recipe put them); its own runs go to exp/lre/, its results to exp/.
#   ./run.sh                         # after ../asr1/run.sh
#   ./run.sh --stage 3               # decode and score again
set -euo pipefail

log() { echo "$(basename "$0") $(date '+%Y-%m-%d %H:%M:%S') $*" >&2; }

stage=0
stop_stage=3
asr1=../asr1                    # the asr1 recipe dir whose outputs this recipe reuses
high="de es fr ru vi it en zh"  # asr1's languages (its stage-1 model's, in that order)
low="ar ja ko pt"
methods="lora independent flylora zipper-static zipper-hard zipper-soft zipper-soft-initb"
seeds="0"                       # asr1's stage-2 runs shown beside these; Zipper-LoRA-Soft of the first
                                #   seed is also decoded language-agnostic
asr_sets="dev test"             # the sets asr1 decoded and scored (its decode_sets)
lre_sets="test"                 # stage 3 decodes these sets
decode_config=conf/decode.yaml
whisper_dir=                    # default: $ZLORA_CACHE/whisper-base (asr1's stage 0 converted it)
sft_cached=5                    # asr1's stage-2 encoder cache (Zipper-LoRA-Soft reads dump/*/enc5)
lre_cached=4                    # these methods adapt the top 2 encoder layers (MoLE needs two)
lid_extra=foundation            # more labelled sets for the LID probe and MoLE's LID phase only ('' for
                                #   none): train_sft holds 1-2 utterances of a low-resource language
decode_nj=1
train_opts=                     # extra "--key value" overrides for every training run
threads=                        # torch threads per process (default: all cores)
reference=                      # printed beside this run's rows at the end (default: $asr1/RESULTS.md)

help_message="Usage: $0 [--stage N] [--stop_stage N] [--asr1 DIR] [--lre_sets \"test\"]"
. ./path.sh
. utils/parse_options.sh

[ -n "$whisper_dir" ] || whisper_dir="${ZLORA_CACHE:-$ZLORA_ROOT/.cache}/whisper-base"
[ -n "$reference" ] || reference="$asr1/RESULTS.md"
[ -z "$threads" ] || export OMP_NUM_THREADS="$threads"
read -r -a extra_train_opts <<< "$train_opts"
csv() { local IFS=,; echo "$*"; }
languages=$(csv $high $low)
common=(--languages "[$languages]" --model.encoder.whisper_dir "$whisper_dir"
        --model.llm.tokenizer data/lang/spm.model)
zs=exp/stage2/zipper-soft_seed${seeds%% *}
linked="data dump exp/stage1 exp/stage2 exp/lid"
lid_data=() lid_feats=()        # the LID-only sets, for the probe (stage 1) and MoLE (stage 2)
for set in $lid_extra; do lid_data+=("data/$set") lid_feats+=("dump/$set/enc$lre_cached/feats.scp"); done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: link the outputs of $asr1 ($linked)"
  asr1_abs=$(cd "$asr1" && pwd)
  mkdir -p exp
  for p in $linked; do            # every check before any link: a failed stage 0 links nothing
    [ -e "$asr1_abs/$p" ] || { log "$asr1/$p is missing: run $asr1/run.sh first (stages 0-7)"; exit 1; }
    [ ! -e "$p" ] || [ -L "$p" ] || { log "$p exists and is not a link to $asr1: move it away"; exit 1; }
  done
  for p in $linked; do ln -sfn "$asr1_abs/$p" "$p"; done
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: caches of the bottom $lre_cached encoder layers, each language's stage-2 data, one LoRA expert per language"
  cmds=()
  for set in train_sft dev $lre_sets $lid_extra; do
    cmds+=(--- zlora.bin.dump_encoder --whisper_dir "$whisper_dir" --feats "dump/$set/feats.scp"
           --layers "$lre_cached" --out "dump/$set/enc$lre_cached")
  done
  for lang in $high $low; do cmds+=(--- zlora.bin.subset_data_dir --lang "$lang" data/train_sft "data/train_sft_$lang"); done
  # the LID reference: a linear probe on the frozen cache (class-balanced), also a LID source
  cmds+=(--- zlora.bin.train_lid_probe --data data/train_sft "${lid_data[@]}"
         --feats "dump/train_sft/enc$lre_cached/feats.scp" "${lid_feats[@]}"
         --languages "$languages" --out "exp/lre/probe_enc$lre_cached.safetensors"
         --eval_data data/dev --eval_feats "dump/dev/enc$lre_cached/feats.scp")
  for lang in $high $low; do      # §2.1: one expert per language, on that language's data only
    cmds+=(--- zlora.bin.train --config conf/expert.yaml "${common[@]}" --data.train "data/train_sft_$lang"
           --exp_dir "exp/lre/expert_$lang" --resume true "${extra_train_opts[@]}"
           --data.batch_size 1)    # last: a low-resource language's few utterances are one pack
  done
  python -m zlora.bin.chain "${cmds[@]}"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: LoRA-MoLE (§2.2), LoRA-KD layer-wise and output-only (§2.3)"
  experts=() banks=()             # in the order of --languages
  for lang in $high $low; do experts+=("exp/lre/expert_$lang") banks+=("exp/lre/expert_$lang/final/adapter.safetensors"); done
  python -m zlora.bin.chain \
    --- zlora.bin.train --config conf/mole.yaml "${common[@]}" --exp_dir exp/lre/mole \
          --adapter.conf.experts "[$(csv "${banks[@]}")]" --adapter.conf.lid_phase_data "[$(csv "${lid_data[@]}")]" \
          --adapter.conf.lid_phase_feats "[$(csv "${lid_feats[@]}")]" --resume true "${extra_train_opts[@]}" \
    --- zlora.bin.train --config conf/kd.yaml "${common[@]}" --exp_dir exp/lre/kd \
          --distill.experts "[$(csv "${experts[@]}")]" --resume true "${extra_train_opts[@]}" \
    --- zlora.bin.train --config conf/kd_output.yaml "${common[@]}" --exp_dir exp/lre/kd_output \
          --distill.experts "[$(csv "${experts[@]}")]" --resume true "${extra_train_opts[@]}"
fi

decode() {  # EXP FEATS OUT [OPTION...]: queue one decode of data/$set; OUT is scored with the others
  outs+=("$3")
  cmds+=(--- zlora.bin.decode --config "$decode_config" --exp "$1" --data "data/$set" --feats "$2"
         --out "$3" --nj "$decode_nj" "${@:4}")
}

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  asr_exps=(exp/stage1) scores=() # asr1's rows first, then these
  for seed in $seeds; do for m in $methods; do asr_exps+=("exp/stage2/${m}_seed$seed"); done; done
  for exp in "${asr_exps[@]}"; do for set in $asr_sets; do scores+=("$exp/decode_$set/score"); done; done
  for set in $lre_sets; do
    log "stage 3: decode $set: experts (the language given), MoLE, KD, and language-agnostic with LID"
    enc="dump/$set/enc$lre_cached/feats.scp" post="exp/lre/kd/decode_${set}_wlid/lid_posteriors.jsonl"
    cmds=() outs=() parts=()
    for lang in $high $low; do    # each language's utterances with its own expert
      cmds+=(--- zlora.bin.subset_data_dir --lang "$lang" "data/$set" "data/${set}_$lang"
             --- zlora.bin.decode --config "$decode_config" --exp "exp/lre/expert_$lang" --data "data/${set}_$lang"
                 --feats "$enc" --out "exp/lre/expert_$lang/decode_$set" --nj 1)
      parts+=("exp/lre/expert_$lang/decode_$set/text")
    done
    decode exp/lre/mole "$enc" "exp/lre/mole/decode_$set"
    decode exp/lre/mole "$enc" "exp/lre/mole/decode_${set}_mole" --lang.mode mole
    decode exp/lre/kd "$enc" "exp/lre/kd/decode_$set"
    decode exp/lre/kd "$enc" "exp/lre/kd/decode_${set}_wlid" --lang.mode whisper_lid \
      --lang.feats "dump/$set/feats.scp" --lang.whisper_dir "$whisper_dir"   # Whisper LID: once per set, reused below
    decode exp/lre/kd_output "$enc" "exp/lre/kd_output/decode_$set"
    decode "$zs" "dump/$set/enc$sft_cached/feats.scp" "$zs/decode_${set}_wlid" --lang.mode whisper_lid --lang.posteriors "$post"
    decode "$zs" "dump/$set/enc$sft_cached/feats.scp" "$zs/decode_${set}_wlidmix" --lang.mode whisper_lid \
      --lang.router_input mixture --lang.posteriors "$post"
    probe=(--lang.mode probe --lang.probe "exp/lre/probe_enc$lre_cached.safetensors")   # reads the enc4 cache
    decode exp/lre/kd "$enc" "exp/lre/kd/decode_${set}_probe" "${probe[@]}"
    decode "$zs" "dump/$set/enc$sft_cached/feats.scp" "$zs/decode_${set}_probe" "${probe[@]}" --lang.feats "$enc"
    decode "$zs" "dump/$set/enc$sft_cached/feats.scp" "$zs/decode_${set}_probemix" "${probe[@]}" --lang.feats "$enc" \
      --lang.router_input mixture
    experts="exp/lre/experts/decode_$set"   # the experts' hypotheses as one row
    cmds+=(--- zlora.bin.combine_text --out "$experts/text" "${parts[@]}"
           --- zlora.bin.score --ref "data/$set/text" --hyp "$experts/text" --utt2lang "data/$set/utt2lang"
               --out "$experts/score" --method "LoRA language experts" --regime full --seed 0
               --test_set "$set" --exp exp/lre/experts
           --- zlora.bin.score_decodes "${outs[@]}")
    python -m zlora.bin.chain "${cmds[@]}"
    scores+=("$experts/score" "${outs[@]/%//score}")
    python -m zlora.bin.plot confusion --out "exp/figures/lid_confusion_$set.png" --languages "$languages" \
      "MoLE classifier=exp/lre/mole/decode_${set}_mole/lid.json" \
      "linear probe (enc$lre_cached)=exp/lre/kd/decode_${set}_probe/lid.json" \
      "Whisper-base LID=exp/lre/kd/decode_${set}_wlid/lid.json"
  done
  log "stage 3: exp/RESULTS.md: asr1's rows, these rows, LID accuracy"
  python -m zlora.bin.report --out exp/RESULTS.md --title "mini12 (synthetic speech, 2-core CPU demo)" \
    --high "$(csv $high)" --low "$(csv $low)" --baseline Vanilla-LoRA --lid_from_decodes "${scores[@]}"
  python -m zlora.bin.compare_results --reference "$reference" exp/RESULTS.md
fi
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then   # opt-in (stop_stage defaults to 3)
  log "stage 4: the experts' gap, like for like: Vanilla-LoRA on their two layers, then with their budget"
  gap=(lora_top2 lora_top2_budget) cmds=() scores=()
  for g in "${gap[@]}"; do
    cmds+=(--- zlora.bin.train --config "conf/gap/$g.yaml" "${common[@]}" --resume true "${extra_train_opts[@]}")
  done
  python -m zlora.bin.chain --nj 2 --log_dir exp/log/stage4 "${cmds[@]}"
  cmds=()
  for g in "${gap[@]}"; do for set in $lre_sets; do
    cmds+=(--- zlora.bin.decode --config "$decode_config" --exp "exp/lre/gap_$g" --data "data/$set"
             --feats "dump/$set/enc$lre_cached/feats.scp" --out "exp/lre/gap_$g/decode_$set" --nj "$decode_nj"
           --- zlora.bin.score --ref "data/$set/text" --hyp "exp/lre/gap_$g/decode_$set/text"
             --utt2lang "data/$set/utt2lang" --out "exp/lre/gap_$g/decode_$set/score" --method "Vanilla-LoRA, $g"
             --regime full --test_set "$set" --exp "exp/lre/gap_$g")
    scores+=("exp/lre/gap_$g/decode_$set/score")
  done; done
  python -m zlora.bin.chain "${cmds[@]}"
  rows=()                         # asr1's Vanilla-LoRA, the two steps, the experts
  for set in $lre_sets; do rows+=("exp/stage2/lora_seed${seeds%% *}/decode_$set/score" "exp/lre/experts/decode_$set/score"); done
  python -m zlora.bin.report --out exp/RESULTS_gap.md --title "mini12: the experts' gap, like for like" \
    --high "$(csv $high)" --low "$(csv $low)" --baseline Vanilla-LoRA "${rows[@]}" "${scores[@]}"
fi
log "done"
