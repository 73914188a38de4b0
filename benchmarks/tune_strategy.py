"""Choose a strategy's knobs on VALIDATION images only.

For each task and every combination of the given knob values, validation images are measured
and reconstructed; the mean PSNR of the posterior mean is reported per task and averaged over
tasks. Validation sets: ``--images ood`` (default) the out-of-distribution suite's
``bench_ood.VAL`` images at ``--size``, measured as in the suite (``--images ood-wide``: the
wider ``bench_ood.VAL_WIDE``, for knobs only); ``--images phantoms`` the first
``--n-images`` validation phantoms of the harness's tasks (benchmarks/datasets.py, seed 1, 64 px),
with the harness's measurements and likelihood. Test images are never touched.

    python benchmarks/tune_strategy.py --model general --size 64 --steps 49 99 --lam 1 7 30 \
        --zeta 0.3 1 --samples 2 --threads 1

Writes results/tune_strategy.json and .md (``--name`` changes the stem).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import bench_ood, harness_tasks, ood_images  # noqa: E402
from benchmarks.common import machine, write_results  # noqa: E402
from benchmarks.harness_config import Config  # noqa: E402
from invdiff.core.checkpoint import load_model, resolve_model  # noqa: E402
from invdiff.eval.metrics import psnr  # noqa: E402
from invdiff.guidance import strategy_options  # noqa: E402
from invdiff.plugins import build_registry, make_plugin_manager  # noqa: E402


def ood_problems(args, config) -> dict:
    """Return {task: (operator, measurements, truths)} on the suite's validation images
    (``bench_ood.VAL``, or ``VAL_WIDE`` with ``--images ood-wide``)."""
    names = bench_ood.VAL_WIDE if args.images == "ood-wide" else bench_ood.VAL
    for img in names:
        ood_images.check_heldout(img, config)
    truths = torch.as_tensor(np.concatenate([ood_images.load(n, args.size) for n in names]))
    registry = build_registry(make_plugin_manager())
    out = {}
    for task in args.tasks:
        name, params = bench_ood.TASKS[task]
        op = registry[name].create((1, args.size, args.size), **params)
        out[task] = (op, bench_ood.measure(op, truths, names, args.seed), truths)
    return out


def phantom_problems(args, config) -> dict:
    """Return {task: (operator, measurements, truths)} on the harness's validation phantoms, with
    the harness's likelihood (the measurement's noise_std, or the nominal 0.01 when noiseless)."""
    data, _ = harness_tasks.load_data(Config(tasks=list(args.tasks)))
    out = {}
    for task in args.tasks:
        val = data[task]["val"]
        out[task] = (
            harness_tasks.diffpir_op(val),
            val["y"][: args.n_images],
            val["truth"][: args.n_images],
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="general")
    ap.add_argument("--strategy", default="diffpir")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", choices=("ood", "ood-wide", "phantoms"), default="ood")
    ap.add_argument("--n-images", type=int, default=8, help="--images phantoms: how many")
    ap.add_argument("--tasks", nargs="*", default=list(bench_ood.TASKS))
    ap.add_argument("--steps", type=int, nargs="*", default=[49])
    ap.add_argument("--lam", type=float, nargs="*", default=[7.0])
    ap.add_argument("--zeta", type=float, nargs="*", default=[0.3])
    ap.add_argument("--sigma-start", type=float, nargs="*", default=[0.0])
    ap.add_argument(
        "--config",
        type=json.loads,
        nargs="*",
        help='explicit knob sets instead of the grid, e.g. \'{"steps": 49, "sigma_start": 1}\'',
    )
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="tune_strategy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, config = load_model(resolve_model(args.model))
    problems = (phantom_problems if args.images == "phantoms" else ood_problems)(args, config)
    rows, t0 = [], time.perf_counter()
    grid = itertools.product(args.steps, args.lam, args.zeta, args.sigma_start)
    configs = args.config or [
        {"steps": st, "lam": la, "zeta": ze, "sigma_start": si} for st, la, ze, si in grid
    ]
    knobs = strategy_options(args.strategy)
    for config_ in configs:
        args.options = {**knobs, **config_}
        row = dict(args.options)
        if row.get("sigma_start", 0) is None:  # each operator's own level (per task)
            row["sigma_start"] = "operator's"
        for task, (op, ys, truths) in problems.items():
            samples, secs, nfe = bench_ood.invdiff_rows(model, config, op, ys, args)
            row["nfe"] = nfe
            per_image = psnr(samples.mean(1), truths.numpy())
            row[task] = float(per_image.mean())
            row.setdefault("per_image", {})[task] = [round(float(v), 2) for v in per_image]
            row.setdefault("seconds_per_image", {})[task] = round(secs, 2)
        row["mean"] = float(np.mean([row[t] for t in args.tasks]))
        rows.append(row)
        print(row, flush=True)
    images = (
        f"the first {args.n_images} validation phantoms (seed 1) of each harness task"
        if args.images == "phantoms"
        else f"{', '.join(bench_ood.VAL_WIDE if args.images == 'ood-wide' else bench_ood.VAL)} "
        f"at {args.size} px"
    )
    report = {
        "args": {k: v for k, v in vars(args).items() if k != "options"},
        "model_steps": int(config.get("training", {}).get("steps_done", -1)),
        "validation_images": images,
        "command": "python benchmarks/tune_strategy.py " + " ".join(sys.argv[1:]),
        "machine": machine(args.threads),
        "wall_minutes": (time.perf_counter() - t0) / 60,
        "rows": rows,
    }
    lines = [
        "# Strategy knobs on the validation images",
        "",
        f"Model `{args.model}` ({report['model_steps']} steps), {args.strategy}, "
        f"validation images: {images}; mean of {args.samples} "
        f"samples; mean PSNR (dB) of the posterior mean. Command: `{report['command']}`, "
        f"{report['wall_minutes']:.1f} min.",
        "",
        "'worst gap': the row's largest shortfall against the best row of each task (dB).",
        "",
        "| " + " | ".join(knobs) + " | NFE | " + " | ".join(args.tasks) + " | mean | worst gap |",
        "|---" * (len(knobs) + 3 + len(args.tasks)) + "|",
    ]
    best = max(rows, key=lambda r: r["mean"])
    top = {t: max(r[t] for r in rows) for t in args.tasks}
    for r in rows:
        mark = " **best**" if r is best else ""
        gap = min(r[t] - top[t] for t in args.tasks)
        lines.append(
            "| "
            + " | ".join(f"{r[k]:g}" if isinstance(r[k], float) else str(r[k]) for k in knobs)
            + f" | {r['nfe']} | "
            + " | ".join(f"{r[t]:.2f}" for t in args.tasks)
            + f" | {r['mean']:.2f}{mark} | {gap:+.2f} |"
        )
    write_results(args.name, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
