#!/usr/bin/env bash
# Fine-tunes the bundled decoder from its own weights once per arm (same seed, data and steps; an arm differs only
# in the decoder settings it names), swaps each result into a copy of the bundled stack, and judges it beside the
# bundled decoder: the reconstructions of the same held-out scenes (`unclip eval decoder --json`, per-scene verdicts
# for `python -m unclip.eval.paired`) and how far apart its z_i projections put a scene and its colour-swapped or
# place-swapped twin (`python -m unclip.eval.conditioning_probe`).
#
#   scripts/experiments/decoder_fine_tune_arms.sh OUT_DIR NAME='SETTINGS' [NAME='SETTINGS' ...]
#
# SETTINGS are `--set key=value` words for `unclip train decoder`; @EMB@ in them stands for an `unclip embed` folder
# of the training data made with the bundled CLIP (written once, EMBED_N embeddings). A finished part is skipped on a
# rerun. STEPS (500), BATCH (32), LR (1e-4), EVAL_N (200). Sessions 23-24 ran it on 2 CPU cores (20-25 minutes an
# arm, 13 minutes a judgement); on a GPU raise STEPS and BATCH. Run it with the project's environment active or with
# UNCLIP=.venv/bin/unclip, PYTHON=.venv/bin/python.
set -euo pipefail

OUT=${1:?usage: scripts/experiments/decoder_fine_tune_arms.sh OUT_DIR NAME='SETTINGS' ...}
shift
[ $# -gt 0 ] || { echo "name at least one arm: NAME='--set key=value ...' (NAME='' fine-tunes as the bundle is)" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
UNCLIP=${UNCLIP:-unclip}
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-500}
mkdir -p "$OUT/eval"
BUNDLE=$OUT/bundle  # a copy: the embeddings record the CLIP folder they came from, and the decoder run checks it
[ -d "$BUNDLE" ] || cp -r "$HERE/../../src/unclip/assets/shapes-model" "$BUNDLE"
[ -d "$OUT/embeddings" ] || $UNCLIP embed --model "$BUNDLE/clip" --data shapes --n "${EMBED_N:-10000}" \
  --out "$OUT/embeddings"

stacks=(bundle)
for spec in "$@"; do
  arm=${spec%%=*}
  settings=${spec#*=}
  settings=${settings//@EMB@/$OUT/embeddings}
  run=$OUT/run_$arm
  # shellcheck disable=SC2086  # the settings are words on purpose
  [ -d "$run" ] || $UNCLIP train decoder --preset compact --data shapes --clip "$BUNDLE/clip" --out "$run" \
    --steps "$STEPS" --batch-size "${BATCH:-32}" --lr "${LR:-1e-4}" --mixed-precision no --workers 0 --no-progress \
    --set train.warmup_steps=50 --set train.log_every=50 --set "train.checkpoint_every=$STEPS" \
    --set "train.init_from=$BUNDLE/decoder" $settings
  stack=$OUT/stack_$arm
  if [ ! -d "$stack/decoder" ]; then
    rm -rf "$stack" && cp -r "$BUNDLE" "$stack" && rm -rf "$stack/decoder"
    $UNCLIP export "$run" --out "$stack/decoder" > /dev/null
  fi
  stacks+=("stack_$arm")
done

for stack in "${stacks[@]}"; do
  probe=$OUT/eval/probe_$stack.json judged=$OUT/eval/decoder_$stack.json
  if [ ! -s "$probe" ]; then
    $PYTHON -m unclip.eval.conditioning_probe "$OUT/$stack" --n 300 > "$probe.tmp" && mv "$probe.tmp" "$probe"
  fi
  if [ ! -s "$judged" ]; then
    $UNCLIP eval decoder --model "$OUT/$stack" --n "${EVAL_N:-200}" --no-fid --json > "$judged.tmp"
    mv "$judged.tmp" "$judged"
  fi
done
echo "results: $OUT/eval (compare two: $PYTHON -m unclip.eval.paired $OUT/eval/decoder_bundle.json $OUT/eval/decoder_stack_NAME.json)"
