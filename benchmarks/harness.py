"""Benchmark harness: diffusion-prior reconstructions against classical baselines (issues 4 and 5).

    python benchmarks/harness.py [--tasks ct23 mri8 ...] [--threads 2] [--device cpu] [--tiny]

For every task of ``benchmarks/datasets.py`` (CT 23 / 8 views with and without 1 % noise, MRI 4x /
8x equispaced and 8x variable density, inpainting 70 % random and a box), on the fixed test set:

- classical baselines: FBP (CT), zero-filled (MRI), biharmonic (inpainting), and FISTA-TV
  (Beck & Teboulle 2009) for CT and MRI with its weight tuned on the VALIDATION set;
- invdiff, main strategy: the projection sampler of Song, Shen, Xing, Ermon (ICLR 2022) with
  their snr / lambda (CT 0.246 / 0.841, MRI 0.517 / 1.0; masks lambda 1, snr 0.16) at
  ``--main-steps`` predictor-corrector steps (2 NFE each);
- invdiff, fast strategy: DiffPIR (Zhu et al., CVPRW 2023) at ``--fast-steps`` + 1 NFE, its
  lambda picked from a small grid on ``--n-tune`` validation images (never on test images);
- each invdiff strategy draws ``--samples`` posterior samples per image: the posterior mean is
  scored, the per-pixel std is mapped, and the coverage of 90 % credible intervals is reported;
- the issue-4 sweep: PSNR / SSIM / wall time / peak memory of each strategy against NFE on CT 23
  views and MRI 8x, on the first ``--sweep-images`` test images, one sample each.

PSNR: data_range 1 on images clipped to [0, 1]; SSIM: ``invdiff.metrics.SSIM_CONVENTION``.
Writes ``results/harness.json`` (every number, per image), ``results/harness.md`` (tables, the
issue-5 targets computed from the numbers) and PNG figures ``results/harness_*.png``.
Cost. The network dominates: NFE per sample x samples x test images x tasks. The defaults
(4 samples, main 50 steps = 101 NFE, fast 49 steps = 50 NFE, 9 tasks x 32 images, sweep NFE
20..400 on 4 images) spend about 180k image-NFE plus the sweep: roughly 30-40 min on 2 quiet CPU
cores (about 9 ms per 64 x 64 image-NFE at batch 16) and several times that on a shared machine
(60-100 ms per image-NFE measured beside a training job). Lower ``--samples``, ``--main-steps``,
``--fast-steps`` or ``--tasks`` to fit; the Markdown always prints the command that made it.
``--render results/harness.json`` rewrites the Markdown from a JSON report without recomputing.

``--tiny`` runs everything at 32 x 32 with an untrained tiny network in well under a minute (CI
smoke test; results named ``harness_tiny``, which ``report.py`` leaves out).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import common  # noqa: E402
import datasets  # noqa: E402

from invdiff.baselines import (  # noqa: E402
    FISTA_ITERATIONS,
    fista_tv,
    lipschitz_constant,
    tune_weight,
)
from invdiff.images import grid, save_png  # noqa: E402
from invdiff.metrics import SSIM_CONVENTION, coverage, psnr, ssim, summary  # noqa: E402
from invdiff.plugins import build_registry, make_plugin_manager  # noqa: E402
from invdiff.reconstruct import SEED_SCHEME, reconstruct  # noqa: E402

#: Song et al. (ICLR 2022) settings of the projection sampler, by operator.
SONG = {
    "ct_sparse": {"snr": 0.246, "lam": 0.841},
    "mri": {"snr": 0.517, "lam": 1.0},
    "masking": {"snr": 0.16, "lam": 1.0},
}
#: FISTA-TV weight grids (log-spaced), by operator; inpainting has no FISTA-TV baseline.
FISTA_GRIDS = {"ct_sparse": (1e-3, 1e1, 5), "mri": (1e-7, 1e-1, 5)}
#: DiffPIR needs a Gaussian likelihood; on noiseless data it assumes this noise_std.
DIFFPIR_NOMINAL_STD = 0.01
#: Issue-5 targets: (task, baseline, PSNR margin in dB, SSIM must also be higher).
TARGETS = (
    ("ct23", "FISTA-TV", 3.0, True),
    ("ct8", "FISTA-TV", 3.0, False),
    ("mri8", "FISTA-TV", 2.0, False),
    ("inpaint70", "biharmonic", 2.0, False),
)


@dataclass
class Config:
    """Everything that decides the numbers; stored in the JSON."""

    tasks: list[str] = field(default_factory=lambda: list(datasets.TASKS))
    size: int = datasets.SIZE
    n_val: int = datasets.N_VAL
    n_test: int = datasets.N_TEST
    n_tune: int = 4  # validation images for DiffPIR's lambda
    n_fista_val: int = 8  # validation images for the FISTA-TV weight
    samples: int = 4
    main_steps: int = 50
    fast_steps: int = 49
    fast_lams: list[float] = field(default_factory=lambda: [1.0, 7.0, 50.0])
    sweep_tasks: list[str] = field(default_factory=lambda: ["ct23", "mri8"])
    sweep_strategies: list[str] = field(
        default_factory=lambda: [
            "projection",
            "diffpir",
            "dps",
            "noisy_likelihood",
            "replacement",
            "moment",
        ]
    )
    sweep_nfe: list[int] = field(default_factory=lambda: [20, 50, 100, 200, 400])
    sweep_images: int = 4
    fista_iterations: int = FISTA_ITERATIONS
    fista_grid_points: int = 0  # 0: FISTA_GRIDS as given
    fista_refine: int = 2
    batch: int = 32
    threads: int = 2
    clip: bool = True  # clip the prior's denoised estimate to [0, 1], as `invdiff solve` does
    device: str = "cpu"
    model: str | None = None
    name: str = "harness"
    data_dir: str = str(datasets.DATA)


def tiny_config() -> Config:
    """Return the CI configuration: 32 x 32, 2 images, an untrained tiny network, few steps."""
    return Config(
        size=32,
        n_val=2,
        n_test=2,
        n_tune=1,
        n_fista_val=2,
        samples=2,
        main_steps=2,
        fast_steps=2,
        fast_lams=[7.0],
        sweep_strategies=["projection", "diffpir", "replacement"],
        sweep_nfe=[4],
        sweep_images=1,
        fista_iterations=3,
        fista_grid_points=2,
        fista_refine=0,
        threads=1,
        name="harness_tiny",
        data_dir=str(datasets.DATA / "tiny"),
    )


def tiny_model(size: int = 32):
    """Return an untrained small ScoreModel (VE SDE) and its config, for smoke tests."""
    from invdiff.checkpoint import build_model

    config = {
        "net": {
            "channels": 1,
            "base": 8,
            "mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
        },
        "sde": {"name": "ve", "sigma_min": 0.01, "sigma_max": 10.0},
        "image": {"channels": 1, "size": size},
        "sigma_data": 0.25,
    }
    return build_model(config).eval(), config


# Data ------------------------------------------------------------------------------------------


def load_data(cfg: Config) -> dict:
    """Return ({task: {"val": split, "test": split}}, checksum state); write missing files."""
    data_dir = Path(cfg.data_dir)
    missing = [
        t for t in cfg.tasks for s in datasets.SPLITS if not (data_dir / f"{t}_{s}.h5").is_file()
    ]
    if missing:
        datasets.write_all(data_dir, sorted(set(missing)), cfg.size, cfg.n_val, cfg.n_test)
    registry = build_registry(make_plugin_manager())
    data = {
        t: {s: datasets.load_split(data_dir / f"{t}_{s}.h5", registry) for s in datasets.SPLITS}
        for t in cfg.tasks
    }
    for t, splits in data.items():
        for s, n in (("val", cfg.n_val), ("test", cfg.n_test)):
            got = tuple(splits[s]["truth"].shape)
            if got != (n, 1, cfg.size, cfg.size):
                raise SystemExit(
                    f"{data_dir}/{t}_{s}.h5 holds {got} images, the config asks for "
                    f"{(n, 1, cfg.size, cfg.size)}; delete the file to regenerate it"
                )
    sums_file = data_dir / datasets.SUMS
    sums = datasets.check(data_dir, sums_file) if sums_file.is_file() else {}
    files = [f"{t}_{s}.h5" for t in cfg.tasks for s in datasets.SPLITS]
    state = {
        f: {"sha256": datasets.sha256(data_dir / f), "matches_SHA256SUMS": sums.get(f)}
        for f in files
    }
    return data, state


def solver_op(split: dict, noise_std: float):
    """Return the split's operator rebuilt with another likelihood noise_std."""
    a = split["attrs"]
    return datasets.build_operator(a["operator"], int(a["size"]), split["params"], noise_std)


