"""The benchmark harness's report: the figures (PNG) and the Markdown, all numbers read from the
report; :func:`jsonable` turns a report into the JSON stored beside them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from benchmarks import datasets
from benchmarks.harness_verdict import limits
from invdiff.core.reconstruct import SEED_SCHEME
from invdiff.eval.metrics import SSIM_CONVENTION
from invdiff.images import grid, save_png


def task_figure(path: Path, res: dict, rows: int = 2) -> None:
    """Write truth | baseline(s) | invdiff main mean | main std (scaled by its max) for 2 images."""
    m = res["methods"]
    base = [k for k in m if not k.startswith("invdiff")]
    cols = [res["truth"]] + [m[k]["image"] for k in base] + [m["invdiff main"]["image"]]
    std = m["invdiff main"].get("std_image")
    if std is not None:
        cols.append(std / std[:rows].max().clamp_min(1e-12))
    tiles = [c[i].numpy() for i in range(min(rows, len(res["truth"]))) for c in cols]
    save_png(path, grid(np.stack(tiles), ncols=len(cols)), scale=3)


def sweep_figure(path: Path, sweep: list[dict], tasks: dict) -> bool:
    """Plot PSNR against NFE, one panel per task; return False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sweep = [r for r in sweep if "not_applicable" not in r]
    names = sorted({r["task"] for r in sweep})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for strategy in dict.fromkeys(r["strategy"] for r in sweep if r["task"] == name):
            pts = [
                (r["nfe"], r["psnr"]["mean"])
                for r in sweep
                if r["task"] == name and r["strategy"] == strategy
            ]
            ax.plot(*zip(*pts, strict=True), marker="o", label=strategy)
        for method, m in tasks.get(name, {}).get("methods", {}).items():
            if not method.startswith("invdiff"):
                ax.axhline(m["psnr"]["mean"], ls="--", lw=1, color="gray")
                ax.annotate(
                    method,
                    (1, m["psnr"]["mean"]),
                    xycoords=("axes fraction", "data"),
                    ha="right",
                    va="bottom",
                    fontsize=8,
                    color="gray",
                )
        ax.set_xscale("log")
        ax.set_xlabel("NFE per sample")
        ax.set_ylabel("PSNR (dB), one sample")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from invdiff.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def figures(out: Path, name: str, tasks: dict, sweep: list[dict]) -> list[str]:
    """Write the task figures and the PSNR-against-NFE plot into ``out``; return their names."""
    names = []
    for task, res in tasks.items():
        task_figure(out / f"{name}_{task}.png", res)
        names.append(f"{name}_{task}.png")
    if sweep and sweep_figure(out / f"{name}_psnr_vs_nfe.png", sweep, tasks):
        names.append(f"{name}_psnr_vs_nfe.png")
    return names


def fmt(s: dict, digits: int) -> str:
    return f"{s['mean']:.{digits}f} +- {s['std']:.{digits}f}"


