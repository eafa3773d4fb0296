#!/usr/bin/env bash
# Re-create the Shapes-world model stack from nothing, with the project's own commands:
#   CLIP -> embeddings -> diffusion prior -> decoder (64 px) -> upsampler (64 -> 256) -> one pipeline folder.
#
#   scripts/train_shapes_model.sh OUT_DIR            # the `small` presets (a GPU is strongly advised)
#   UNCLIP_PROFILE=bundle scripts/train_shapes_model.sh OUT_DIR # the bundled model: about 22 min on one H100
#   UNCLIP_PROFILE=mini scripts/train_shapes_model.sh OUT_DIR   # the earlier bundled model: 1.5 h on 2 CPU cores
#   UNCLIP_PROFILE=tiny scripts/train_shapes_model.sh OUT_DIR   # seconds on a CPU: checks the chain (tests do)
#
# Run it with the project's environment active (`source .venv/bin/activate`) or with UNCLIP=.venv/bin/unclip.
# Step counts default to each preset's own; override with CLIP_STEPS, PRIOR_STEPS, DECODER_STEPS, UPSAMPLER_STEPS
# and the embedding count with EMBED_N. Every stage keeps its run folder under OUT_DIR/runs (resumable with
# `unclip train STAGE --out RUN --resume`); the finished stack is OUT_DIR/model.
#
# The bundle profile trains on a wall-clock budget per stage (train.max_minutes, constant learning rate and EMA)
# and runs independent stages side by side on the one GPU: the upsampler from the start, the decoder and both
# priors once CLIP is done. *_MINUTES override the budgets; WORKERS_* the data-loading processes; PRECISION the
# autocast (bf16, the bundle's; no for fp32, which benchmarks/train_stage_throughput.py may find faster).
#
# INIT_FROM=STACK_DIR fine-tunes instead of starting fresh: each stage starts from the same part of an assembled
# stack (clip, prior, decoder, upsampler0; train.init_from), e.g. INIT_FROM=src/unclip/assets/shapes-model to train
# the bundled model further in another GPU lease. A part the stack lacks (the AR prior) starts fresh. The priors
# refit their normalization to the new CLIP's embeddings. A fine-tune draws other scenes (DATA_SEED, default 1
# with INIT_FROM, else 0). CLIP_NEGATIVES sets the hard negatives per caption.
#
# CLIP_BINDING=1 trains CLIP for attribute binding (docs/clip.md, "Binding"): every kind of hard negative, the
# swap and relation negatives drawn as counterfactual pairs, the pairwise and separation terms. The prior and the
# decoder then learn the binding CLIP's embeddings; with INIT_FROM they start from the old stack's weights.
#
# DATA=SPEC trains on your own captioned images instead of the Shapes world: a folder (KEY.png + KEY.txt, or a
# metadata.jsonl / metadata.csv table), WebDataset tars or Parquet files (docs/training.md, "Data"); EMBED_N caps
# the images whose embeddings the priors learn from (all of a smaller dataset). CLIP's tokenizer is then trained on
# the data's captions (TOKENIZER=FILE gives one instead).
#
# CLIP_FROM=CLIP_DIR takes a finished CLIP as it is instead of training one (e.g. a checkpoint of the binding recipe,
# scripts/experiments/binding_recipe.sh); UPSAMPLER_FROM=DIR does the same for the upsampler, which does not depend
# on CLIP (e.g. src/unclip/assets/shapes-model/upsampler0). A lease then spends its minutes on the prior and the
# decoder, the parts that must learn a new CLIP's embeddings.
#
# DECODER_WEIGHTING=min_snr (and UPSAMPLER_WEIGHTING) trains that stage with Min-SNR-γ loss weighting (Hang et al.
# 2023; model.loss_weighting, docs/training.md) instead of the paper's uniform L_simple.
# DECODER_WHITENING=1 feeds the decoder a PCA-whitened z_i (model.decoder.z_whitening, fitted on the embedding
# folder, which is then written before the decoder starts; docs/training.md, "Whitening z_i").
# DECODER_EMBEDDING_LOSS=W adds the embedding-consistency term W·ᾱ_t·d(CLIP(x̂0), z_i) to the decoder's loss
# (model.embedding_loss_weight; DECODER_EMBEDDING_METRIC, whitened by default, fitted on the same folder;
# docs/training.md, "Embedding consistency").
set -euo pipefail