# Scoring ---------------------------------------------------------------------------------------


def scores(x: torch.Tensor, truth: torch.Tensor) -> dict:
    """Return PSNR / SSIM summaries and per-image values."""
    p, s = psnr(x, truth), ssim(x, truth)
    return {"psnr": summary(p), "ssim": summary(s), "per_image": {"psnr": p, "ssim": s}}


def peak_memory(device: str) -> dict:
    """Return the peak memory so far: process RSS (monotone) and, on CUDA, the allocator peak."""
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    return out


# Baselines -------------------------------------------------------------------------------------


def run_baselines(cfg: Config, val: dict, test: dict) -> tuple[dict, dict]:
    """Return ({method: result}, {method: tuning}) of the classical baselines on the test split."""
    op, y, truth = test["op"], test["y"], test["truth"]
    start = time.perf_counter()
    label, x = op.baseline(y)
    sec = time.perf_counter() - start
    methods = {label: {**scores(x, truth), "seconds_per_image": sec / len(y), "image": x}}
    tuning = {}
    kind = test["attrs"]["operator"]
    if kind in FISTA_GRIDS:
        lo, hi, n = FISTA_GRIDS[kind]
        grid_w = np.geomspace(lo, hi, cfg.fista_grid_points or n)
        big_l = lipschitz_constant(op)
        fn = partial(fista_tv, op, iterations=cfg.fista_iterations, lipschitz=big_l)
        start = time.perf_counter()
        nv = cfg.n_fista_val
        weight, table = tune_weight(fn, val["y"][:nv], val["truth"][:nv], grid_w, cfg.fista_refine)
        tune_sec = time.perf_counter() - start
        start = time.perf_counter()
        x = fn(y, weight)
        sec = time.perf_counter() - start
        methods["FISTA-TV"] = {**scores(x, truth), "seconds_per_image": sec / len(y), "image": x}
        tuning["FISTA-TV"] = {
            "weight": weight,
            "iterations": cfg.fista_iterations,
            "lipschitz": big_l,
            "validation_table": [{"weight": w, "mean_psnr": p} for w, p in table],
            "tuning_seconds": tune_sec,
        }
    return methods, tuning


