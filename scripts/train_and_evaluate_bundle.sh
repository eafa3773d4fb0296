#!/usr/bin/env bash
# Re-create the bundled model on one GPU and measure it, in one go (how src/unclip/assets/shapes-model was made):
#   1. scripts/train_shapes_model.sh in its bundle profile (stages side by side, wall-clock budgets), float16 stack;
#   2. the pipeline benchmark on the GPU (fp32, bf16, bf16 + channels-last);
#   3. the evaluations at the issues' sizes that need no FID weights (clip, prior, compositional, manipulations,
#      decoder and upsampler without FID), one JSON file each under OUT/eval (read them with `unclip report`).
#
#   scripts/train_and_evaluate_bundle.sh OUT_DIR        # about 25 minutes on one H100
#
# Everything train_shapes_model.sh reads passes through: INIT_FROM=src/unclip/assets/shapes-model CLIP_NEGATIVES=5
# trains the bundled stack further instead of from nothing. BENCH=0 skips step 2.
# UNCLIP picks the command (default `unclip`); EVAL_MINUTES caps step 3 (default 6; with 3, the lease that made
# the bundle ran out before manipulations and upsampler, which then ran on a CPU).
set -uo pipefail
OUT=${1:?usage: scripts/train_and_evaluate_bundle.sh OUT_DIR}
UNCLIP=${UNCLIP:-unclip}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/eval" "$OUT/bench"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/bench/gpu.txt" 2>&1 || true
start=$(date +%s)
HALF=1 UNCLIP_PROFILE=bundle bash "$HERE/train_shapes_model.sh" "$OUT" || { echo "training failed" >&2; exit 1; }
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$OUT/bench/train_time.txt"

variants=("fp32" "bf16" "bf16 --channels-last")
[ "${BENCH:-1}" = 1 ] || variants=()
for variant in "${variants[@]+"${variants[@]}"}"; do
  read -r precision extra <<< "$variant"
  # shellcheck disable=SC2086
  timeout 120 "$PY" "$HERE/../benchmarks/pipeline_stages.py" --model "$OUT/model" --device cuda --batch 16 \
    --repeats 3 --precision "$precision" $extra > "$OUT/bench/pipeline_${precision}${extra:+_cl}.txt" 2>&1
done

deadline=$(( $(date +%s) + 60 * ${EVAL_MINUTES:-6} ))
left() { echo $(( deadline - $(date +%s) > 5 ? deadline - $(date +%s) : 5 )); }
common=(--model "$OUT/model" --device cuda --json)
# One evaluation within what is left of the budget; its JSON appears only when it finished, never empty.
evaluate() {
  local name=$1; shift
  if timeout "$(left)" $UNCLIP eval "$@" > "$OUT/eval/.$name.json"; then
    mv "$OUT/eval/.$name.json" "$OUT/eval/$name.json"
  else
    rm -f "$OUT/eval/.$name.json"; echo "eval $name did not finish within EVAL_MINUTES; run it on its own" >&2
  fi
}
evaluate clip clip --model "$OUT/model/clip" --n 1000 --device cuda --json
evaluate prior prior --model "$OUT/model/prior" --clip "$OUT/model/clip" --n 1000 --pool 5000 --device cuda --json
evaluate ar_prior prior --model "$OUT/parts/ar_prior" --clip "$OUT/model/clip" --n 1000 --pool 5000 --device cuda --json
evaluate compositional compositional "${common[@]}" --per-category 30 --images-per-prompt 4
evaluate decoder decoder "${common[@]}" --n 200 --no-fid
evaluate manipulations manipulations "${common[@]}" --n 50
evaluate upsampler upsampler "${common[@]}" --n 64 --no-fid
echo "all done: $(( $(date +%s) - start )) s" | tee "$OUT/bench/total_time.txt"
