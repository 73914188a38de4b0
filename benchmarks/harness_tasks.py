"""The benchmark harness's tasks: the test data, the classical baselines (FISTA-TV tuned on the
validation set), posterior sampling through ``invdiff.core.reconstruct`` and the issue-4 NFE sweep.

Every function returns numbers and images; nothing here writes a results file.
"""

from __future__ import annotations

import resource
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks import datasets
from benchmarks.harness_config import Config
from invdiff.core.reconstruct import reconstruct
from invdiff.eval.baselines import fista_tv, lipschitz_constant, tune_weight
from invdiff.eval.metrics import coverage, psnr, ssim, summary
from invdiff.plugins import build_registry, make_plugin_manager

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


def diffpir_op(split: dict):
    """Return the split's operator with the likelihood DiffPIR runs with: the measurement's
    noise_std, or DIFFPIR_NOMINAL_STD when the data are noiseless (its data step divides by it)."""
    return solver_op(split, split["op"].noise_std or DIFFPIR_NOMINAL_STD)


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
    through ``invdiff.core.reconstruct`` (the seed scheme and NFE count of ``invdiff solve``).

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
    op = diffpir_op(val)
    tune_cfg = replace(cfg, samples=1)
    table = []
    for lam in cfg.fast_lams:
        options = {"steps": cfg.fast_steps, "lam": lam}
        run = sample(tune_cfg, model, op, val["y"][: cfg.n_tune], "diffpir", options)
        p = float(psnr(run["samples"][0], val["truth"][: cfg.n_tune]).mean())
        table.append({"lam": lam, "mean_psnr": p})
    best = max(table, key=lambda r: r["mean_psnr"])["lam"]
    info = {"likelihood_noise_std": op.noise_std, "validation_images": cfg.n_tune, "table": table}
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
            op = diffpir_op(test)
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
