#!/usr/bin/env bash
# Does the embedding-consistency term (model.embedding_loss_weight, unclip.train.embedding_loss) make the decoder keep
# what z_i says? Fine-tunes the bundled decoder from its own weights as it is (raw) and with the term in the
# whitened distance at weight WEIGHT (1), where a colour-swapped twin costs nearly what another scene does; judged
# and probed beside the bundle (decoder_fine_tune_arms.sh, which takes STEPS, BATCH, LR, EMBED_N and EVAL_N).
# Arm names match decoder_z_whitening.sh's, so one OUT_DIR holds both experiments and the raw arm is shared.
# docs/training.md, "Embedding consistency".
#
#   scripts/experiments/decoder_embedding_loss.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: scripts/experiments/decoder_embedding_loss.sh OUT_DIR}
exec "$(dirname "$0")/decoder_fine_tune_arms.sh" "$OUT" raw= \
  embloss="--set model.embedding_loss_weight=${WEIGHT:-1} --set model.embedding_loss_metric=whitened --set model.whitening_embeddings=@EMB@"
