#!/usr/bin/env bash
# EXPERIMENT, concluded (not shipped; session 14): does more brain anatomy in training lift the
# suite's MNI152 images?
# The held-out MNI152 slices are where invdiff is closest to TV (MRI 8x mni_z85 +0.03 dB over
# the per-image best TV, CT 8 views mni_z95 +0.46). general saw the 112 T1 training slices
# (about 13 % of draws). This continues the finished general run (step 14 250) for 3000 steps
# with the same slices of the same atlas's grey- and white-matter probability maps (`invdiff data
# mni152 --contrast gm|wm`: same held-out band, other contrasts of the same anatomy), each listed
# 4 times (brain slices then about 23 % of draws), and a warm restart of the cosine schedule
# (2e-4 -> 2e-5 over 3000 steps; recipes/continue_general.sh, as for recipes/scale.sh). Result
# (docs/models.md): no gain; denoising of the held-out MNI slices and reconstructions of the validation images unchanged
# (mean of five tasks at 128 px 28.03 dB against general's 28.10).
# Usage: bash recipes/mni_tissue.sh WORKDIR   (about 40 min on one thread of this project's CPU)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:?usage: recipes/mni_tissue.sh WORKDIR}"
mkdir -p "$work/data"  # general.sh generates the other sources (data.sh)
cd "$work"
export OMP_WAIT_POLICY=PASSIVE
[ -f data/mni_gm_train.h5 ] || invdiff data mni152 data/mni_gm_train.h5 --size 128 --split train --contrast gm
[ -f data/mni_wm_train.h5 ] || invdiff data mni152 data/mni_wm_train.h5 --size 128 --split train --contrast wm
tissue=()
for _ in 1 2 3 4; do tissue+=(data/mni_gm_train.h5 data/mni_wm_train.h5); done
exec bash "$here/continue_general.sh" "$work" mni_tissue "${tissue[@]}"
