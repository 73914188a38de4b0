#!/usr/bin/env bash
# EXPERIMENT, concluded (not shipped): does the prior lack large structures? A 256 or 512 px scan
# shows anatomy 2-4 times larger in pixels than the 128 px training images. This continues the
# finished general run (step 14 250) for 3000 steps with four more sources: ellipse phantoms
# and thorax phantoms rendered at 256 and 512 px and cut into 128 px tiles (`invdiff data ...
# --scale K`), 4516 of 11 516 images; a warm restart of the cosine schedule (2e-4 -> 2e-5 over
# 3000 steps; recipes/continue_general.sh). Result (docs/models.md): no gain at 128 or 256 px on the validation images.
# Usage: bash recipes/scale.sh WORKDIR   (about 30 min on one thread of this project's CPU)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: recipes/scale.sh WORKDIR}"
mkdir -p "$work/data"  # general.sh generates the other sources (data.sh)
cd "$work"
export OMP_WAIT_POLICY=PASSIVE
[ -f data/ellipses_x2.h5 ] || invdiff data ellipses data/ellipses_x2.h5 --n 1500 --size 128 --scale 2 --seed 202
[ -f data/ellipses_x4.h5 ] || invdiff data ellipses data/ellipses_x4.h5 --n 1008 --size 128 --scale 4 --seed 203
[ -f data/thorax_x2.h5 ] || invdiff data phantoms data/thorax_x2.h5 --n 1000 --size 128 --scale 2 --seed 200
[ -f data/thorax_x4.h5 ] || invdiff data phantoms data/thorax_x4.h5 --n 1008 --size 128 --scale 4 --seed 201
exec bash "$here/continue_general.sh" "$work" scale \
  data/ellipses_x2.h5 data/ellipses_x4.h5 data/thorax_x2.h5 data/thorax_x4.h5
