"""Write a compact copy of a training state for committing (see recipes/general48.sh).

    python recipes/compact_state.py WORK/general48.pt.train recipes/state/general48.pt.train

float32 weights, bfloat16 EMA and Adam second moment, Adam's first moment left out (about half
the size; resuming from it is close to, not bit-exact with, an uninterrupted run):
:func:`invdiff.training.train.compact_state`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from invdiff.training.train import compact_state

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()
    compact_state(args.src, args.dst)
    mib = args.dst.stat().st_size / 2**20
    print(f"wrote {args.dst} ({mib:.1f} MiB, from {args.src.stat().st_size / 2**20:.1f} MiB)")
