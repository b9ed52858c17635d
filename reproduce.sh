#!/usr/bin/env bash
# Run every experiment of both papers and build the report:
#   ./reproduce.sh [--preset tiny|quick|paper] [--data-root DIR] [--out DIR] [--only ums_rep|mt_unet]
# tiny: a smoke run in minutes; quick: phantoms (or your data) on a laptop; paper: the papers'
# sizes, epochs and folds (GPU hours). Without --data-root every dataset is a phantom.
# Each step writes its own run folder under OUT; re-running skips finished steps and resumes
# interrupted ones (--resume), so an interruption (even SIGKILL) costs at most one epoch. --only
# runs one paper's experiments (the report still covers every finished run under OUT).
# It prints its plan first (stages, runs, estimates from the previous run's OUT/times.json), one
# progress line per step with the elapsed time and an ETA, and at the end the time table (stage,
# runs, seconds, share), written to OUT/times.json and into the report ("How long each part took").
# One reproduce.sh at a time per OUT: a second one into the same OUT refuses (a lock on
# OUT/reproduce.lock, released when the run and its commands end, SIGKILL included).
# REPRODUCE_ONLY_STEPS="PATTERN ...": run only the steps whose names match one of these shell
# patterns, e.g. "mt_unet-mtunet-full-mtl3 pretrain-*" (tests run a cheap subset this way).
set -euo pipefail

PRESET=quick
DATA=()
OUT=""
ONLY=all
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --data-root) DATA=(--data "$2"); shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "reproduce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PRESET" in tiny|quick|paper) ;; *) echo "reproduce.sh: --preset must be tiny, quick or paper" >&2; exit 2 ;; esac
case "$ONLY" in all|ums_rep|mt_unet) ;; *) echo "reproduce.sh: --only must be ums_rep or mt_unet" >&2; exit 2 ;; esac
OUT="${OUT:-runs/reproduce-$PRESET}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
# the lock: fd 9 stays open in this shell and every command it starts, so the lock lasts while any
# of them runs and dies with them (no stale lock after a SIGKILL); flock(1), else Python's flock(2)
exec 9>>"$OUT/reproduce.lock"
lock=(flock -n 9)
command -v flock > /dev/null || lock=("$PY" -c 'import fcntl; fcntl.flock(9, fcntl.LOCK_EX | fcntl.LOCK_NB)')
if ! "${lock[@]}" 2> /dev/null; then
  echo "reproduce.sh: $OUT is in use by another reproduce.sh (it holds $OUT/reproduce.lock);" \
    "wait for it or choose another --out" >&2
  exit 1
fi
START=$(date +%s)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/reproduce.log"; }
plan() { "$PY" -m ums_rep.plan "$@"; }  # the plan, progress lines and time table

# selected NAME: whether REPRODUCE_ONLY_STEPS (if set) keeps step NAME
selected() {
  [[ -z ${REPRODUCE_ONLY_STEPS:-} ]] && return 0
  local patterns p; read -ra patterns <<< "$REPRODUCE_ONLY_STEPS"
  for p in "${patterns[@]}"; do [[ $1 == $p ]] && return 0; done
  return 1
}

# step NAME COMMAND...: run a training command or scan into $OUT/NAME unless it finished before;
# a folder left by an interrupted run is resumed (--resume RUN_DIR, with the run's own arguments).
# Each attempt writes its start to $OUT/NAME/step_started, and the one that finishes the step its
# seconds to $OUT/NAME/step_seconds (the time table's). While planning it only names the step.
step() {
  local name="$1"; shift
  selected "$name" || return 0
  if [[ -n $planning ]]; then echo "$name"; return 0; fi
  local dir="$OUT/$name"
  STEP_I=$((STEP_I + 1))
  if [[ $name == mt_unet-* ]]; then mt_dirs+=("$dir"); fi
  if [[ -f "$dir/results.json" ]]; then
    log "[$STEP_I/${#STEPS[@]}] skip $name (finished before, in $(cat "$dir/step_seconds" 2> /dev/null || echo "?") s)"
    return 0
  fi
  local t0; t0=$(date +%s)
  mkdir -p "$dir" && echo "$t0" > "$dir/step_started"
  if [[ -f "$dir/args.json" ]]; then
    log "[$STEP_I/${#STEPS[@]}] resume $name"
    "$PY" -m "$1" --resume "$dir" --no-progress
  else
    log "[$STEP_I/${#STEPS[@]}] run $name"
    "$PY" -m "$@" --out "$dir" --no-progress
  fi
  local secs=$(( $(date +%s) - t0 ))
  echo "$secs" > "$dir/step_seconds.tmp" && mv "$dir/step_seconds.tmp" "$dir/step_seconds"
  log "[$STEP_I/${#STEPS[@]}] done $name in $secs s; $(plan progress --out "$OUT" --done "$STEP_I" \
    --elapsed $(( $(date +%s) - START )) "${STEPS[@]}")"
}

