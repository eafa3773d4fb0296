#!/usr/bin/env bash
# Re-create the bundled model on one GPU and measure it, in one go (how src/unclip/assets/shapes-model was made):
#   1. scripts/train_shapes_model.sh in its bundle profile (stages side by side, wall-clock budgets), float16 stack;
#   2. the pipeline benchmark on the GPU (fp32, bf16, bf16 + channels-last);
#   3. the evaluations at the issues' sizes that need no FID weights (clip, prior, compositional, manipulations,
#      decoder and upsampler without FID), one JSON file each under OUT/eval (read them with `unclip report`).
#
#   scripts/train_and_evaluate_bundle.sh OUT_DIR        # about 25 minutes on one H100
#
# UNCLIP picks the command (default `unclip`); EVAL_MINUTES caps step 3 (default 4).
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

for variant in "fp32" "bf16" "bf16 --channels-last"; do
  read -r precision extra <<< "$variant"
  # shellcheck disable=SC2086
  timeout 120 "$PY" "$HERE/../benchmarks/pipeline_stages.py" --model "$OUT/model" --device cuda --batch 16 \
    --repeats 3 --precision "$precision" $extra > "$OUT/bench/pipeline_${precision}${extra:+_cl}.txt" 2>&1
done

deadline=$(( $(date +%s) + 60 * ${EVAL_MINUTES:-4} ))
left() { echo $(( deadline - $(date +%s) > 5 ? deadline - $(date +%s) : 5 )); }
common=(--model "$OUT/model" --device cuda --json)
timeout "$(left)" $UNCLIP eval clip --model "$OUT/model/clip" --n 1000 --device cuda --json > "$OUT/eval/clip.json"
timeout "$(left)" $UNCLIP eval prior --model "$OUT/model/prior" --clip "$OUT/model/clip" --n 1000 --pool 5000 \
  --device cuda --json > "$OUT/eval/prior.json"
timeout "$(left)" $UNCLIP eval prior --model "$OUT/parts/ar_prior" --clip "$OUT/model/clip" --n 1000 --pool 5000 \
  --device cuda --json > "$OUT/eval/ar_prior.json"
timeout "$(left)" $UNCLIP eval compositional "${common[@]}" --per-category 30 --images-per-prompt 4 \
  > "$OUT/eval/compositional.json"
timeout "$(left)" $UNCLIP eval decoder "${common[@]}" --n 200 --no-fid > "$OUT/eval/decoder.json"
timeout "$(left)" $UNCLIP eval manipulations "${common[@]}" --n 50 > "$OUT/eval/manipulations.json"
timeout "$(left)" $UNCLIP eval upsampler "${common[@]}" --n 64 --no-fid > "$OUT/eval/upsampler.json"
echo "all done: $(( $(date +%s) - start )) s" | tee "$OUT/bench/total_time.txt"
