"""Preview the classical baselines at 64 x 64: tuned FISTA-TV, FBP, zero-filled, biharmonic.

The FISTA-TV weight of each task is tuned on a validation set (make_phantoms(n_val, seed=1)) and
then applied unchanged to the test set (make_phantoms(n_test, seed=2)), which tuning never sees.
All measurements are noiseless. Writes ``results/baselines.json`` (every number, per image) and
``results/baselines.md`` (tables). The benchmark harness (issue 5) will recompute these.

    python benchmarks/bench_baselines.py [--n-val 16 --n-test 32 --threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from invdiff_operators.ct_sparse import CTSparse  # noqa: E402
from invdiff_operators.masking import Masking  # noqa: E402
from invdiff_operators.mri import MRI  # noqa: E402

from invdiff.data.phantoms import make_phantoms  # noqa: E402
from invdiff.eval.baselines import (  # noqa: E402
    FISTA_ITERATIONS,
    fista_tv,
    lipschitz_constant,
    tune_weight,
)
from invdiff.eval.metrics import SSIM_CONVENTION, psnr, ssim, summary  # noqa: E402

SHAPE = (1, 64, 64)
MRI_GRID = np.geomspace(1e-9, 1e-1, 9)
CT_GRID = np.geomspace(1e-5, 1e1, 7)
TASKS = {
    "ct_23views": (partial(CTSparse, SHAPE, views=23, noise_std=0.0), CT_GRID),
    "ct_8views": (partial(CTSparse, SHAPE, views=8, noise_std=0.0), CT_GRID),
    "mri_4x": (partial(MRI, SHAPE, acceleration=4, center_fraction=0.08, noise_std=0.0), MRI_GRID),
    "mri_8x": (partial(MRI, SHAPE, acceleration=8, center_fraction=0.08, noise_std=0.0), MRI_GRID),
    "inpaint_70": (partial(Masking, SHAPE, mask="random", fraction=0.7, noise_std=0.0), None),
}


def timed(fn, *args) -> tuple[torch.Tensor, float]:
    """Return fn(*args) and its wall time in seconds."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def scores(x: torch.Tensor, truth: torch.Tensor, seconds: float) -> dict:
    """Return per-image PSNR / SSIM, their summaries and the wall time per image."""
    p, s = psnr(x, truth), ssim(x, truth)
    return {
        "psnr": summary(p),
        "ssim": summary(s),
        "seconds_per_image": seconds / len(truth),
        "per_image": {"psnr": p.tolist(), "ssim": s.tolist()},
    }


def fista_label(iterations: int) -> str:
    """Return the method name of FISTA-TV run for ``iterations`` iterations."""
    return "FISTA-TV" if iterations == FISTA_ITERATIONS else f"FISTA-TV {iterations} it"


def convergence(op, y, truth, weight: float, big_l: float, counts: tuple[int, int]) -> dict:
    """Return the objective and PSNR at the tuned weight after each of two iteration counts."""
    out = {}
    for n in counts:
        history: list[torch.Tensor] = []
        x = fista_tv(op, y, weight, n, lipschitz=big_l, history=history)
        out[n] = {"objective": float(history[-1].sum()), "mean_psnr": float(psnr(x, truth).mean())}
    short, long = (out[n]["objective"] for n in counts)
    return {**{str(n): v for n, v in out.items()}, "relative_objective_gap": short / long - 1}


def run_task(name: str, make_op, grid, val, test, args, counts: list[int]) -> dict:
    """Tune FISTA-TV on val for each iteration count (if the task has a grid), score on test."""
    op = make_op()
    y_val, y_test = op.measure(val), op.measure(test)
    label, _ = op.baseline(y_val[:1])
    x, sec = timed(lambda y: op.baseline(y)[1], y_test)
    out = {"operator": repr(op), "methods": {label: scores(x, test, sec)}, "tuning": {}}
    if grid is None:
        return out
    big_l = lipschitz_constant(op)
    for iterations in counts:
        solve = partial(fista_tv, op, iterations=iterations, lipschitz=big_l)
        (weight, table), sec = timed(tune_weight, solve, y_val, val, grid, args.refine)
        x, sec_test = timed(solve, y_test, weight)
        method = fista_label(iterations)
        out["methods"][method] = scores(x, test, sec_test)
        out["tuning"][method] = {
            "iterations": iterations,
            "weight": weight,
            "table": [{"weight": w, "mean_psnr": p} for w, p in table],
            "lipschitz": big_l,
            "seconds": sec,
        }
        if iterations == FISTA_ITERATIONS and args.check_iterations:
            out["tuning"][method]["convergence_on_validation"] = convergence(
                op, y_val, val, weight, big_l, (iterations, args.check_iterations)
            )
        print(f"{name}: {method} weight {weight:.3g}", flush=True)
    return out


