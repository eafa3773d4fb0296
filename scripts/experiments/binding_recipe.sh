#!/usr/bin/env bash
# The combined binding recipe for a CLIP (docs/clip.md, "Relations: the combined recipe"), three stages:
#   1. joint training with relation samples and swap/relation counterfactual pairs (the text tower binds, swaps learn);
#   2. the image tower alone on placed pairs against stage 1's frozen text (the image learns which object is left):
#      `--data shapes:placed=$PLACED` with the text locked, each sample's places-exchanged scene as its pair;
#   3. joint training again with relation samples, from stage 2 (both kinds of binding rise together).
# Then every kept checkpoint of stage 3 is exported and evaluated (`unclip eval clip --n EVAL_N --json`).
#
#   scripts/experiments/binding_recipe.sh OUT_DIR [START_CLIP]     # START_CLIP: default the bundled CLIP
#
# Step counts: JOINT1_STEPS (350), IMAGE_STEPS (200), JOINT3_STEPS (300); BATCH (64) and IMAGE_BATCH (64 pairs),
# LR (2e-4), EVERY (50: stage 3's checkpoint interval), EVAL_N (300), PLACED (x: left/right pairs; y: above/below;
# xy: both). The defaults are the CPU runs of sessions 13-14 (about 35 + 10 + 30 minutes on one thread); on a GPU
# raise JOINT3_STEPS into the thousands. Run it with the project's environment active (`source .venv/bin/activate`)
# or with UNCLIP=.venv/bin/unclip and PYTHON=.venv/bin/python.
set -euo pipefail

OUT=${1:?usage: scripts/experiments/binding_recipe.sh OUT_DIR [START_CLIP]}
HERE=$(cd "$(dirname "$0")" && pwd)
START=${2:-$HERE/../../src/unclip/assets/shapes-model/clip}
UNCLIP=${UNCLIP:-unclip}
PYTHON=${PYTHON:-python}
JOINT1_STEPS=${JOINT1_STEPS:-350} IMAGE_STEPS=${IMAGE_STEPS:-200} JOINT3_STEPS=${JOINT3_STEPS:-300}
BATCH=${BATCH:-64} IMAGE_BATCH=${IMAGE_BATCH:-64} LR=${LR:-2e-4} EVERY=${EVERY:-50} EVAL_N=${EVAL_N:-300}
PLACED=${PLACED:-x}
[ -f "$START/config.json" ] || { echo "not a CLIP model folder: $START" >&2; exit 2; }
DEVICE=$($PYTHON -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
mkdir -p "$OUT"

joint() {  # $1: run folder, $2: the CLIP to start from, $3: steps. The settings of docs/clip.md, "Joint settings".
  $UNCLIP train clip --preset small --data shapes:seed=7 --steps "$3" --batch-size "$BATCH" --lr "$LR" --out "$1" \
    --set "train.init_from=$2" --set "model.tokenizer=$2/tokenizer.json" --set train.lr_schedule=constant \
    --set train.warmup_steps=10 --set model.counterfactual_kinds=swap,relation --set model.pair_weight=1 \
    --set model.separation_weight=1 --set model.paraphrase_weight=1 --set model.negatives_per_caption=5 \
    --set model.relation_samples=16 --set "train.checkpoint_every=$EVERY" --set train.keep_last=1000 --no-progress
}

image() {  # $1: run folder, $2: the CLIP to start from, $3: steps. Placed pairs only, the text tower locked.
  $UNCLIP train clip --preset small --data shapes:seed=7,placed=$PLACED --steps "$3" --batch-size "$IMAGE_BATCH" \
    --lr "$LR" --out "$1" --set "train.init_from=$2" --set "model.tokenizer=$2/tokenizer.json" \
    --set train.lr_schedule=constant --set train.warmup_steps=10 --set model.lock_text=true \
    --set model.negative_kinds=relation --set model.counterfactual_kinds=relation --set model.pair_weight=1 \
    --set model.separation_weight=1 --set "train.checkpoint_every=$EVERY" --no-progress
}

joint "$OUT/joint1" "$START" "$JOINT1_STEPS"
$UNCLIP export "$OUT/joint1" --raw --out "$OUT/stage1"
image "$OUT/image" "$OUT/stage1" "$IMAGE_STEPS"
$UNCLIP export "$OUT/image" --raw --out "$OUT/stage2"
joint "$OUT/joint3" "$OUT/stage2" "$JOINT3_STEPS"
for ckpt in "$OUT"/joint3/checkpoints/step_*; do
  step=$((10#${ckpt##*step_}))
  $UNCLIP export "$OUT/joint3" --raw --step "$step" --out "$OUT/stage3_$step"
  $UNCLIP eval clip --model "$OUT/stage3_$step" --n "$EVAL_N" --device "$DEVICE" --json > "$OUT/stage3_$step.json"
done
echo "stage 3 evaluations: $OUT/stage3_*.json"
