#!/usr/bin/env bash
# Does whitening z_i at the decoder's input (model.decoder.z_whitening, unclip.models.whitening) make the decoder
# read the faint directions of z_i that carry attribute binding? Fine-tunes the bundled decoder twice from its own
# weights, same seed, data and steps: once as it is (raw z_i) and once whitened. The whitened run's projections are
# rewritten at the start so that it computes exactly what the bundled decoder does (train.init_from keeps the
# function); the runs differ only in the geometry of their gradient steps. Each result is swapped into a copy of
# the bundled stack and its reconstructions of held-out scenes judged (`unclip eval decoder`), and the decoder's
# conditioning is probed: how far apart its z_i projections put a scene and its colour-swapped or place-swapped twin,
# relative to two random scenes (`python -m unclip.eval.conditioning_probe`).
#
#   scripts/experiments/decoder_z_whitening.sh OUT_DIR
#
# STEPS (500), BATCH (32), LR (1e-4), EMBED_N (10000 embeddings to fit the whitening on), EVAL_N (200),
# FLOOR (1e-3: decoder.z_whitening_floor). Session 23 ran it on 2 CPU cores (about 20 minutes an arm); on a GPU raise
# STEPS and BATCH. Run it with the project's environment active or with UNCLIP=.venv/bin/unclip, PYTHON=.venv/bin/python.
set -euo pipefail

OUT=${1:?usage: scripts/experiments/decoder_z_whitening.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
UNCLIP=${UNCLIP:-unclip}
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-500}
mkdir -p "$OUT/eval"
BUNDLE=$OUT/bundle  # a copy: the embeddings record the CLIP folder they came from, and the decoder run checks it
[ -d "$BUNDLE" ] || cp -r "$HERE/../../src/unclip/assets/shapes-model" "$BUNDLE"
[ -d "$OUT/embeddings" ] || $UNCLIP embed --model "$BUNDLE/clip" --data shapes --n "${EMBED_N:-10000}" \
  --out "$OUT/embeddings"

for arm in raw whitened; do
  run=$OUT/run_$arm
  extra=()
  if [ "$arm" = whitened ]; then
    extra=(--set model.decoder.z_whitening=true --set "model.decoder.z_whitening_floor=${FLOOR:-1e-3}"
           --set "model.whitening_embeddings=$OUT/embeddings")
  fi
  [ -d "$run" ] || $UNCLIP train decoder --preset compact --data shapes --clip "$BUNDLE/clip" --out "$run" \
    --steps "$STEPS" --batch-size "${BATCH:-32}" --lr "${LR:-1e-4}" --mixed-precision no --workers 0 --no-progress \
    --set train.warmup_steps=50 --set train.log_every=50 --set "train.checkpoint_every=$STEPS" \
    --set "train.init_from=$BUNDLE/decoder" "${extra[@]}"
  stack=$OUT/stack_$arm
  if [ ! -d "$stack/decoder" ]; then
    rm -rf "$stack" && cp -r "$BUNDLE" "$stack" && rm -rf "$stack/decoder"
    $UNCLIP export "$run" --out "$stack/decoder" > /dev/null
  fi
done

for stack in bundle stack_raw stack_whitened; do
  $PYTHON -m unclip.eval.conditioning_probe "$OUT/$stack" --n 300 > "$OUT/eval/probe_$stack.json"
  $UNCLIP eval decoder --model "$OUT/$stack" --n "${EVAL_N:-200}" --no-fid --json > "$OUT/eval/decoder_$stack.json"
done
echo "results: $OUT/eval"
