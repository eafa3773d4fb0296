#!/usr/bin/env bash
# Embedding guidance through a noise-aware CLIP tower (GLIDE's noised CLIP, §2.3; unclip.clip.noised): distil one from
# the bundled model's CLIP on Shapes-world x_t of the decoder's schedule, add it to a copy of the bundle, and judge the
# decoder's reconstructions with decoder_embedding_guidance_gradient=noised at each scale against none
# (scripts/experiments/decoder_embedding_guidance.sh). docs/results.md, "A noise-aware guide".
#
#   scripts/experiments/noised_clip_guidance.sh OUT_DIR [SCALE ...]
#
# MINUTES (default 40) bounds the training, STEPS (4000) and BATCH (32) shape it; EVAL_N (default 48) scenes are judged.
# On a GPU add TRAIN_ARGS="--mixed-precision bf16 --workers 4" and raise MINUTES/BATCH. UNCLIP and PYTHON may be set.
set -euo pipefail
OUT=${1:?usage: scripts/experiments/noised_clip_guidance.sh OUT_DIR [SCALE ...]}
shift
UNCLIP=${UNCLIP:-unclip}
BUNDLE=${BUNDLE:-$(dirname "$0")/../../src/unclip/assets/shapes-model}
mkdir -p "$OUT"
if [[ ! -d "$OUT/noised_clip" ]]; then
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
  "$UNCLIP" train noised_clip --preset small --clip "$BUNDLE/clip" --data shapes --out "$OUT/run" --no-progress \
    --steps "${STEPS:-4000}" --batch-size "${BATCH:-32}" --lr 3e-4 --checkpoint-every 200 \
    --set train.init_from="$BUNDLE/clip" --set train.lr_schedule=constant --set train.max_minutes="${MINUTES:-40}" \
    ${TRAIN_ARGS:-}
  "$UNCLIP" export "$OUT/run" --out "$OUT/noised_clip"
fi
[[ -f "$OUT/model/pipeline.json" ]] || "$UNCLIP" assemble --from "$BUNDLE" --noised-clip "$OUT/noised_clip" --half --out "$OUT/model"
MODEL="$OUT/model" GRADIENT=noised EVAL_N="${EVAL_N:-48}" "$(dirname "$0")/decoder_embedding_guidance.sh" "$OUT/eval" "$@"