OUT=${1:?usage: scripts/train_shapes_model.sh OUT_DIR}
PROFILE=${UNCLIP_PROFILE:-small}
UNCLIP=${UNCLIP:-unclip}
RUNS="$OUT/runs"
MODELS="$OUT/parts"
mkdir -p "$RUNS" "$MODELS"

PARALLEL=0
AR_PRIOR=0
# The trained stacks' sampling defaults: DDPM for the image stages (DDIM leaves speckle on briefly trained
# networks, docs/training.md) and the upsampler started from its noised bicubic input at 0.3 T (SDEdit): from pure
# noise the mini upsampler left blotches (PSNR 18.0, FID 274 against the truth; 31.2 and 173 from 0.3 T;
# docs/results.md). With its condition blurred as in training (upsampler_condition=trained, session 15) the bundled
# upsampler works from pure noise too; 0.3 T stays because it takes 3 network calls instead of 10.
DDPM_SET=(--set decoder_sampler=ddpm --set decoder_steps=50 --set upsampler_sampler=ddpm
          --set upsampler_steps=10 --set inversion_steps=50 --set prior_steps=25 --set upsampler_strength=0.3)
case "$PROFILE" in
  bundle)
    # The bundled model (a GPU): the small CLIP and priors, a 32 px compact decoder (7M) and a compact 4x
    # upsampler to 128 px (2.6M). The decoder stays at 32 px so that `make demo` samples on 2 CPU cores in
    # minutes: a guided step of the 64 px small decoder costs about 2.2 s there (docs/training.md). The default
    # budgets are the ones the bundle was trained with (18 minutes in all on one H100).
    CLIP_PRESET=small PRIOR_PRESET=small DECODER_PRESET=compact UPSAMPLER_PRESET=compact
    PARALLEL=1 AR_PRIOR=1
    BUDGET=(--set train.lr_schedule=constant --set "train.mixed_precision=${PRECISION:-bf16}")
    CLIP_SET=("${BUDGET[@]}" --set "train.max_minutes=${CLIP_MINUTES:-6}" --set "train.num_workers=${WORKERS_CLIP:-10}")
    PRIOR_SET=("${BUDGET[@]}" --set "train.max_minutes=${PRIOR_MINUTES:-5.5}")
    DECODER_SET=("${BUDGET[@]}" --set "train.max_minutes=${DECODER_MINUTES:-11.5}"
                 --set "train.num_workers=${WORKERS_DECODER:-8}")
    UPSAMPLER_SET=("${BUDGET[@]}" --set "train.max_minutes=${UPSAMPLER_MINUTES:-17.5}"
                   --set "train.num_workers=${WORKERS_UPSAMPLER:-4}")
    EXTRA=(--steps 1000000)  # the budgets end every stage
    ASSEMBLE_SET=("${DDPM_SET[@]}")
    EMBED_N=${EMBED_N:-100000}
    ;;
  small)
    # 64 px decoder with the small CLIP, and the 64 -> 256 upsampler (App. C shapes at Shapes-world scale).
    CLIP_PRESET=small PRIOR_PRESET=small DECODER_PRESET=small UPSAMPLER_PRESET=small
    EXTRA=()
    ASSEMBLE_SET=()
    EMBED_N=${EMBED_N:-200000}
    ;;
  mini)
    # The CPU-trained model bundled before the GPU one: a 32 px base decoder with one 4x upsampler to 128 px
    # (App. C's 4x step at a quarter of its scale), sized so the whole chain trains in about 1.5 hours on 2 CPU cores.
    CLIP_PRESET=mini PRIOR_PRESET=mini DECODER_PRESET=mini UPSAMPLER_PRESET=mini
    EXTRA=()
    ASSEMBLE_SET=("${DDPM_SET[@]}")
    EMBED_N=${EMBED_N:-30000}
    ;;
  tiny)
    # Everything minimal: checks that every command fits the next one, not that anything is learned.
    CLIP_PRESET=tiny PRIOR_PRESET=tiny DECODER_PRESET=tiny UPSAMPLER_PRESET=tiny
    PARALLEL=${PARALLEL_TINY:-0} AR_PRIOR=${AR_PRIOR_TINY:-0}
    EXTRA=(--steps 2 --batch-size 4 --no-progress --set train.checkpoint_every=2)
    UPSAMPLER_SET=(--set model.upsampler.resolution=128 --set model.sample_steps=2)
    ASSEMBLE_SET=(--set prior_steps=2 --set decoder_steps=2 --set upsampler_steps=2 --set inversion_steps=2)
    EMBED_N=${EMBED_N:-16}
    ;;
  *) echo "unknown UNCLIP_PROFILE '$PROFILE' (bundle, small, mini or tiny)" >&2; exit 2 ;;
