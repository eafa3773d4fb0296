#!/usr/bin/env bash
# Does embedding guidance (the sampling setting decoder_embedding_guidance, unclip.diffusion.gradient_guidance) make the
# bundled decoder keep what z_i says? Judges reconstructions of the same EVAL_N held-out scenes (default 200) at each
# guidance scale, then compares every scale with 0 scene by scene (McNemar's exact test, unclip.eval.paired).
# GRADIENT picks what the guidance differentiates (denoiser, the default, x0, or noised with a tower);
# MODEL (default: the bundled model), UNCLIP and PYTHON may be set. docs/results.md, "Embedding guidance".
#
#   scripts/experiments/decoder_embedding_guidance.sh OUT_DIR [SCALE ...]      (default scales: 100 300 1000)
set -euo pipefail
OUT=${1:?usage: scripts/experiments/decoder_embedding_guidance.sh OUT_DIR [SCALE ...]}
shift
SCALES=("$@")
[[ ${#SCALES[@]} -gt 0 ]] || SCALES=(100 300 1000)
UNCLIP=${UNCLIP:-unclip}
PYTHON=${PYTHON:-python}
MODEL_ARGS=()
[[ -n "${MODEL:-}" ]] && MODEL_ARGS=(--model "$MODEL")
mkdir -p "$OUT"
GRADIENT=${GRADIENT:-denoiser}
name() { [[ "$1" == 0 ]] && echo "$OUT/decoder_guidance_0.json" || echo "$OUT/decoder_guidance_${GRADIENT}_$1.json"; }
for s in 0 "${SCALES[@]}"; do
  f=$(name "$s")
  [[ -s "$f" ]] && continue  # a rerun judges only the missing scales
  echo "== embedding guidance $s ($GRADIENT)"
  "$UNCLIP" eval decoder "${MODEL_ARGS[@]}" --n "${EVAL_N:-200}" --no-fid --json \
    --set decoder_embedding_guidance="$s" --set decoder_embedding_guidance_gradient="$GRADIENT" > "$f.part"
  mv "$f.part" "$f"
done
for s in "${SCALES[@]}"; do
  [[ "$s" == 0 ]] && continue
  echo "== scale $s against 0"
  "$PYTHON" -m unclip.eval.paired "$(name 0)" "$(name "$s")"
done
