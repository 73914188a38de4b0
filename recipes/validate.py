"""Validation curve of a training run: denoising PSNR of a checkpoint on held-out images.

Adds a line to LOG (JSON lines) for CHECKPOINT: its training step, and the PSNR of the model's
denoiser D(x + sigma z) against x on the suite's validation images (``bench_ood.VAL_DENOISE``) at
64 and 128 px, for several sigma, with fixed noise (seed 0). Run it on each new checkpoint while
training (``--watch`` polls the file) to watch the model improve on images it never trains on.

    python recipes/validate.py /work/runs/general.pt --log runs/general_val.jsonl [--watch 300]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package
from benchmarks import bench_ood, ood_images  # noqa: E402
from invdiff.core import checkpoint as ckpt  # noqa: E402
from invdiff.core.checkpoint import load_model  # noqa: E402
from invdiff.eval.metrics import psnr  # noqa: E402
from invdiff.training.train import state_path  # noqa: E402

SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SIZES = (64, 128)


def validate(path: Path) -> dict:
    """Return the checkpoint's step and its denoising PSNR per (size, sigma), for the weights in
    the model file (EMA) and, when the training state is beside it, the raw weights (an EMA of
    0.999 still carries 0.999^k of the initial weights after k steps: 37 % at k = 1000)."""
    model, config = load_model(path)
    out = {"step": int(config["training"]["steps_done"]), "time": time.time()}
    out["psnr"] = _denoising(model)
    state = state_path(path)
    if state.exists():
        model.load_state_dict(ckpt.load(state, ckpt.STATE_FORMAT)["model"])
        out["psnr_raw"] = _denoising(model)
    return out


def _denoising(model) -> dict:
    out = {}
    for size in SIZES:
        x0 = torch.as_tensor(
            np.concatenate([ood_images.load(n, size) for n in bench_ood.VAL_DENOISE])
        )
        g = torch.Generator().manual_seed(0)
        for sigma in SIGMAS:
            z = torch.randn(x0.shape, generator=g)
            t = model.sde.time_of_ratio(torch.full((len(x0),), sigma))
            with torch.no_grad():
                d = model.denoise(x0 + sigma * z, t).clamp(0, 1)
            out[f"{size}px sigma={sigma}"] = float(psnr(d.numpy(), x0.numpy()).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--watch", type=float, default=0, help="poll every this many seconds")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seen = None
    while True:
        stamp = args.checkpoint.stat().st_mtime if args.checkpoint.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            row = validate(args.checkpoint)
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")
            raw = row.get("psnr_raw", {})
            print(
                row["step"],
                {k: (round(v, 2), round(raw.get(k, 0), 2)) for k, v in row["psnr"].items()},
                flush=True,
            )
        if not args.watch:
            break
        time.sleep(args.watch)


if __name__ == "__main__":
    main()
