#!/usr/bin/env bash
# EXPERIMENT, stopped (not shipped): fine-tune the shipped default `general` on 64-px crops.
# Usage: bash recipes/general_c64.sh WORKDIR [extra invdiff train options, e.g. --resume]
# recipes/general.sh's data and command (network, SDE, noise distribution), with these options
# overriding its own (the last value of an option wins): the crop side (32 -> 64 px: each
# training example shows the network twice the context it was trained with, as whole 128-512 px
# images do at solve time), batch 16, learning rate 5e-5 then a cosine anneal to 1e-5, starting
# from general's weights (--init). Question it answers: does more context in training help the
# large flat regions where general loses to TV (Shepp-Logan at 256 px, 23 views)? Judge on
# validation reconstructions (benchmarks/tune_strategy.py --model WORKDIR/general_c64.pt).
# Result (session 12, EMA at step 750, default solve, 2 samples, --config '{}'): the suite's
# validation images at 128 px, CT 23 / CT 8 / MRI 4x / MRI 8x / inpainting 32.95 / 25.22 / 30.25
# / 25.38 / 31.21 dB against general's 32.88 / 25.21 / 30.13 / 25.33 / 31.21 (mean +0.05); CT 23
# views at 256 px 31.28 against 31.11 (`blobs` 33.85 against 33.20). Too small to go on with,
# as recipes/ctx.sh (64-px crops from scratch, one more level) had found at 14 250 steps.
set -euo pipefail
work="${1:?usage: recipes/general_c64.sh WORKDIR [train options]}"
shift
bash "$(dirname "$0")/general.sh" "$work" --out general_c64.pt --init general \
  --crop 64 --batch-size 16 --lr 5e-5 --warmup 100 \
  --lr-decay-start 3000 --lr-decay-steps 3000 --lr-final 0.2 --steps 6000 --seed 1 "$@"