def markdown(result: dict) -> str:
    """Return the results as Markdown tables."""
    cfg = result["config"]
    lines = [
        "# Classical baselines (preview)",
        "",
        f"Produced by `{cfg['command']}`; {cfg['n_val']} validation phantoms (seed 1) for "
        f"tuning, {cfg['n_test']} test phantoms (seed 2), {cfg['size']} x {cfg['size']}, "
        f"noiseless. FISTA-TV: {cfg['fista_iterations']} iterations unless named, box [0, 1], "
        "adaptive restart, weight tuned for each iteration count. SSIM: scikit-image with "
        f"{cfg['ssim']}. {cfg['threads']} torch thread(s), "
        f"{cfg['machine']}. Mean +- std over test images; time is wall time per image.",
        "",
        "| task | method | PSNR (dB) | SSIM | s / image | tuned weight |",
        "|---|---|---|---|---|---|",
    ]
    for task, res in result["tasks"].items():
        for method, m in res["methods"].items():
            tuned = res["tuning"].get(method)
            weight = f"{tuned['weight']:.3g}" if tuned else ""
            if tuned and tuned["weight"] == tuned["table"][0]["weight"]:
                weight += " (grid edge)"
            lines.append(
                f"| {task} | {method} | {m['psnr']['mean']:.2f} +- {m['psnr']['std']:.2f} | "
                f"{m['ssim']['mean']:.3f} +- {m['ssim']['std']:.3f} | "
                f"{m['seconds_per_image']:.3g} | {weight} |"
            )
    lines += ["", "## Weight tuning (mean validation PSNR, dB)", ""]
    for task, res in result["tasks"].items():
        for method, tun in res["tuning"].items():
            row = ", ".join(f"{r['weight']:.3g}: {r['mean_psnr']:.2f}" for r in tun["table"])
            lines.append(f"- {task}, {method} (L = {tun['lipschitz']:.4g}): {row}.")
            if "convergence_on_validation" in tun:
                conv = tun["convergence_on_validation"]
                (a, ra), (b, rb) = [(k, v) for k, v in conv.items() if k.isdigit()]
                lines.append(
                    f"  Convergence at this weight: objective {a} it / {b} it - 1 = "
                    f"{conv['relative_objective_gap']:.2%}; validation PSNR {ra['mean_psnr']:.2f} "
                    f"dB at {a} it, {rb['mean_psnr']:.2f} dB at {b} it."
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, nargs="+", default=[FISTA_ITERATIONS, 300])
    parser.add_argument("--check-iterations", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.size != SHAPE[1]:
        parser.error("only --size 64 is set up (the task table builds 64 x 64 operators)")
    torch.set_num_threads(args.threads)
    val = torch.from_numpy(make_phantoms(args.n_val, args.size, seed=1)[0])
    test = torch.from_numpy(make_phantoms(args.n_test, args.size, seed=2)[0])
    tasks = {
        name: run_task(name, make_op, grid, val, test, args, args.iterations)
        for name, (make_op, grid) in TASKS.items()
    }
    config = {
        "command": f"python benchmarks/bench_baselines.py --n-val {args.n_val} "
        f"--n-test {args.n_test} --refine {args.refine} --threads {args.threads} "
        f"--iterations {' '.join(map(str, args.iterations))} "
        f"--check-iterations {args.check_iterations}",
        "n_val": args.n_val,
        "n_test": args.n_test,
        "size": args.size,
        "fista_iterations": FISTA_ITERATIONS,
        "ssim": dict(SSIM_CONVENTION),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared)",
    }
    result = {"config": config, "tasks": tasks}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "baselines.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "baselines.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
