"""Figures of a model card: training loss and validation curves, and a sample gallery.

    python recipes/model_card.py MODEL --train-log runs/train.log --val-log runs/val.jsonl \
        --out docs/models/general

Writes OUT_training.png (the training loss printed at each checkpoint; the validation denoising
PSNR of recipes/validate.py, EMA and raw weights) and OUT_gallery.png (rows: held-out validation
images at 128 px with noise sigma = 0.1 and the model's denoised estimate; then unconditional
samples of 64 x 64 drawn with 200 reverse-diffusion steps, seeds 0-7). Needs matplotlib
(``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package
from benchmarks import bench_ood, ood_images  # noqa: E402
from invdiff.core.checkpoint import load_model, resolve_model  # noqa: E402
from invdiff.core.samplers import generators_for, pc_sample  # noqa: E402
from invdiff.core.score import data_range_prior  # noqa: E402
from invdiff.images import grid, save_png  # noqa: E402

CURVES = ("128px sigma=0.05", "128px sigma=0.1", "128px sigma=0.2")


def training_figure(train_log: Path, val_log: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    for line in train_log.read_text().splitlines():
        m = re.match(r"step (\d+)/\d+\s+loss ([\d.]+)", line)
        if m:
            steps.append(int(m[1]))
            losses.append(float(m[2]))
    rows = [json.loads(v) for v in val_log.read_text().splitlines() if v.strip()]
    rows = sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, losses)
    a.set(xlabel="training step", ylabel="loss (EDM, F-space, smoothed)", title="training loss")
    a.grid(alpha=0.3)
    for key in CURVES:
        xs = [r["step"] for r in rows]
        b.plot(xs, [r["psnr"][key] for r in rows], label=f"{key} (EMA)")
        if all("psnr_raw" in r for r in rows):
            b.plot(xs, [r["psnr_raw"][key] for r in rows], "--", label=f"{key} (raw)")
    b.set(xlabel="training step", ylabel="PSNR (dB)", title="denoising, held-out images")
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def gallery(model_name: str, out: Path) -> None:
    model, config = load_model(resolve_model(model_name))
    x0 = torch.as_tensor(np.concatenate([ood_images.load(n, 128) for n in bench_ood.VAL_DENOISE]))
    g = torch.Generator().manual_seed(0)
    noisy = x0 + 0.1 * torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        den = model.denoise(noisy, model.sde.time_of_ratio(torch.full((len(x0),), 0.1)))
    top = np.concatenate([noisy.clamp(0, 1).numpy(), den.clamp(0, 1).numpy(), x0.numpy()])
    prior = data_range_prior(model, config, clip=True)
    samples = pc_sample(prior, model.sde, (1, 64, 64), generators_for(range(8), "cpu"), steps=200)
    save_png(out.with_name(out.name + "_denoise.png"), grid(top, ncols=len(x0)))
    save_png(out.with_name(out.name + "_samples.png"), grid(samples.x.numpy(), ncols=8), scale=2)
    print(f"wrote {out}_denoise.png and {out}_samples.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--train-log", type=Path, required=True)
    ap.add_argument("--val-log", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="path stem of the figures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    training_figure(
        args.train_log, args.val_log, args.out.with_name(args.out.name + "_training.png")
    )
    gallery(args.model, args.out)


if __name__ == "__main__":
    main()
