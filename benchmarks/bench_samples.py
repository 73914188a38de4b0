"""Unconditional samples with and without the clip of the denoised estimate (``ClippedScore``).

On the shipped phantom model (or ``--model``), ``--n`` samples with the PC sampler (reverse
diffusion + Langevin, snr 0.16, ``--steps`` steps, final Tweedie step), the same seeds twice:
once from the raw prior, once from the prior whose denoised estimate is clipped to the data range
(the default of ``invdiff sample`` and ``invdiff solve``). Reported for each:

- the range of the samples before any clip to [0, 1] (the raw prior can leave it);
- mean intensity and "tissue area" (fraction of pixels above 0.2: soft tissue and bone, not air or
  lung) against the same figures for 256 real test phantoms (seed 2);
- the fraction of samples whose tissue area lies inside the central 98 % of the real phantoms'
  (1st to 99th percentile), below it, above it, and nearly empty (tissue area < 0.05): a crude,
  objective check that a sample is a body of plausible size, which catches both the near-empty
  samples of an under-trained prior and bodies that are too large;
- a PNG: raw samples (top rows), clipped samples (middle rows), real phantoms (bottom rows).

    python benchmarks/bench_samples.py [--model M --n 32 --steps 100 --threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from invdiff.core import samplers  # noqa: E402
from invdiff.core.checkpoint import default_model_path, file_sha256, load_model  # noqa: E402
from invdiff.core.score import data_range_prior  # noqa: E402
from invdiff.data.phantoms import SPLIT_SEEDS, make_phantoms  # noqa: E402
from invdiff.images import grid, save_png  # noqa: E402

TISSUE_LEVEL = 0.2


def stats(x: np.ndarray, lo: float, hi: float) -> dict:
    """Return the figures of one set of images (N, C, H, W), before any clipping."""
    area = (x > TISSUE_LEVEL).mean((1, 2, 3))
    return {
        "min": float(x.min()),
        "max": float(x.max()),
        "mean_intensity": float(x.mean()),
        "tissue_area_mean": float(area.mean()),
        "fraction_plausible_size": float(((area >= lo) & (area <= hi)).mean()),
        "fraction_too_small": float((area < lo).mean()),
        "fraction_nearly_empty": float((area < 0.05).mean()),
        "fraction_too_large": float((area > hi).mean()),
        "tissue_area_per_image": [round(float(a), 4) for a in area],
    }


def plausible_area(size: int) -> tuple[np.ndarray, float, float]:
    """Return 256 real test phantoms and the 1st and 99th percentile of their tissue area."""
    real = make_phantoms(256, size, SPLIT_SEEDS["test"])[0]
    real_area = (real > TISSUE_LEVEL).mean((1, 2, 3))
    lo, hi = (float(v) for v in np.percentile(real_area, [1, 99]))
    return real, lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = args.model or default_model_path()
    model, config = load_model(path)
    image = config["image"]
    shape = (image["channels"], image["size"], image["size"])
    real, lo, hi = plausible_area(image["size"])
    report = {
        "command": "python benchmarks/bench_samples.py " + " ".join(sys.argv[1:]),
        "machine": machine(args.threads),
        "model": {"path": os.path.relpath(path), "sha256": file_sha256(path)},
        "model_steps": config.get("training", {}).get("steps_done"),
        "n": args.n,
        "steps": args.steps,
        "plausible_tissue_area": [lo, hi],
        "real": stats(real, lo, hi),
    }
    corrector = samplers.make_corrector("langevin", snr=0.16)
    images = {}
    for name, clip in (("raw", False), ("clipped", True)):
        prior = data_range_prior(model, config, clip)
        gens = samplers.generators_for(range(args.n), "cpu")
        t0 = time.perf_counter()
        with torch.no_grad():
            res = samplers.pc_sample(
                prior, model.sde, shape, gens, corrector=corrector, steps=args.steps
            )
        x = res.x.numpy()
        images[name] = x
        report[name] = {**stats(x, lo, hi), "nfe": res.nfe, "wall_s": time.perf_counter() - t0}
        print(name, report[name], flush=True)
    k = min(args.n, 16)
    both = [np.clip(images["raw"][:k], 0, 1), np.clip(images["clipped"][:k], 0, 1), real[:k]]
    figure = RESULTS / "samples_clip.png"
    save_png(figure, grid(np.concatenate(both), ncols=8), scale=2)
    report["figure"] = figure.name
    write_results("samples", report, markdown(report))


def markdown(r: dict) -> str:
    lo, hi = r["plausible_tissue_area"]
    m = r["machine"]
    lines = [
        "# Unconditional samples: raw prior against the clipped denoised estimate",
        "",
        f"Command: `{r['command']}`; {m['processor']}, {m['torch_threads']} thread(s), "
        f"torch {m['torch']}, load average at start {m['load_average_at_start']}. Model "
        f"`{r['model']['path']}` (sha256 {r['model']['sha256'][:12]}, {r['model_steps']} "
        f"training steps). {r['n']} samples each, the same seeds for both rows, PC sampler "
        f"({r['steps']} steps, reverse diffusion + Langevin snr 0.16, final Tweedie step, "
        f"{r['raw']['nfe']} NFE). 'Clipped': `ClippedScore`, the denoised estimate clipped to "
        "[0, 1] every step (the default of `invdiff sample` and `invdiff solve`).",
        "",
        f"Plausible size: tissue area (fraction of pixels > {TISSUE_LEVEL}) inside "
        f"[{lo:.3f}, {hi:.3f}], the 1st to 99th percentile of 256 real test phantoms.",
        "",
        "| images | min | max | mean intensity | tissue area | plausible size | too small "
        "| nearly empty | too large |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("raw", "clipped", "real"):
        s = r[name]
        lines.append(
            f"| {name} | {s['min']:.2f} | {s['max']:.2f} | {s['mean_intensity']:.3f} | "
            f"{s['tissue_area_mean']:.3f} | {s['fraction_plausible_size']:.2f} | "
            f"{s['fraction_too_small']:.2f} | {s['fraction_nearly_empty']:.2f} | "
            f"{s['fraction_too_large']:.2f} |"
        )
    lines += [
        "",
        f"![raw samples (top two rows), clipped (middle), real (bottom)]({r['figure']})",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
