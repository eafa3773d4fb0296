#!/usr/bin/env bash
# The paper's experiments at Shapes-world scale (issue 9; results in docs/results.md), on a trained model stack.
#
#   scripts/paper_experiments.sh STACK_DIR OUT_DIR [EXPERIMENT...]
#
# STACK_DIR is the output folder of scripts/train_shapes_model.sh (runs/, parts/, model/). Experiments, all by
# default: samplers, guidance_separate, z_source, ar_prior, prior_rows, glide, guidance_sweep, hard_negatives.
# `glide` trains the caption-only (GLIDE-like) decoder of §5.1 with the unCLIP decoder's preset, steps and seed;
# `guidance_sweep` compares it with the unCLIP decoder along one guidance scale over the whole condition (for the
# caption-only decoder only the caption scale acts, so a fair comparison sets both). Every image is scored at the
# decoder's resolution
# (--base-only), one thread per process. Sizes: PER_CATEGORY (2), IMAGES (4), REFERENCE_N (500); PROFILE (mini).
set -euo pipefail

STACK=${1:?usage: scripts/paper_experiments.sh STACK_DIR OUT_DIR [EXPERIMENT...]}
OUT=${2:?usage: scripts/paper_experiments.sh STACK_DIR OUT_DIR [EXPERIMENT...]}
shift 2
EXPERIMENTS=("$@")
[ ${#EXPERIMENTS[@]} -gt 0 ] || EXPERIMENTS=(samplers guidance_separate z_source ar_prior prior_rows glide guidance_sweep
                                              hard_negatives)
UNCLIP=${UNCLIP:-unclip}
PROFILE=${PROFILE:-mini}
SIZE=(--per-category "${PER_CATEGORY:-2}" --images-per-prompt "${IMAGES:-4}" --reference-n "${REFERENCE_N:-500}")
MODEL="$STACK/model"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"

sweep() {  # skipped when its sweep.json is already complete (delete the folder to redo it)
  local out="${*: -1}"
  if [ -f "$out/sweep.json" ] && [ -f "$out/.complete" ]; then echo "kept $out"; return; fi
  $UNCLIP eval sweep --base-only "${SIZE[@]}" "$@" && touch "$out/.complete"
}

glide_model() {  # the unCLIP stack with its decoder replaced by the caption-only one
  [ -d "$OUT/glide/model" ] && return
  $UNCLIP assemble --clip "$STACK/parts/clip" --prior "$STACK/parts/prior" --decoder "$OUT/glide/decoder" \
    --upsampler "$STACK/parts/upsampler" --out "$OUT/glide/model" $(settings_of "$MODEL")
}

settings_of() {  # a model's stored sampling settings as --set options
  python -c "import json,sys; s=json.load(open(sys.argv[1]+'/pipeline.json'))['settings']; \
print(' '.join(f'--set {k}={v}' for k, v in s.items()))" "$1"
}

for exp in "${EXPERIMENTS[@]}"; do
  case "$exp" in
    samplers)  # (d) decoder samplers and step counts: quality against time
      sweep --model "$MODEL" --per-category 1 --vary decoder_sampler=ddpm,ddim,dpmpp_2m \
        --vary decoder_steps=5,10,25,50,100 --label unclip --out "$OUT/samplers" ;;
    guidance_separate)  # (e) separate image / caption guidance scales against the single scale
      sweep --model "$MODEL" --per-category 3 --vary decoder_guidance_image=1,3 --vary decoder_guidance_text=1,3 \
        --label unclip --out "$OUT/guidance_separate" ;;
    z_source)  # (a) §5.1: the prior's z_i against z_t fed to the decoder, at guidance 3 (the GLIDE row: guidance_sweep)
      sweep --model "$MODEL" --set decoder_guidance=3 --vary z_source=prior,text --label unclip --out "$OUT/z_source" ;;
    prior_rows)  # (b) the diffusion prior's end-to-end row at the bundled settings (decoder guidance 3 / 1)
      sweep --model "$MODEL" --label diffusion_prior --out "$OUT/ar_prior/diffusion_sweep" ;;
    ar_prior)  # (b) the AR prior in the same stack (the diffusion prior's row is z_source=prior)
      [ -d "$OUT/ar_prior/model" ] || $UNCLIP assemble --clip "$STACK/parts/clip" --prior "$STACK/parts/ar_prior" \
        --decoder "$STACK/parts/decoder" --upsampler "$STACK/parts/upsampler" --out "$OUT/ar_prior/model" \
        $(settings_of "$MODEL")
      sweep --model "$OUT/ar_prior/model" --label ar_prior --out "$OUT/ar_prior/sweep" ;;
    glide)  # (a, c) the caption-only decoder: z_i dropped at every step, the caption 20% of the time (GLIDE)
      if [ ! -d "$OUT/glide/decoder" ]; then
        $UNCLIP train decoder --preset "$PROFILE" --data shapes --clip "$STACK/parts/clip" --out "$OUT/glide/run" \
          --set model.decoder.p_drop_z_i=1.0 --set model.decoder.p_drop_text=0.2 --resume
        $UNCLIP export "$OUT/glide/run" --out "$OUT/glide/decoder"
      fi
      glide_model ;;
    guidance_sweep)  # (c) §5.2 / Fig. 10-11: one decoder guidance scale over the whole condition, both decoders
      glide_model
      sweep --model "$MODEL" --vary decoder_guidance=1,2,3,5,8 --label unclip --out "$OUT/guidance_sweep/unclip"
      sweep --model "$OUT/glide/model" --vary decoder_guidance=1,2,3,5,8 --label glide_like \
        --out "$OUT/guidance_sweep/glide_like" ;;
    hard_negatives)  # (e) CLIP trained without the hard-negative captions, against the stack's CLIP
      if [ ! -d "$OUT/hard_negatives/clip" ]; then
        $UNCLIP train clip --preset "$PROFILE" --data shapes --set model.hard_negatives=false \
          --out "$OUT/hard_negatives/run" --resume
        $UNCLIP export "$OUT/hard_negatives/run" --out "$OUT/hard_negatives/clip"
      fi
      $UNCLIP eval clip --model "$STACK/parts/clip" --n 1000 --json > "$OUT/hard_negatives/with.json"
      $UNCLIP eval clip --model "$OUT/hard_negatives/clip" --n 1000 --json > "$OUT/hard_negatives/without.json" ;;
    *) echo "unknown experiment '$exp'" >&2; exit 2 ;;
  esac
done
$UNCLIP report "$OUT"/samplers "$OUT"/guidance_sweep/* --out "$OUT/report" --title "unCLIP experiments" 2>/dev/null || true
echo "experiments written under $OUT"