# Posterior sampling ----------------------------------------------------------------------------


def sample(cfg: Config, model, op, y: torch.Tensor, strategy: str, options: dict) -> dict:
    """Draw cfg.samples posterior samples for every measurement in y, in batches of cfg.batch,
    through ``invdiff.reconstruct`` (the seed scheme and NFE count of ``invdiff solve``).

    Returns samples (K, N, C, H, W) on the CPU, NFE / VJP per sample and wall time.
    """
    rec = reconstruct(
        model,
        model.sde,
        [op.to(cfg.device)],
        [y],
        strategy=strategy,
        options=options,
        samples=cfg.samples,
        seed=0,
        batch_size=cfg.batch,
        device=cfg.device,
    )
    return {
        "samples": rec.samples.transpose(0, 1),
        "nfe": rec.nfe_per_sample,
        "vjp": rec.vjp_per_sample,
        "seconds": rec.seconds,
    }


def posterior_result(run: dict, truth: torch.Tensor, strategy: str, options: dict) -> dict:
    """Score the posterior mean; add sample PSNR, std, 90 % coverage, NFE and time per image."""
    s = run["samples"]
    mean = s.mean(0)
    out = {
        "strategy": strategy,
        "options": options,
        **scores(mean, truth),
        "samples": s.shape[0],
        "nfe_per_sample": run["nfe"],
        "vjp_per_sample": run["vjp"],
        "nfe_per_image": run["nfe"] * s.shape[0],
        "seconds_per_image": run["seconds"] / s.shape[1],
        "sample_psnr": summary(np.concatenate([psnr(si, truth) for si in s])),
        "image": mean,
    }
    if s.shape[0] > 1:
        std = s.std(0)
        cov = coverage(s, truth, 0.9)
        out["coverage90"] = {**summary(cov), "per_image": cov}
        out["mean_posterior_std"] = float(std.mean())
        out["std_image"] = std
    return out


def main_options(kind: str, steps: int) -> dict:
    """Return the projection knobs of Song et al. (2022) for an operator kind."""
    return {"steps": steps, **SONG[kind]}


