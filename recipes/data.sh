#!/usr/bin/env bash
# Generate the grayscale training data of recipes/general.sh and recipes/ctx.sh into WORKDIR/data
# (files that exist are kept). Licences and held-out images: docs/models.md.
# Usage: bash recipes/data.sh WORKDIR
set -euo pipefail
work="${1:?usage: recipes/data.sh WORKDIR}"
mkdir -p "$work/data"
cd "$work/data"
export OMP_WAIT_POLICY=PASSIVE
[ -f thorax.h5 ] || invdiff data phantoms thorax.h5 --n 1500 --size 128 --seed 0
[ -f ellipses.h5 ] || invdiff data ellipses ellipses.h5 --n 1500 --size 128 --seed 102
[ -f deadleaves.h5 ] || invdiff data deadleaves deadleaves.h5 --n 1500 --size 128 --seed 100
[ -f foam.h5 ] || invdiff data foam foam.h5 --n 800 --size 128 --seed 101
[ -f textures.h5 ] || invdiff data textures textures.h5 --n 800 --size 128 --seed 103
[ -f mni_train.h5 ] || invdiff data mni152 mni_train.h5 --size 128 --split train
