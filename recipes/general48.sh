#!/usr/bin/env bash
# RUN IN PROGRESS (sessions 9-10, at step 7250): recipes/general.sh at width 48 (--base 48:
# 3.27 M parameters against general's 1.45 M), the same data, preconditioning, noise distribution, EMA and schedule
# (constant 2e-4 to step 10 750, cosine anneal to 2e-5 by 14 250). Session 9's pilot learned
# more per step than general; this run tests whether it ends higher (docs/models.md).
# Usage: bash recipes/general48.sh WORKDIR [extra invdiff train options, e.g. --threads 2]
# At the end of each session its state is committed, compacted (recipes/state/general48.pt.train:
# float32 weights, bfloat16 EMA and Adam second moment, no first moment; recipes/compact_state.py).
# To continue it:
#   cp recipes/state/general48.pt.train WORKDIR/ && bash recipes/general48.sh WORKDIR --resume
# Validation while it trains: python recipes/validate.py WORKDIR/general48.pt --log LOG --watch 900
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: recipes/general48.sh WORKDIR [train options]}"
shift
exec bash "$here/general.sh" "$work" --out general48.pt --base 48 "$@"
