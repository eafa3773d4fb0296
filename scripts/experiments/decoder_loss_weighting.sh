#!/usr/bin/env bash
# Does Min-SNR-γ loss weighting (model.loss_weighting=min_snr, Hang et al. 2023) make the decoder learn to invert
# CLIP sooner? Trains one decoder per weighting from scratch on the bundled CLIP's embeddings, same seed, data and
# steps, swaps each into a copy of the bundled stack and judges its reconstructions of held-out scenes
# (`unclip eval decoder`) at every kept checkpoint (docs/training.md, "Loss weighting").
#
#   scripts/experiments/decoder_loss_weighting.sh OUT_DIR
#
# PRESET (mini: 1.3 M parameters, as session 22 ran it on 2 CPU cores, about 23 minutes an arm at 1,500 steps),
# STEPS (1500), BATCH (32), EVERY (500: the checkpoints judged), EVAL_N (200) and FINAL_N (600: the last checkpoint
# judged again on more scenes). On a GPU use PRESET=compact (the bundled decoder's shape) and steps in the
# thousands. Run it with the project's environment active or with UNCLIP=.venv/bin/unclip.
set -euo pipefail

OUT=${1:?usage: scripts/experiments/decoder_loss_weighting.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
BUNDLE=$HERE/../../src/unclip/assets/shapes-model
UNCLIP=${UNCLIP:-unclip}
STEPS=${STEPS:-1500}
EVERY=${EVERY:-500}
mkdir -p "$OUT/eval"

for w in uniform min_snr; do
  run=$OUT/run_$w
  [ -d "$run" ] || $UNCLIP train decoder --preset "${PRESET:-mini}" --data shapes --clip "$BUNDLE/clip" --out "$run" \
    --steps "$STEPS" --batch-size "${BATCH:-32}" --no-progress --set model.decoder.clip_dim=256 \
    --set model.decoder.text_dim=256 --set train.log_every=50 --set "train.checkpoint_every=$EVERY" \
    --set "train.keep_last=$(( STEPS / EVERY + 1 ))" --set "model.loss_weighting=$w"
done

judge() {  # weighting step n: that checkpoint in a copy of the bundled stack (made once), its reconstructions judged
  local stack=$OUT/stack_$1_$2
  if [ ! -d "$stack/decoder" ]; then
    rm -rf "$stack" && cp -r "$BUNDLE" "$stack" && rm -rf "$stack/decoder"
    $UNCLIP export "$OUT/run_$1" --step "$2" --out "$stack/decoder" > /dev/null
  fi
  $UNCLIP eval decoder --model "$stack" --n "$3" --no-fid --json > "$OUT/eval/decoder_$1_$2_n$3.json"
}
for (( step = EVERY; step <= STEPS; step += EVERY )); do
  for w in uniform min_snr; do judge "$w" "$step" "${EVAL_N:-200}"; done
done
for w in uniform min_snr; do judge "$w" "$STEPS" "${FINAL_N:-600}"; done
echo "results: $OUT/eval (a page of them: unclip report $OUT/eval --out $OUT/report)"
