#!/usr/bin/env bash
# Does whitening z_i at the decoder's input (model.decoder.z_whitening, unclip.models.whitening) make the decoder
# read the faint directions of z_i that carry attribute binding? Fine-tunes the bundled decoder twice from its own
# weights: as it is (raw z_i) and whitened. The whitened run's projections are rewritten at the start so that it
# computes exactly what the bundled decoder does (train.init_from keeps the function); the runs differ only in the
# geometry of their gradient steps. Judged and probed beside the bundle (decoder_fine_tune_arms.sh, which takes
# STEPS, BATCH, LR, EMBED_N and EVAL_N); FLOOR is decoder.z_whitening_floor (1e-3). docs/training.md, "Whitening z_i".
#
#   scripts/experiments/decoder_z_whitening.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: scripts/experiments/decoder_z_whitening.sh OUT_DIR}
exec "$(dirname "$0")/decoder_fine_tune_arms.sh" "$OUT" raw= \
  whitened="--set model.decoder.z_whitening=true --set model.decoder.z_whitening_floor=${FLOOR:-1e-3} --set model.whitening_embeddings=@EMB@"