# every experiment, in order: planned first (planning=1, and PY=: so that the one direct command, the
# MT-UNet comparison, does nothing), then run
experiments() {
# UMS-Rep: the two shared encoders, then every task set with every strategy and the baseline
if [[ $ONLY != mt_unet ]]; then
step pretrain-cdae ums_rep.pretrain --backbone cdae --preset "$PRESET" "${DATA[@]}"
step pretrain-echo ums_rep.pretrain --backbone echo --preset "$PRESET" "${DATA[@]}"
# folds: the preset's (paper 10, quick 3, as finetune's default); 2 for tiny, so that every strategy
# table has a per-fold spread
folds=(); [[ $PRESET == tiny ]] && folds=(--folds 2)
for set in cxr-hetero cxr-homo echo-hetero echo-homo; do
  enc="$OUT/pretrain-cdae/model.keras"; [[ $set == echo-* ]] && enc="$OUT/pretrain-echo/model.keras"
  for strategy in independent alternating joint baseline; do
    step "finetune-$set-$strategy" ums_rep.finetune --tasks "$set" --strategy "$strategy" --encoder "$enc" \
      "${folds[@]}" --preset "$PRESET" "${DATA[@]}"
  done
done
# Talos: the echo encoder's search space
# quick: 4 of the 162 combinations, to keep the whole quick run under an hour on 2 CPU cores
rounds=4; [[ $PRESET == tiny ]] && rounds=2; [[ $PRESET == paper ]] && rounds=162
step scan-echo ums_rep.scan --model echo --preset "$PRESET" --round-limit "$rounds" "${DATA[@]}"
fi
# MT-UNet: MTL1/2/3, the B/T ablations, single-task UNets and the baselines (Tables 1-3), and MTL3
# with the authors' code's saliency term (--loss-form authors) beside the paper's; step() collects
# the run folders in mt_dirs for the comparison table
if [[ $ONLY != ums_rep ]]; then
configs=("mtunet full mtl3" "mtunet full mtl1" "mtunet full mtl2" "mtunet bottleneck mtl3" "mtunet top mtl3"
         "unets full mtl3" "unetc full mtl3" "simplenet full mtl3" "msinet full mtl3" "vggssm full mtl3"
         "resnet50 full mtl3")
# InceptionResNetV2 needs 75 px a side (quick images are 96x64); EfficientNetV2-S (20 M parameters)
# would add about 15 min to the quick run on 2 CPU cores: both at the paper preset only
[[ $PRESET == paper ]] && configs+=("inceptionresnetv2 full mtl3" "efficientnetv2s full mtl3")
# every model of Tables 1-3 gets one budget: the preset's epochs, RLRP patience and early stopping;
# quick: 5 seeds (the claims' significance over seeds) and 10 epochs instead of mt_unet.train's quick
# 3 seeds and 20 epochs, to keep the quick run short on 2 CPU cores
budget=(); [[ $PRESET == quick ]] && budget=(--seeds 5 --epochs 10)
for cfg in "${configs[@]}"; do
  read -r model variant scheme <<< "$cfg"
  step "mt_unet-$model-$variant-$scheme" mt_unet.train --model "$model" --variant "$variant" --scheme "$scheme" \
    --preset "$PRESET" "${budget[@]}" "${DATA[@]}"
done
step "mt_unet-mtunet-full-mtl3-authors-loss" mt_unet.train --model mtunet --variant full --scheme mtl3 \
  --loss-form authors --preset "$PRESET" "${budget[@]}" "${DATA[@]}"
compare_t0=$(date +%s)
"$PY" -m mt_unet.train --compare "${mt_dirs[@]}" --out "$OUT" > /dev/null
COMPARE_SECONDS=$(( $(date +%s) - compare_t0 ))
fi
}

planning=""
STEPS=()
mt_dirs=()
STEP_I=0
COMPARE_SECONDS=""
names=$(planning=1; PY=:; experiments)
[[ -n $names ]] && mapfile -t STEPS <<< "$names"
if [[ ${#STEPS[@]} -eq 0 ]]; then
  echo "reproduce.sh: no step to run (--only $ONLY, REPRODUCE_ONLY_STEPS='${REPRODUCE_ONLY_STEPS:-}')" >&2
  exit 2
fi
# no MT-UNet run kept (REPRODUCE_ONLY_STEPS): no comparison table either
if [[ $ONLY == all ]] && ! printf '%s\n' "${STEPS[@]}" | grep -q '^mt_unet-'; then ONLY=ums_rep; fi
log "reproduce.sh --preset $PRESET --out $OUT${REPRODUCE_ONLY_STEPS:+ (REPRODUCE_ONLY_STEPS: $REPRODUCE_ONLY_STEPS)}"
plan plan --out "$OUT" "${STEPS[@]}" | tee -a "$OUT/reproduce.log"
experiments
if [[ -n $COMPARE_SECONDS ]]; then log "MT-UNet comparison table ($OUT/compare.md) in $COMPARE_SECONDS s"; fi
log "time table ($OUT/times.json):"
plan table --out "$OUT" --preset "$PRESET" --wall-seconds $(( $(date +%s) - START )) \
  ${COMPARE_SECONDS:+--closing-seconds "MT-UNet comparison table=$COMPARE_SECONDS"} "${STEPS[@]}" | tee -a "$OUT/reproduce.log"
"$PY" -m ums_rep.report --runs "$OUT" --out "$OUT/report"
log "all done in $(( $(date +%s) - START )) s; report: $OUT/report/report.md and report.html"