esac
DATA_SEED=${DATA_SEED:-$([ -n "${INIT_FROM:-}" ] && echo 1 || echo 0)}
# DATA=SPEC trains every stage on other captioned images (any --data spec: a folder, tar shards, Parquet files).
SHAPES=${DATA:-"shapes:seed=$DATA_SEED"}
EMBED_DATA=${DATA:-"shapes:split=train,seed=$DATA_SEED"}
# Fine-tuning: a stage starts from STACK/part when INIT_FROM names a stack that has it.
init_from() { [ -n "${INIT_FROM:-}" ] && [ -d "$INIT_FROM/$1" ] && echo "--set train.init_from=$INIT_FROM/$1" || true; }
[ "${CLIP_BINDING:-0}" = 1 ] && CLIP_SET+=(--set model.negatives_per_caption=5 --set model.counterfactual_kinds=swap,relation
                                          --set model.pair_weight=1 --set model.separation_weight=1)
[ -n "${CLIP_NEGATIVES:-}" ] && CLIP_SET+=(--set "model.negatives_per_caption=$CLIP_NEGATIVES")
[ -n "${DECODER_WEIGHTING:-}" ] && DECODER_SET+=(--set "model.loss_weighting=$DECODER_WEIGHTING")
[ -n "${UPSAMPLER_WEIGHTING:-}" ] && UPSAMPLER_SET+=(--set "model.loss_weighting=$UPSAMPLER_WEIGHTING")
# A whitening (of z_i, or of the embedding loss's distance) is fitted on the embedding folder, written first then.
DECODER_FITS_WHITENING=0
[ "${DECODER_WHITENING:-0}" = 1 ] && DECODER_SET+=(--set model.decoder.z_whitening=true) && DECODER_FITS_WHITENING=1
if [ -n "${DECODER_EMBEDDING_LOSS:-}" ]; then
  DECODER_SET+=(--set "model.embedding_loss_weight=$DECODER_EMBEDDING_LOSS"
                --set "model.embedding_loss_metric=${DECODER_EMBEDDING_METRIC:-whitened}")
  if [ "${DECODER_EMBEDDING_METRIC:-whitened}" = whitened ]; then DECODER_FITS_WHITENING=1; fi
fi
[ "$DECODER_FITS_WHITENING" = 1 ] && DECODER_SET+=(--set "model.whitening_embeddings=$OUT/embeddings")
# With DATA, the CLIP learns a tokenizer trained on the data's captions (`unclip data tokenizer`, the first
# TOKENIZER_N captions) unless TOKENIZER names one (a tokenizer.json, shapes-bpe or bytes): the Shapes-world BPE knows
# only Shapes-world words. A fine-tune (INIT_FROM) keeps its stack's tokenizer.
if [ -n "${DATA:-}" ] && [ -z "${INIT_FROM:-}" ] && [ -z "${CLIP_FROM:-}" ] && [ -z "${TOKENIZER:-}" ]; then
  TOKENIZER="$OUT/tokenizer.json"
  $UNCLIP data tokenizer "$DATA" --out "$TOKENIZER" --n "${TOKENIZER_N:-200000}"
fi
[ -n "${TOKENIZER:-}" ] && CLIP_SET+=(--set "model.tokenizer=$TOKENIZER")
CLIP_SET=("${CLIP_SET[@]+"${CLIP_SET[@]}"}")
PRIOR_SET=("${PRIOR_SET[@]+"${PRIOR_SET[@]}"}")
DECODER_SET=("${DECODER_SET[@]+"${DECODER_SET[@]}"}")
UPSAMPLER_SET=("${UPSAMPLER_SET[@]+"${UPSAMPLER_SET[@]}"}")
DEVICE=$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)

