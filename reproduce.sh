#!/usr/bin/env bash
# Run every experiment of both papers and build the report:
#   ./reproduce.sh [--preset tiny|quick|paper] [--data-root DIR] [--out DIR] [--only ums_rep|mt_unet]
# tiny: a smoke run in minutes; quick: phantoms (or your data) on a laptop; paper: the papers'
# sizes, epochs and folds (GPU hours). Without --data-root every dataset is a phantom.
# Each step writes its own run folder under OUT; re-running skips finished steps and resumes
# interrupted ones (--resume), so an interruption costs at most one epoch. --only runs one paper's
# experiments (the report still covers every finished run under OUT).
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
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "reproduce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PRESET" in tiny|quick|paper) ;; *) echo "reproduce.sh: --preset must be tiny, quick or paper" >&2; exit 2 ;; esac
case "$ONLY" in all|ums_rep|mt_unet) ;; *) echo "reproduce.sh: --only must be ums_rep or mt_unet" >&2; exit 2 ;; esac
OUT="${OUT:-runs/reproduce-$PRESET}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
START=$(date +%s)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/reproduce.log"; }

# step NAME COMMAND...: run a training command or scan into $OUT/NAME unless it finished before;
# a folder left by an interrupted run is resumed (--resume RUN_DIR, with the run's own arguments)
step() {
  local name="$1"; shift
  local dir="$OUT/$name"
  if [[ -f "$dir/results.json" ]]; then log "skip $name (finished)"; return; fi
  local t0; t0=$(date +%s)
  if [[ -f "$dir/args.json" ]]; then
    log "resume $name"
    "$PY" -m "$1" --resume "$dir" --no-progress
  else
    log "run $name"
    "$PY" -m "$@" --out "$dir" --no-progress
  fi
  log "done $name in $(( $(date +%s) - t0 )) s"
}

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
# with the authors' code's saliency term (--loss-form authors) beside the paper's
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
mt_dirs=()
for cfg in "${configs[@]}"; do
  read -r model variant scheme <<< "$cfg"
  step "mt_unet-$model-$variant-$scheme" mt_unet.train --model "$model" --variant "$variant" --scheme "$scheme" \
    --preset "$PRESET" "${budget[@]}" "${DATA[@]}"
  mt_dirs+=("$OUT/mt_unet-$model-$variant-$scheme")
done
step "mt_unet-mtunet-full-mtl3-authors-loss" mt_unet.train --model mtunet --variant full --scheme mtl3 \
  --loss-form authors --preset "$PRESET" "${budget[@]}" "${DATA[@]}"
mt_dirs+=("$OUT/mt_unet-mtunet-full-mtl3-authors-loss")
"$PY" -m mt_unet.train --compare "${mt_dirs[@]}" --out "$OUT" > /dev/null
fi

"$PY" -m ums_rep.report --runs "$OUT" --out "$OUT/report"
log "all done in $(( $(date +%s) - START )) s; report: $OUT/report/report.md and report.html"