def fast_setup(cfg: Config, model, val: dict) -> tuple[object, dict, dict]:
    """Pick DiffPIR's lambda on cfg.n_tune validation images; return (op, options, table)."""
    s = val["op"].noise_std or DIFFPIR_NOMINAL_STD
    op = solver_op(val, s)
    tune_cfg = replace(cfg, samples=1)
    table = []
    for lam in cfg.fast_lams:
        options = {"steps": cfg.fast_steps, "lam": lam}
        run = sample(tune_cfg, model, op, val["y"][: cfg.n_tune], "diffpir", options)
        p = float(psnr(run["samples"][0], val["truth"][: cfg.n_tune]).mean())
        table.append({"lam": lam, "mean_psnr": p})
    best = max(table, key=lambda r: r["mean_psnr"])["lam"]
    info = {"likelihood_noise_std": s, "validation_images": cfg.n_tune, "table": table}
    return op, {"steps": cfg.fast_steps, "lam": best}, info


def run_task(cfg: Config, model, name: str, split: dict) -> dict:
    """Run baselines and both invdiff strategies on one task."""
    val, test = split["val"], split["test"]
    kind = test["attrs"]["operator"]
    methods, tuning = run_baselines(cfg, val, test)
    print(f"{name}: baselines done", flush=True)
    opts = main_options(kind, cfg.main_steps)
    run = sample(cfg, model, test["op"], test["y"], "projection", opts)
    methods["invdiff main"] = {**posterior_result(run, test["truth"], "projection", opts)}
    methods["invdiff main"]["memory"] = peak_memory(cfg.device)
    print(f"{name}: main done ({run['seconds']:.0f} s)", flush=True)
    op, opts, info = fast_setup(cfg, model, val)
    tuning["invdiff fast"] = info
    run = sample(cfg, model, op, test["y"], "diffpir", opts)
    methods["invdiff fast"] = posterior_result(run, test["truth"], "diffpir", opts)
    methods["invdiff fast"]["memory"] = peak_memory(cfg.device)
    print(f"{name}: fast done ({run['seconds']:.0f} s)", flush=True)
    a = test["attrs"]
    return {
        "title": a["title"],
        "operator": kind,
        "params": test["params"],
        "noise_std": a["noise_std"],
        "noise_level": a["noise_level"],
        "methods": methods,
        "tuning": tuning,
        "truth": test["truth"],
    }


# The issue-4 sweep -----------------------------------------------------------------------------