steps() { [ -n "${1:-}" ] && echo "--steps $1" || true; }
# With PARALLEL=1 a stage runs in the background and `wait_all` collects it; a failure fails the script.
PIDS=()
launch() { if [ "$PARALLEL" = 1 ]; then "$@" & PIDS+=($!); else "$@"; fi; }
wait_all() { local pid; for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$pid"; done; PIDS=(); }
# Side by side, each stage's progress goes to RUNS/NAME.log; one at a time, to the terminal.
logged() { local log=$1; shift; if [ "$PARALLEL" = 1 ]; then "$@" > "$log" 2>&1; else "$@"; fi; }

train_upsampler() {
  # shellcheck disable=SC2046  # word splitting of $(steps ...) is intended
  logged "$RUNS/upsampler.log" $UNCLIP train upsampler --preset "$UPSAMPLER_PRESET" --data "$SHAPES" \
    --out "$RUNS/upsampler" "${EXTRA[@]}" "${UPSAMPLER_SET[@]}" $(steps "${UPSAMPLER_STEPS:-}") $(init_from upsampler0)
  $UNCLIP export "$RUNS/upsampler" --out "$MODELS/upsampler"
}
train_decoder() {
  # shellcheck disable=SC2046
  logged "$RUNS/decoder.log" $UNCLIP train decoder --preset "$DECODER_PRESET" --data "$SHAPES" --clip "$MODELS/clip" \
    --out "$RUNS/decoder" "${EXTRA[@]}" "${DECODER_SET[@]}" $(steps "${DECODER_STEPS:-}") $(init_from decoder)
  $UNCLIP export "$RUNS/decoder" --out "$MODELS/decoder"
}
train_prior() {  # $1: diffusion_prior or ar_prior; the prior reads the embedding shards, no image is rendered
  local name=prior; [ "$1" = ar_prior ] && name=ar_prior
  # shellcheck disable=SC2046
  logged "$RUNS/$name.log" $UNCLIP train "$1" --preset "$PRIOR_PRESET" --data "embeddings:$OUT/embeddings" \
    --out "$RUNS/$name" "${EXTRA[@]}" "${PRIOR_SET[@]}" $(steps "${PRIOR_STEPS:-}") $(init_from "$name")
  $UNCLIP export "$RUNS/$name" --out "$MODELS/$name"
}

# A finished part taken as it is (CLIP_FROM, UPSAMPLER_FROM): $1 the folder, $2 its variable, $3 where it goes.
use_part() {
  [ -f "$1/config.json" ] || { echo "$2: not a model folder (no config.json): $1" >&2; exit 2; }
  rm -rf "$3" && cp -r "$1" "$3"
}

mkdir -p "$RUNS"
if [ -n "${UPSAMPLER_FROM:-}" ]; then use_part "$UPSAMPLER_FROM" UPSAMPLER_FROM "$MODELS/upsampler"; else launch train_upsampler; fi

if [ -n "${CLIP_FROM:-}" ]; then
  use_part "$CLIP_FROM" CLIP_FROM "$MODELS/clip"
else
  # shellcheck disable=SC2046
  logged "$RUNS/clip.log" $UNCLIP train clip --preset "$CLIP_PRESET" --data "$SHAPES" --out "$RUNS/clip" \
    "${EXTRA[@]}" "${CLIP_SET[@]}" $(steps "${CLIP_STEPS:-}") $(init_from clip)
  $UNCLIP export "$RUNS/clip" --out "$MODELS/clip"
fi

embed() {
  $UNCLIP embed --model "$MODELS/clip" --data "$EMBED_DATA" --n "$EMBED_N" --out "$OUT/embeddings" \
    --device "$DEVICE" --batch-size 256 --workers "${WORKERS_EMBED:-$([ "$PARALLEL" = 1 ] && echo 6 || echo 0)}"
}
# A decoder that fits a whitening on the embeddings waits for them; otherwise both run side by side.
if [ "$DECODER_FITS_WHITENING" = 1 ]; then embed; launch train_decoder; else launch train_decoder; embed; fi
launch train_prior diffusion_prior
[ "$AR_PRIOR" = 1 ] && launch train_prior ar_prior
wait_all

$UNCLIP assemble --clip "$MODELS/clip" --prior "$MODELS/prior" --decoder "$MODELS/decoder" \
  --upsampler "$MODELS/upsampler" --out "$OUT/model" "${ASSEMBLE_SET[@]}" ${HALF:+--half}
echo "model stack ready: $OUT/model"
