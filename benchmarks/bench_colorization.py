"""Colorization with the shipped RGB model (issue 6) against two chroma baselines.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_colorization.py

Held-out data: 32 x 32 patches of the photograph never seen in training
(``invdiff.data.photos.HOLDOUT``, seed 2). Measurement: the ``grayscale`` operator (mean weights,
noiseless). Every method below reproduces the gray image exactly; they differ only in the two
unmeasured chroma coordinates z_2, z_3 of the decoupled colour space z = Q x
(operators/grayscale.py):

- gray replicated: z_2 = z_3 = 0 (the pseudo-inverse A^+ y, the same gray in R, G and B);
- mean chroma: z_2, z_3 set to their mean over training patches;
- per-gray-level chroma: z_2, z_3 set to their training mean within the gray level's bin
  (32 bins; the least-squares prediction of chroma from gray level alone);
- invdiff: posterior samples with ``replacement`` (Song et al. 2021, colorization), and the mean
  of the samples per patch.

PSNR and SSIM in RGB (invdiff.eval.metrics, SSIM over channels with the stated convention).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from invdiff.core.checkpoint import file_sha256, load_model  # noqa: E402
from invdiff.core.samplers import generators_for  # noqa: E402
from invdiff.core.score import data_range_prior  # noqa: E402
from invdiff.data.photos import HOLDOUT, make_patches  # noqa: E402
from invdiff.eval.metrics import psnr, ssim  # noqa: E402
from invdiff.guidance import Measurement, solve  # noqa: E402
from invdiff.plugins import build_registry, make_plugin_manager  # noqa: E402

MODEL = Path(__file__).parents[1] / "invdiff" / "models" / "rgb32.pt"
BINS = 32


def chroma_baselines(op, train: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return gray-replicated, mean-chroma and per-gray-level-chroma colorizations of y."""
    zt = op.decouple(train)  # (N, 3, H, W); z_1 = gray / |w|
    z1 = op.decouple(op.pseudo_inverse(y))[:, :1]
    zeros = torch.zeros_like(z1).expand(-1, 2, -1, -1)
    mean = zt[:, 1:].mean((0, 2, 3)).view(1, 2, 1, 1).expand_as(zeros)
    lo, hi = float(zt[:, 0].min()), float(zt[:, 0].max())
    edges = torch.linspace(lo, hi, BINS + 1)[1:-1]
    bins_train = torch.bucketize(zt[:, 0].flatten(), edges)
    table = torch.zeros(BINS, 2)
    for c in range(2):
        sums = torch.zeros(BINS).index_add_(0, bins_train, zt[:, 1 + c].flatten())
        counts = torch.zeros(BINS).index_add_(
            0, bins_train, torch.ones_like(bins_train, dtype=sums.dtype)
        )
        table[:, c] = torch.where(counts > 0, sums / counts.clamp_min(1), zt[:, 1 + c].mean())
    per_level = table[torch.bucketize(z1[:, 0], edges)].permute(0, 3, 1, 2)
    return {
        "gray replicated": op.couple(torch.cat([z1, zeros], 1)),
        "mean chroma": op.couple(torch.cat([z1, mean], 1)),
        "per-gray-level chroma": op.couple(torch.cat([z1, per_level], 1)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--n", type=int, default=64, help="held-out patches")
    ap.add_argument("--samples", type=int, default=2, help="posterior samples per patch")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--snr", type=float, default=0.16)
    ap.add_argument("--strategy", default="replacement")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-clip", dest="clip", action="store_false", help="raw prior")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, config = load_model(args.model)
    prior = data_range_prior(model, config, args.clip)  # as `invdiff solve` samples
    size = config["image"]["size"]
    truth = torch.as_tensor(make_patches(args.n, size, seed=2, split="test")[0])
    train = torch.as_tensor(make_patches(4096, size, seed=0, split="train")[0])
    op = build_registry(make_plugin_manager())["grayscale"].create((3, size, size), noise_std=0.0)
    y = op(truth)
    methods = {k: v.clamp(0, 1) for k, v in chroma_baselines(op, train, y).items()}
    idx = np.repeat(np.arange(args.n), args.samples)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = solve(
            prior,
            model.sde,
            [Measurement(op, y[idx])],
            generators_for(range(len(idx)), "cpu"),
            strategy=args.strategy,
            steps=args.steps,
            snr=args.snr,
        )
    wall = time.perf_counter() - t0
    x = res.x.reshape(args.n, args.samples, 3, size, size)
    methods["invdiff sample"] = x[:, 0].clamp(0, 1)
    k = 2
    while k <= args.samples:  # posterior means of the first 2, 4, 8, ... samples
        methods[f"invdiff mean of {k}"] = x[:, :k].mean(1).clamp(0, 1)
        k *= 2
    gray_error = float((op(x.flatten(0, 1)) - y[idx]).abs().max())
    rows = {}
    for name, est in methods.items():
        p, s = psnr(est.numpy(), truth.numpy()), ssim(est.numpy(), truth.numpy())
        rows[name] = {"psnr": float(p.mean()), "psnr_se": float(p.std(ddof=1) / len(p) ** 0.5)}
        rows[name].update(ssim=float(s.mean()), ssim_se=float(s.std(ddof=1) / len(s) ** 0.5))
        print(name, rows[name], flush=True)
    figure = RESULTS / "colorization.png"
    _figure(figure, truth, y, methods)
    report = {
        "command": "python benchmarks/bench_colorization.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "machine": machine(args.threads),
        "model": args.model,
        "model_sha256": file_sha256(args.model),
        "model_steps": config.get("training", {}).get("steps_done"),
        "held_out_photo": HOLDOUT,
        "sampling_wall_s": round(wall, 1),
        "nfe": res.nfe,
        "max_gray_error_of_samples": gray_error,
        "results": rows,
        "figure": figure.name,
    }
    lines = [
        "# Colorization on held-out patches (issue 6)",
        "",
        f"Command: `{report['command']}`; CPU, {args.threads} thread(s), shared machine. "
        f"{args.n} patches of {size} x {size} from the held-out photograph `{HOLDOUT}` "
        f"(seed 2); model `{Path(args.model).name}` ({report['model_steps']} training steps); "
        f"{args.strategy}, {args.steps} steps, snr {args.snr}, {args.samples} samples per patch "
        f"({wall:.0f} s); prior "
        f"{'clipped to [0, 1] (ClippedScore, the solve default)' if args.clip else 'raw'}. "
        f"Largest |gray(sample) - gray input|: {gray_error:.2e}.",
        "",
        "| method | PSNR dB (RGB) | SSIM (RGB) |",
        "|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | {r['ssim']:.3f} ± "
            f"{r['ssim_se']:.3f} |"
        )
    lines += [
        "",
        "± one standard error over patches. Figure: `colorization.png` (rows: truth, "
        "gray input, per-gray-level chroma, invdiff sample, invdiff mean of all samples).",
    ]
    write_results("colorization", report, "\n".join(lines) + "\n")


def _figure(path, truth, y, methods) -> None:
    from invdiff.images import grid, save_png

    k = min(8, len(truth))
    rows = [
        truth[:k],
        y[:k].expand(-1, 3, -1, -1),
        methods["per-gray-level chroma"][:k],
        methods["invdiff sample"][:k],
    ]
    means = [name for name in methods if name.startswith("invdiff mean")]
    rows += [methods[means[-1]][:k]] if means else []
    save_png(path, grid(torch.cat(rows).numpy(), ncols=k), scale=3)


if __name__ == "__main__":
    main()
