#!/usr/bin/env bash
# FINISHED, NOT SHIPPED (sessions 9-11): recipes/general.sh at width 48 (--base 48: 3.27 M
# parameters against general's 1.45 M), the same data, preconditioning, noise distribution, EMA and
# schedule (constant 2e-4 to step 10 750, cosine anneal to 2e-5 by 14 250). It ended with the same
# validation denoising as general and worse validation reconstructions (docs/models.md).
# Usage: bash recipes/general48.sh WORKDIR [extra invdiff train options, e.g. --threads 2]
# Its compact state at step 7250 (float32 weights, bfloat16 EMA and Adam second moment, no first
# moment; recipes/compact_state.py) is in commit 300df83; to continue from it:
#   git show 300df83:recipes/state/general48.pt.train > WORKDIR/general48.pt.train
#   bash recipes/general48.sh WORKDIR --resume
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: recipes/general48.sh WORKDIR [train options]}"
shift
exec bash "$here/general.sh" "$work" --out general48.pt --base 48 "$@"
