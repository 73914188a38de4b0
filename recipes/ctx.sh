#!/usr/bin/env bash
# EXPERIMENT, concluded (not shipped): a wider-context variant of recipes/general.sh, to test
# whether the prior's context limits the out-of-distribution suite's large sparse-view CT and MRI
# 8x images. general.sh's data, noise distribution, preconditioning, EMA and schedule, with three
# options overridden (invdiff train takes the last value of an option): 64-px crops in batches of
# 8 (the same pixels per step as 32 x 32 px) and one more UNet level (--mult 1,2,2,2,2), which
# doubles the receptive field. Result (docs/models.md): no gain over general at 14 250 steps.
# Usage: bash recipes/ctx.sh WORKDIR [extra invdiff train options, e.g. --resume --threads 2]
# Its state at step 4500 is in git history; to resume from it:
#   git show 86d751d:recipes/state/ctx.pt.train > WORKDIR/ctx.pt.train
# Compare with general at equal steps: python recipes/validate.py WORKDIR/ctx.pt --log LOG.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: recipes/ctx.sh WORKDIR [train options]}"
shift
exec bash "$here/general.sh" "$work" --out ctx.pt --crop 64 --batch-size 8 --mult 1,2,2,2,2 "$@"
