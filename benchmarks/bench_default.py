"""Check the `invdiff solve` default against issue 17's bar on the harness's TEST phantoms.

The bar: at most 50 NFE per sample, and a mean PSNR (posterior mean) within 0.5 dB of the best
200-NFE setting on every harness task. The default's knobs were chosen on validation images only
(benchmarks/tune_strategy.py: results/tune_fast50.md on the out-of-distribution suite's
validation images, results/tune_fast50_phantoms.md on the harness's validation phantoms); this
script chooses nothing. Rows per task: the default (strategy ``DEFAULT_STRATEGY`` with the knobs
of its signature, as `invdiff solve` runs it) and the 200-NFE settings: the same knobs with 199
steps, from pure noise and from the default's warm start (when it has one; sigma_start None is
each operator's own level, ``Operator.warm_start_sigma``), each also with DiffPIR's neutral
value of every other operator-dependent knob (``strategies.OPERATOR_KNOBS``: kappa 1, relax 1;
None in the default is each operator's own value, ``Operator.noise_inflation`` /
``.data_relaxation``), alone and together: the best 200-NFE setting may not need what they bring
at 50 NFE.

    python benchmarks/bench_default.py --n-images 16 --samples 2 --threads 1 \
        [--reuse benchmarks/results/default.json]

``--reuse REPORT`` reads the rows an earlier report (same model, strategy, images, samples and
seed) computed with exactly the knobs a row resolves to, instead of computing them again; the table
marks them. A knob the earlier report did not record yet ran at its neutral value then.

Writes results/default.json and default.md (``--name`` changes the stem).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import bench_ood, harness_tasks  # noqa: E402
from benchmarks.common import machine, operator_knobs_line, write_results  # noqa: E402
from benchmarks.harness_config import Config  # noqa: E402
from invdiff.core.checkpoint import load_model, resolve_model  # noqa: E402
from invdiff.eval.metrics import psnr  # noqa: E402
from invdiff.guidance import DEFAULT_STRATEGY, resolved_options, strategy_options  # noqa: E402
from invdiff.guidance.strategies import OPERATOR_KNOBS  # noqa: E402

TASKS = ("ct23", "ct8", "mri4", "mri8", "inpaint70")  # issue 17: CT 23 / 8, MRI 4x / 8x, inpainting
MAX_NFE = 50
TOLERANCE_DB = 0.5
REFERENCE_STEPS = 199  # 200 NFE with the final denoising step
#: DiffPIR's published value of each operator-dependent knob but the start level (which the
#: 200-NFE rows vary on their own): what a row without a knob's gain runs with, and what a report
#: older than a knob ran with.
NEUTRAL = {k: value for k, (_, value, _) in OPERATOR_KNOBS.items() if k != "sigma_start"}


def settings(default: dict) -> dict[str, dict]:
    """Return {label: knobs}: the default and the 200-NFE settings it is measured against."""
    noise = {"sigma_start": 0.0} if "sigma_start" in default else {}
    reference = {"200 NFE from noise": {**default, "steps": REFERENCE_STEPS, **noise}}
    start = default.get("sigma_start", 0.0)
    if start is None:  # each operator's own warm-start level
        reference["200 NFE from the operator's start level"] = {**default, "steps": REFERENCE_STEPS}
    elif start:
        reference[f"200 NFE from noise level {start:g}"] = {**default, "steps": REFERENCE_STEPS}
    for knob, neutral in NEUTRAL.items():  # also without what each knob brings
        if default.get(knob, neutral) != neutral:
            plain = {
                f"{lab}, {knob} {neutral:g}": {**k, knob: neutral} for lab, k in reference.items()
            }
            reference.update(plain)
    return {"default": dict(default), **reference}


def knobs_key(used: dict) -> str:
    """Return the key under which a row's resolved knobs are looked up (``done``, ``--reuse``);
    an operator knob a row does not record (reports older than the knob) counts as neutral."""
    return json.dumps({**NEUTRAL, **used}, sort_keys=True)


def earlier_rows(path: str, report: dict) -> dict[str, dict[str, dict]]:
    """Return {task: {knobs_key: row}} of the earlier report at ``path``, each row marked reused;
    exit with a one-line message when it measured another model, strategy, images or seeds."""
    earlier = json.loads(Path(path).read_text())
    fields = ("model", "model_steps", "strategy", "n_images", "samples")
    mine, theirs = [report[f] for f in fields], [earlier.get(f) for f in fields]
    mine.append(report["seed"]), theirs.append(earlier.get("seed", 0))  # older reports: seed 0
    if mine != theirs:
        raise SystemExit(f"--reuse {path}: it measured {theirs}, this run {mine}; run without it")
    report["reuse"] = {"file": Path(path).name, "command": earlier["command"]}
    return {
        task: {
            knobs_key(row["options"]): {**row, "reused": True}
            for row in rows.values()
            if isinstance(row, dict) and "options" in row
        }
        for task, rows in earlier["tasks"].items()
    }


def run_task(model, config, split: dict, args, knobs: dict, done: dict) -> dict:
    """Reconstruct the first n test images with one setting; return PSNR, NFE, time and the
    knobs it ran with. A setting that resolves to knobs already run on this task (``done``:
    {knobs as JSON: row}; e.g. kappa 1 where the operator's own factor is 1) reuses that row."""
    op = harness_tasks.diffpir_op(split)
    used = resolved_options(args.strategy, knobs, [op])
    key = json.dumps(used, sort_keys=True)
    if key in done:
        return done[key]
    y, truth = split["y"][: args.n_images], split["truth"][: args.n_images]
    run = SimpleNamespace(
        strategy=args.strategy,
        options=knobs,
        samples=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    samples, secs, nfe = bench_ood.invdiff_rows(model, config, op, y, run)
    per_image = psnr(samples.mean(1), truth.numpy())
    done[key] = {
        "psnr": float(per_image.mean()),
        "per_image": per_image.tolist(),
        "nfe": nfe,
        "seconds_per_image": secs,
        "options": used,
    }
    return done[key]


def markdown(report: dict) -> str:
    labels, m = list(report["settings"]), report["machine"]
    lines = [
        "# The default solve against the best 200-NFE setting (issue 17)",
        "",
        f"Model `{report['model']}` ({report['model_steps']} steps); strategy "
        f"`{report['strategy']}`, default knobs {report['settings']['default']}; the first "
        f"{report['n_images']} TEST phantoms of each harness task (benchmarks/datasets.py, seed 2, "
        f"64 px), the harness's measurements and likelihood; mean PSNR (dB) of the posterior mean "
        f"of {report['samples']} samples. Command: `{report['command']}`, "
        f"{report['wall_minutes']:.1f} min on {m['processor']} ({m['cpu_count']} cores, "
        f"load average at start {m['load_average_at_start']}), "
        f"{m['torch_threads']} torch thread(s), torch {m['torch']}.",
        "",
        f"Bar: at most {MAX_NFE} NFE per sample and within {TOLERANCE_DB} dB of the best 200-NFE "
        f"row on every task. Met: **{'yes' if report['met'] else 'no'}**.",
        "",
        "| task | "
        + " | ".join(f"{lab} ({report['nfe'][lab]} NFE)" for lab in labels)
        + " | default - best 200 | within |",
        "|---" * (len(labels) + 3) + "|",
    ]
    for task, rows in report["tasks"].items():
        cells = [
            f"{rows[lab]['psnr']:.2f}{'*' if rows[lab].get('reused') else ''} "
            f"({rows[lab]['seconds_per_image']:.1f} s)"
            for lab in labels
        ]
        lines.append(
            f"| {task} | "
            + " | ".join(cells)
            + f" | {rows['gap']:+.2f} | {'yes' if rows['within'] else 'no'} |"
        )
    lines += ["", "In brackets: seconds per image, all samples included."]
    if reuse := report.get("reuse"):
        lines.append(
            f"*: read from the earlier report {reuse['file']} (`{reuse['command']}`; the same "
            "knobs, model, images, samples and seed), not run again."
        )
    own = {task: rows["default"].get("options", {}) for task, rows in report["tasks"].items()}
    if line := operator_knobs_line("The default's operator-dependent knobs per task", own):
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="general")
    ap.add_argument("--strategy", default=DEFAULT_STRATEGY)
    ap.add_argument("--tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="default")
    ap.add_argument("--reuse", help="an earlier report whose rows with the same knobs are read")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, config = load_model(resolve_model(args.model))
    model_steps = int(config.get("training", {}).get("steps_done", -1))
    report = {"model": args.model, "model_steps": model_steps, "strategy": args.strategy}
    report.update(n_images=args.n_images, samples=args.samples, seed=args.seed)
    earlier = earlier_rows(args.reuse, report) if args.reuse else {}
    data, _ = harness_tasks.load_data(Config(tasks=list(args.tasks)))
    chosen = settings(strategy_options(args.strategy))
    t0 = time.perf_counter()
    tasks, nfe = {}, {}
    for task in args.tasks:
        rows, done = {}, dict(earlier.get(task, {}))
        for label, knobs in chosen.items():
            rows[label] = run_task(model, config, data[task]["test"], args, knobs, done)
            nfe[label] = rows[label]["nfe"]
            print(task, label, f"{rows[label]['psnr']:.2f} dB", flush=True)
        best = max(r["psnr"] for lab, r in rows.items() if lab != "default")
        rows["gap"] = rows["default"]["psnr"] - best
        rows["within"] = bool(rows["gap"] >= -TOLERANCE_DB)
        tasks[task] = rows
    met = bool(nfe["default"] <= MAX_NFE and all(r["within"] for r in tasks.values()))
    report.update(settings=chosen, nfe=nfe, tasks=tasks, met=met)
    report.update(
        mean_gap=float(np.mean([r["gap"] for r in tasks.values()])),
        command="python benchmarks/bench_default.py " + " ".join(sys.argv[1:]),
        machine=machine(args.threads),
        wall_minutes=(time.perf_counter() - t0) / 60,
    )
    write_results(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
