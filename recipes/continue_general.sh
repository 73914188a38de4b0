#!/usr/bin/env bash
# Continue the finished general run with more training sources: start from its final training
# state (weights, EMA, optimiser, scheduler at step 14 250, commit fd537f8), then run
# recipes/general.sh's command with the sources added and a warm restart of the cosine schedule
# (2e-4 -> 2e-5 over 3000 steps, to step 17 250); invdiff train takes the last value of an option
# and files anywhere on the line. Writes WORKDIR/NAME/general.pt (and its .train state; a second
# call resumes it). Used by the concluded experiments recipes/scale.sh and recipes/mni_tissue.sh.
# Usage: bash recipes/continue_general.sh WORKDIR NAME DATA.h5 [DATA.h5 ...]  (paths in WORKDIR)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: recipes/continue_general.sh WORKDIR NAME DATA.h5 [DATA.h5 ...]}"
name="${2:?usage: recipes/continue_general.sh WORKDIR NAME DATA.h5 [DATA.h5 ...]}"
shift 2
mkdir -p "$work/$name"
state="$work/$name/general.pt.train"
[ -f "$state" ] || git -C "$here" show fd537f8:recipes/state/general.pt.train > "$state"
exec bash "$here/general.sh" "$work" "$@" \
  --out "$name/general.pt" --lr-decay-start 14250 --lr-decay-steps 3000 --steps 17250 --resume
