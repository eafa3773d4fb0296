#!/usr/bin/env bash
# Does the embedding-consistency term (model.embedding_loss_weight, unclip.train.embedding_loss) make the decoder keep
# what z_i says? Fine-tunes the bundled decoder from its own weights as it is (raw) and with the term in the whitened
# distance, where a colour-swapped twin costs nearly what another scene does: weighted by ᾱ_t at weight W1 (1), and
# every step alike (signal power 0) at weight W0 (0.2, which gives the term about the same share of the loss).
# Judged and probed beside the bundle (decoder_fine_tune_arms.sh, which takes STEPS, BATCH, LR, EMBED_N and EVAL_N).
# Arm names match decoder_z_whitening.sh's, so one OUT_DIR holds both experiments and the raw arm is shared.
# docs/training.md, "Embedding consistency".
#
#   scripts/experiments/decoder_embedding_loss.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: scripts/experiments/decoder_embedding_loss.sh OUT_DIR}
TERM_SET="--set model.embedding_loss_metric=whitened --set model.whitening_embeddings=@EMB@"
exec "$(dirname "$0")/decoder_fine_tune_arms.sh" "$OUT" raw= \
  embloss="$TERM_SET --set model.embedding_loss_weight=${W1:-1}" \
  embloss_uniform="$TERM_SET --set model.embedding_loss_weight=${W0:-0.2} --set model.embedding_loss_signal_power=0"
