#!/usr/bin/env bash
# Fine-tune the shipped default `general` on 64-px crops (a candidate successor, not shipped).
# Usage: bash recipes/general_c64.sh WORKDIR [extra invdiff train options, e.g. --resume]
# recipes/general.sh's data and command (network, SDE, noise distribution), with these options
# overriding its own (the last value of an option wins): the crop side (32 -> 64 px: each
# training example shows the network twice the context it was trained with, as whole 128-512 px
# images do at solve time), batch 16, learning rate 5e-5 then a cosine anneal to 1e-5, starting
# from general's weights (--init). Question it answers: does more context in training help the
# large flat regions where general loses to TV (Shepp-Logan at 256 px, 23 views)? Judge on
# validation reconstructions (benchmarks/tune_strategy.py --model WORKDIR/general_c64.pt).
set -euo pipefail
work="${1:?usage: recipes/general_c64.sh WORKDIR [train options]}"
shift
bash "$(dirname "$0")/general.sh" "$work" --out general_c64.pt --init general \
  --crop 64 --batch-size 16 --lr 5e-5 --warmup 100 \
  --lr-decay-start 3000 --lr-decay-steps 3000 --lr-final 0.2 --steps 6000 --seed 1 "$@"