def markdown(report: dict) -> str:
    """Return the results as Markdown (all numbers read from ``report``)."""
    cfg, info = report["config"], report["run"]
    mach = info["machine"]
    lines = [
        "# Benchmark harness: invdiff against classical baselines",
        "",
        f"Produced by `{info['command']}` in {info['wall_seconds'] / 60:.1f} min on "
        f"{mach['processor']} ({mach['cpu_count']} cores, shared; load average at start "
        f"{mach['load_average_at_start']}), device {cfg['device']}"
        f"{' (' + mach['cuda'] + ')' if mach['cuda'] else ''}, {mach['torch_threads']} torch "
        f"thread(s), OMP_WAIT_POLICY={info['omp_wait_policy']}, torch {mach['torch']}. "
        f"Model: `{info['model']['path']}` (sha256 {info['model']['sha256'][:12]}, "
        f"{info['model']['training_steps']} training steps).",
        "",
        f"Data: {cfg['n_test']} test phantoms (seed 2) per task for every number below, "
        f"{cfg['n_val']} validation phantoms (seed 1) for tuning, {cfg['size']} x {cfg['size']}; "
        f"files and checksums from `benchmarks/datasets.py` (all match SHA256SUMS: "
        f"{info['checksums_all_match']}). Noise: {datasets.NOISE_DEFINITION}.",
        "",
        f"Metrics: PSNR with data_range 1 on images clipped to [0, 1]; SSIM from scikit-image "
        f"with {dict(SSIM_CONVENTION)}. Mean +- standard deviation over test images. invdiff "
        f"scores the posterior mean of {cfg['samples']} samples per image; 'sample PSNR' is the "
        "mean PSNR of single samples; coverage is the fraction of pixels inside the per-pixel "
        f"90 % interval of the {cfg['samples']} samples (`invdiff.eval.metrics.coverage`; exact "
        f"samples give 0.9 (S-1)/(S+1) = {0.9 * (cfg['samples'] - 1) / (cfg['samples'] + 1):.2f}"
        f" at S = {cfg['samples']}). Time is wall time per test image, all samples included.",
        "",
        f"invdiff main: projection (Song et al. 2022) with their snr / lambda, "
        f"{cfg['main_steps']} predictor-corrector steps. invdiff fast: DiffPIR (Zhu et al. 2023),"
        f" {cfg['fast_steps']} steps, lambda tuned on {cfg['n_tune']} validation images. "
        f"FISTA-TV: {cfg['fista_iterations']} iterations, box [0, 1], adaptive restart, weight "
        f"tuned on {cfg['n_fista_val']} validation images (log grid, refined). Both invdiff "
        + (
            "strategies clip the prior's denoised estimate to [0, 1] (`ClippedScore`, the "
            "`invdiff solve` default)."
            if cfg.get("clip", False)
            else "strategies use the raw prior (no clip of the denoised estimate)."
        ),
        "",
        "## Issue-5 targets",
        "",
        "| task | invdiff | target | PSNR gain (dB) | vs target (dB) | SSIM higher | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["targets"]:
        if t.get("status") == "not run":
            lines.append(f"| {t['task']} | | | | | | not run |")
            continue
        status = "met" if t["met"] else "missed"
        if not t["met"]:
            why = [f"PSNR by {-t['gap_to_target_db']:.2f} dB"] if t["gap_to_target_db"] < 0 else []
            why += ["SSIM not higher"] if t["needs_higher_ssim"] and not t["ssim_higher"] else []
            status += " (" + ", ".join(why) + ")"
        target = f"{t['baseline']} + {t['margin_db']:g} dB" + (
            " and higher SSIM" if t["needs_higher_ssim"] else ""
        )
        lines.append(
            f"| {t['task']} | {t['method']} | {target} | {t['psnr_gain_db']:+.2f} | "
            f"{t['gap_to_target_db']:+.2f} | {'yes' if t['ssim_higher'] else 'no'} | {status} |"
        )
    lines += limits(report)
    lines += [
        "",
        "## Results per task",
        "",
        "| task | method | PSNR (dB) | SSIM | sample PSNR | NFE / sample | samples | s / image "
        "| coverage 90 % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in report["tasks"].items():
        for method, m in res["methods"].items():
            post = "nfe_per_sample" in m
            lines.append(
                f"| {name} | {method} | {fmt(m['psnr'], 2)} | {fmt(m['ssim'], 3)} | "
                f"{fmt(m['sample_psnr'], 2) if post else ''} | "
                f"{m['nfe_per_sample'] if post else ''} | {m['samples'] if post else ''} | "
                f"{m['seconds_per_image']:.3g} | "
                f"{fmt(m['coverage90'], 3) if 'coverage90' in m else ''} |"
            )
    lines += ["", "## Tasks and tuning (validation set only)", ""]
    for name, res in report["tasks"].items():
        noise = f"noise_std {res['noise_std']:.4g}" if res["noise_std"] else "noiseless"
        lines.append(f"- **{name}**: {res['title']}; `{res['operator']}` {res['params']}; {noise}.")
        for method, tun in res["tuning"].items():
            if "weight" in tun:
                row = ", ".join(
                    f"{r['weight']:.3g}: {r['mean_psnr']:.2f}" for r in tun["validation_table"]
                )
                lines.append(f"  - {method} weight {tun['weight']:.3g} (val PSNR by weight: {row})")
            else:
                row = ", ".join(f"{r['lam']:g}: {r['mean_psnr']:.2f}" for r in tun["table"])
                lines.append(
                    f"  - {method} lambda by val PSNR ({row}); likelihood noise_std "
                    f"{tun['likelihood_noise_std']:.3g}"
                )
    if report["sweep"]:
        lines += [
            "",
            "## PSNR against NFE (issue 4)",
            "",
            f"First {cfg['sweep_images']} test images, one sample each ({SEED_SCHEME}, "
            "seed 0). Projection and noisy likelihood use a Langevin corrector (2 NFE "
            "per step); DPS adds one backward pass per step and moment one per CG iteration (VJP "
            "column); strategies that do not apply to a task say why. DPS (zeta 1) and "
            "the noisy likelihood (snr 0.16) run with their defaults, untuned; projection uses "
            "Song's settings and DiffPIR the lambda tuned for the task. Peak memory is the "
            "process peak RSS so far (monotone over the run)"
            + (", CUDA allocator peak per row" if cfg["device"].startswith("cuda") else "")
            + ".",
            "",
            "| task | strategy | NFE | VJP | PSNR (dB) | SSIM | s / image | peak memory (MB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["sweep"]:
            if "not_applicable" in r:
                lines.append(
                    f"| {r['task']} | {r['strategy']} | not applicable: {r['not_applicable']} "
                    "| | | | | |"
                )
                continue
            mem = r["memory"].get("cuda_peak_allocated_mb", r["memory"]["process_peak_rss_mb"])
            lines.append(
                f"| {r['task']} | {r['strategy']} | {r['nfe']} | {r['vjp']} | "
                f"{fmt(r['psnr'], 2)} | {fmt(r['ssim'], 3)} | {r['seconds_per_image']:.3g} | "
                f"{mem:.0f} |"
            )
    lines += ["", "## Figures", ""]
    for f in info["figures"]:
        lines.append(f"![{f}]({f})")
    lines += [
        "",
        "Task figures: each row one test image; columns truth, the baselines (order of the "
        "table), the invdiff main posterior mean, and its posterior std divided by its maximum.",
        "",
        f"DeepInverse peer: {info['deepinv']}.",
        "",
    ]
    return "\n".join(lines)


def jsonable(obj):
    """Return obj with tensors and arrays as lists; drop the image tensors."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if k not in ("image", "std_image", "truth")}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor | np.ndarray):
        return jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
