#!/usr/bin/env bash
# Re-create the Shapes-world model stack from nothing, with the project's own commands:
#   CLIP -> embeddings -> diffusion prior -> decoder (64 px) -> upsampler (64 -> 256) -> one pipeline folder.
#
#   scripts/train_shapes_model.sh OUT_DIR            # the `small` presets (a GPU is strongly advised)
#   UNCLIP_PROFILE=mini scripts/train_shapes_model.sh OUT_DIR   # the bundled model: about 1.5 h on 2 CPU cores
#   UNCLIP_PROFILE=tiny scripts/train_shapes_model.sh OUT_DIR   # seconds on a CPU: checks the chain (tests do)
#
# Run it with the project's environment active (`source .venv/bin/activate`) or with UNCLIP=.venv/bin/unclip.
# Step counts default to each preset's own; override with CLIP_STEPS, PRIOR_STEPS, DECODER_STEPS, UPSAMPLER_STEPS
# and the embedding count with EMBED_N. Every stage keeps its run folder under OUT_DIR/runs (resumable with
# `unclip train STAGE --out RUN --resume`); the finished stack is OUT_DIR/model.
set -euo pipefail

OUT=${1:?usage: scripts/train_shapes_model.sh OUT_DIR}
PROFILE=${UNCLIP_PROFILE:-small}
UNCLIP=${UNCLIP:-unclip}
RUNS="$OUT/runs"
MODELS="$OUT/parts"
mkdir -p "$RUNS" "$MODELS"

case "$PROFILE" in
  small)
    # 64 px decoder with the small CLIP, and the 64 -> 256 upsampler (App. C shapes at Shapes-world scale).
    EXTRA=()
    UPSAMPLER_SET=()
    ASSEMBLE_SET=()
    EMBED_N=${EMBED_N:-200000}
    ;;
  mini)
    # The CPU-trained bundled model: a 32 px base decoder with one 4x upsampler to 128 px (App. C's 4x step at
    # a quarter of its scale), sized so the whole chain trains in about 1.5 hours on 2 CPU cores.
    EXTRA=()
    UPSAMPLER_SET=()
    # DDPM for the image stages: DDIM leaves speckle on these briefly trained networks (docs/training.md).
    # The upsampler starts from its noised bicubic input at 0.3 T (SDEdit): from pure noise this briefly trained
    # network leaves blotches (PSNR 18.0, FID 274 against the truth; 31.2 and 173 from 0.3 T; docs/results.md).
    ASSEMBLE_SET=(--set decoder_sampler=ddpm --set decoder_steps=50 --set upsampler_sampler=ddpm
                  --set upsampler_steps=10 --set inversion_steps=50 --set prior_steps=25 --set upsampler_strength=0.3)
    EMBED_N=${EMBED_N:-30000}
    ;;
  tiny)
    # Everything minimal: checks that every command fits the next one, not that anything is learned.
    EXTRA=(--steps 2 --batch-size 4 --no-progress --set train.checkpoint_every=2)
    UPSAMPLER_SET=(--set model.upsampler.resolution=128 --set model.sample_steps=2)
    ASSEMBLE_SET=(--set prior_steps=2 --set decoder_steps=2 --set upsampler_steps=2 --set inversion_steps=2)
    EMBED_N=${EMBED_N:-16}
    ;;
  *) echo "unknown UNCLIP_PROFILE '$PROFILE' (small, mini or tiny)" >&2; exit 2 ;;
esac

steps() { [ -n "${1:-}" ] && echo "--steps $1" || true; }

# shellcheck disable=SC2046  # word splitting of $(steps ...) is intended
$UNCLIP train clip --preset "$PROFILE" --data shapes --out "$RUNS/clip" "${EXTRA[@]}" $(steps "${CLIP_STEPS:-}")
$UNCLIP export "$RUNS/clip" --out "$MODELS/clip"

$UNCLIP embed --model "$MODELS/clip" --data shapes:split=train --n "$EMBED_N" --out "$OUT/embeddings"
# The prior reads the embedding shards directly: no image is rendered for it.
# shellcheck disable=SC2046
$UNCLIP train diffusion_prior --preset "$PROFILE" --data "embeddings:$OUT/embeddings" --out "$RUNS/prior" \
  "${EXTRA[@]}" $(steps "${PRIOR_STEPS:-}")
$UNCLIP export "$RUNS/prior" --out "$MODELS/prior"

# shellcheck disable=SC2046
$UNCLIP train decoder --preset "$PROFILE" --data shapes --clip "$MODELS/clip" --out "$RUNS/decoder" "${EXTRA[@]}" \
  $(steps "${DECODER_STEPS:-}")
$UNCLIP export "$RUNS/decoder" --out "$MODELS/decoder"

# shellcheck disable=SC2046
$UNCLIP train upsampler --preset "$PROFILE" --data shapes --out "$RUNS/upsampler" "${EXTRA[@]}" "${UPSAMPLER_SET[@]}" \
  $(steps "${UPSAMPLER_STEPS:-}")
$UNCLIP export "$RUNS/upsampler" --out "$MODELS/upsampler"

$UNCLIP assemble --clip "$MODELS/clip" --prior "$MODELS/prior" --decoder "$MODELS/decoder" \
  --upsampler "$MODELS/upsampler" --out "$OUT/model" "${ASSEMBLE_SET[@]}"
echo "model stack ready: $OUT/model"
