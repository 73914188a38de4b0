"""Cost against image size (issue 17, item 3): seconds per image and peak memory, 64 to 512 px.

For each size and batch, a fresh process reconstructs scikit-image's Shepp-Logan phantom from
23-view CT with the default model and strategy (``invdiff.core.reconstruct``, as ``invdiff solve``),
``batch`` posterior samples in one batch; it reports the wall time per sample, the share of that
time spent inside the network, and the process's peak resident memory (which includes Python,
torch and the CT system matrix).

    python benchmarks/bench_scaling.py --threads 2 [--sizes 64 128 256 512 --batches 1 8]

Writes results/scaling.json and .md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.bench_engine import TimedScore  # noqa: E402
from benchmarks.common import machine, write_results  # noqa: E402


def one(size: int, batch: int, threads: int, steps: int | None, queue) -> None:
    """Run one configuration in this (child) process and put its figures on ``queue``."""
    import numpy as np
    import torch

    from benchmarks import ood_images
    from invdiff.core.checkpoint import load_model, resolve_model
    from invdiff.core.reconstruct import reconstruct
    from invdiff.core.score import data_range_prior
    from invdiff.eval.metrics import psnr
    from invdiff.guidance import DEFAULT_STRATEGY, resolved_options
    from invdiff.plugins import build_registry, make_plugin_manager

    torch.set_num_threads(threads)
    model, config = load_model(resolve_model(None))
    timed = TimedScore(data_range_prior(model, config))
    truth = torch.as_tensor(ood_images.load("shepp_logan", size))
    t0 = time.perf_counter()
    op = build_registry(make_plugin_manager())["ct_sparse"].create((1, size, size), views=23)
    setup = time.perf_counter() - t0
    y = op.measure(truth, torch.Generator().manual_seed(0))
    options = {} if steps is None else {"steps": steps}
    with torch.no_grad():
        rec = reconstruct(
            timed, model.sde, [op], [y], options=options, samples=batch, batch_size=batch
        )
    queue.put(
        {
            "size": size,
            "batch": batch,
            "strategy": DEFAULT_STRATEGY,
            "options": resolved_options(DEFAULT_STRATEGY, options, [op]),
            "nfe_per_sample": rec.nfe_per_sample,
            "seconds_per_sample": rec.seconds / batch,
            "seconds_total": rec.seconds,
            "network_share": timed.seconds / rec.seconds,
            "operator_setup_s": setup,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "psnr_mean": float(np.mean(psnr(rec.mean.numpy(), truth.numpy()))),
        }
    )


def markdown(report: dict) -> str:
    a = report["args"]
    rows = report["rows"]
    lines = [
        "# Cost against image size (default model and strategy)",
        "",
        f"Shepp-Logan, CT 23 views, `invdiff.core.reconstruct` with the default strategy "
        f"({rows[0]['strategy']} "
        f"{ {k: v for k, v in rows[0]['options'].items() if k != 'sigma_start'} }, from the "
        "operator's start level `sigma_start`, which grows with the size), one process per row, "
        f"{a['threads']} torch thread(s) on {report['machine']['processor']} "
        f"({report['machine']['cpu_count']} cores), device cpu. Command: `{report['command']}`. "
        "Not measured on GPU (none was lent).",
        "",
        "| px | batch | s / sample | s / sample / Mpx | network share | peak RSS MiB | "
        "CT setup s | sigma_start | PSNR of the mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mpx = r["size"] ** 2 / 1e6
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['seconds_per_sample']:.1f} | "
            f"{r['seconds_per_sample'] / mpx:.0f} | {100 * r['network_share']:.0f} % | "
            f"{r['peak_rss_mib']:.0f} | {r['operator_setup_s']:.1f} | "
            f"{r['options'].get('sigma_start', 0):.3g} | {r['psnr_mean']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256, 512])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="default: the strategy's")
    ap.add_argument("--name", default="scaling")
    ap.add_argument(
        "--max-pixels",
        type=int,
        default=8 * 128 * 128,
        help="skip batches larger than this many pixels in all (CPU time)",
    )
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            if batch > 1 and batch * size * size > args.max_pixels:
                continue
            queue = ctx.Queue()
            proc = ctx.Process(target=one, args=(size, batch, args.threads, args.steps, queue))
            proc.start()
            rows.append(queue.get())
            proc.join()
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "args": vars(args),
        "command": "python benchmarks/bench_scaling.py " + " ".join(sys.argv[1:]),
        "machine": machine(args.threads),
        "rows": rows,
    }
    write_results(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