def sweep_options(strategy: str, nfe: int, kind: str) -> dict:
    """Return the knobs that make ``strategy`` spend about ``nfe`` network evaluations."""
    if strategy == "projection":
        return main_options(kind, max(1, nfe // 2))
    if strategy in ("noisy_likelihood", "replacement"):
        return {"steps": max(1, nfe // 2), "snr": 0.16}
    if strategy == "moment":
        return {"steps": nfe, "snr": 0.0}
    if strategy == "diffpir":
        return {"steps": max(1, nfe - 1)}
    if strategy == "dps":
        return {"steps": nfe}
    raise ValueError(f"no NFE rule for strategy {strategy!r}")


def run_sweep(cfg: Config, model, name: str, split: dict, fast_lam: float | None) -> list[dict]:
    """Return one row per (strategy, NFE) on the first cfg.sweep_images test images."""
    test = split["test"]
    kind = test["attrs"]["operator"]
    y, truth = test["y"][: cfg.sweep_images], test["truth"][: cfg.sweep_images]
    one = replace(cfg, samples=1)
    rows = []
    for strategy in cfg.sweep_strategies:
        op = test["op"]
        if strategy == "diffpir":
            op = solver_op(test, test["op"].noise_std or DIFFPIR_NOMINAL_STD)
        for nfe in cfg.sweep_nfe:
            opts = sweep_options(strategy, nfe, kind)
            if strategy == "diffpir" and fast_lam is not None:
                opts["lam"] = fast_lam
            if cfg.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            try:
                run = sample(one, model, op, y, strategy, opts)
            except ValueError as err:  # the strategy does not apply (e.g. needs noise_std > 0)
                rows.append({"task": name, "strategy": strategy, "not_applicable": str(err)})
                print(f"sweep {name} {strategy}: not applicable ({err})")
                break
            res = scores(run["samples"][0], truth)
            rows.append(
                {
                    "task": name,
                    "strategy": strategy,
                    "options": opts,
                    "nfe": run["nfe"],
                    "vjp": run["vjp"],
                    "psnr": res["psnr"],
                    "ssim": res["ssim"],
                    "per_image": res["per_image"],
                    "seconds_per_image": run["seconds"] / len(y),
                    "memory": peak_memory(cfg.device),
                }
            )
            print(f"sweep {name} {strategy} NFE {run['nfe']}: {res['psnr']['mean']:.2f} dB")
    return rows


# Targets, figures, report ----------------------------------------------------------------------


def targets(tasks: dict) -> list[dict]:
    """Evaluate the issue-5 targets from the measured means (never typed by hand)."""
    rows = []
    for task, base, margin, need_ssim in TARGETS:
        if task not in tasks:
            rows.append({"task": task, "status": "not run"})
            continue
        m = tasks[task]["methods"]
        b = m[base]
        for method in ("invdiff main", "invdiff fast"):
            d = m[method]
            gap = d["psnr"]["mean"] - (b["psnr"]["mean"] + margin)
            ssim_ok = d["ssim"]["mean"] > b["ssim"]["mean"]
            met = gap >= 0 and (ssim_ok or not need_ssim)
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "baseline": base,
                    "margin_db": margin,
                    "needs_higher_ssim": need_ssim,
                    "psnr_gain_db": d["psnr"]["mean"] - b["psnr"]["mean"],
                    "gap_to_target_db": gap,
                    "ssim_higher": ssim_ok,
                    "met": met,
                }
            )
    return rows


def limits(report: dict) -> list[str]:
    """Return Markdown lines on what limits each missed target, computed from the report.

    Two measured diagnoses per task: (1) sampler budget: the best PSNR of the NFE sweep against
    the baseline on the same first test images (if more network evaluations close the gap, the
    sampler budget limits; if not, the model or the strategy does); (2) Monte Carlo: how much
    the posterior mean of the samples gained over a single sample (more samples gain less than
    that again).
    """
    missed = dict.fromkeys(t["task"] for t in report["targets"] if t.get("met") is False)
    if not missed:
        return []
    steps = report["run"]["model"].get("training_steps")
    lines = [
        "",
        "### What limits the missed targets (computed from the numbers in this report)",
        "",
        f"Model: `{report['run']['model']['path']}`, {steps} training steps; every invdiff "
        "figure here is bounded by it.",
        "",
    ]
    by_task = {t["task"]: t for t in report["targets"] if t.get("met") is False}
    for task in missed:
        t, methods = by_task[task], report["tasks"][task]["methods"]
        base = methods[t["baseline"]]["per_image"]["psnr"]
        parts = []
        rows = [r for r in report["sweep"] if r["task"] == task and "psnr" in r]
        if rows:
            best = max(rows, key=lambda r: r["psnr"]["mean"])
            k = len(best["per_image"]["psnr"])
            gain = best["psnr"]["mean"] - sum(base[:k]) / k
            verdict = (
                "more network evaluations reach the target there: the sampler budget limits"
                if gain >= t["margin_db"]
                else "even the best budget stays short: the model (or the strategy) limits"
            )
            parts.append(
                f"sweep: best {best['strategy']} at {best['nfe']} NFE, {best['psnr']['mean']:.2f}"
                f" dB on the first {k} test images vs {t['baseline']} {sum(base[:k]) / k:.2f} dB"
                f" on the same images ({gain:+.2f} dB, needed {t['margin_db']:+.1f}); {verdict}"
            )
        else:
            parts.append("not in the NFE sweep")
        for method in ("invdiff main", "invdiff fast"):
            m = methods[method]
            mc = m["psnr"]["mean"] - m["sample_psnr"]["mean"]
            parts.append(
                f"{method}: the mean of {m['samples']} samples is {mc:+.2f} dB over one sample"
            )
        lines.append(f"- **{task}**: " + "; ".join(parts) + ".")
    return lines


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
    from invdiff.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


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
        f"90 % interval of the {cfg['samples']} samples (`invdiff.metrics.coverage`; exact "
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


def deepinv_status() -> str:
    """Return why the optional DeepInverse peer ran or was skipped."""
    try:
        import deepinv  # noqa: F401
    except ImportError:
        return "skipped (deepinv is not installed)"
    return "deepinv is installed but the peer comparison is not implemented yet; skipped"


def run(cfg: Config, model=None, model_info: dict | None = None, command: str = "") -> dict:
    """Run the whole harness for cfg and write results; return the report (with images)."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    if model is None:
        from invdiff.checkpoint import default_model_path, file_sha256, load_model

        path = Path(cfg.model) if cfg.model else default_model_path()
        model, mconf = load_model(path, cfg.device)
        model_info = {
            "path": str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path),
            "sha256": file_sha256(path),
            "training_steps": mconf.get("training", {}).get("steps_done"),
        }
    from invdiff.score import data_range_prior

    # Same prior as `invdiff solve` (clip of the denoised estimate to [0, 1] unless --no-clip).
    model = data_range_prior(model.to(cfg.device), {}, cfg.clip)
    data, checksums = load_data(cfg)
    tasks, sweep = {}, []
    for name in cfg.tasks:
        tasks[name] = run_task(cfg, model, name, data[name])
    for name in cfg.sweep_tasks:
        if name in data:
            lam = tasks[name]["methods"]["invdiff fast"]["options"]["lam"]
            sweep += run_sweep(cfg, model, name, data[name], lam)
    out = Path(common.RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, res in tasks.items():
        task_figure(out / f"{cfg.name}_{name}.png", res)
        figures.append(f"{cfg.name}_{name}.png")
    if sweep and sweep_figure(out / f"{cfg.name}_psnr_vs_nfe.png", sweep, tasks):
        figures.append(f"{cfg.name}_psnr_vs_nfe.png")
    report = {
        "config": asdict(cfg),
        "run": {
            "command": command,
            "wall_seconds": time.perf_counter() - start,
            "machine": common.machine(torch.get_num_threads()),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "model": model_info or {"path": "in-memory", "sha256": "-", "training_steps": None},
            "data": checksums,
            "checksums_all_match": all(v["matches_SHA256SUMS"] for v in checksums.values()),
            "figures": figures,
            "deepinv": deepinv_status(),
        },
        "targets": targets(tasks),
        "tasks": tasks,
        "sweep": sweep,
    }
    report["run"]["wall_seconds"] = time.perf_counter() - start
    clean = jsonable(report)
    common.write_results(cfg.name, clean, markdown(clean))
    return report


def parse(argv: list[str] | None = None) -> tuple[Config, str, Path | None]:
    """Return the Config from the command line, the command that reproduces it, --render."""
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CI smoke configuration (untrained model)")
    p.add_argument("--tasks", nargs="+", choices=list(datasets.TASKS))
    p.add_argument("--n-test", type=int)
    p.add_argument("--samples", type=int)
    p.add_argument("--main-steps", type=int)
    p.add_argument("--fast-steps", type=int)
    p.add_argument("--sweep-nfe", type=int, nargs="+")
    p.add_argument("--sweep-tasks", nargs="*", help="tasks of the NFE sweep (none: no sweep)")
    p.add_argument("--name", help="results name (default: harness): NAME.json, NAME.md, ...")
    p.add_argument("--sweep-images", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--device")
    p.add_argument(
        "--no-clip",
        dest="clip",
        action="store_false",
        default=None,
        help="sample with the raw prior (no clip of the denoised estimate to [0, 1])",
    )
    p.add_argument("--model", help="model file (default: the shipped invdiff/models/phantom64.pt)")
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results)")
    p.add_argument("--render", type=Path, help="only rewrite the Markdown of this JSON report")
    args = p.parse_args(argv)
    cfg = tiny_config() if args.tiny else d
    if args.out is None and args.tiny:
        args.out = Path(cfg.data_dir) / "results"
    if args.out is not None:
        common.RESULTS = args.out
    for key, value in vars(args).items():
        if key not in ("tiny", "out", "render") and value is not None:
            setattr(cfg, key, value)
    if not args.tiny and cfg.n_test != datasets.N_TEST:
        cfg.data_dir = str(Path(cfg.data_dir) / f"n{cfg.n_test}")
    argv = sys.argv[1:] if argv is None else argv
    return cfg, shlex.join(["python", "benchmarks/harness.py", *argv]), args.render


def main() -> None:
    cfg, command, render = parse()
    if render is not None:
        render.with_suffix(".md").write_text(markdown(json.loads(render.read_text())))
        print(f"wrote {render.with_suffix('.md')}")
        return
    model = info = None
    if cfg.name == "harness_tiny":
        model, _ = tiny_model(cfg.size)
    run(cfg, model, info, command)


if __name__ == "__main__":
    main()
