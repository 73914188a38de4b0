"""Time forward + adjoint of every registered linear operator on CPU, and ct_sparse against astra.

For each operator (built from the registry, default parameters; grayscale on 3 channels, the
others on 1), image sizes 64 and 128, batch 1 and 8, float32: the median over ``--repeats`` of
one forward plus one adjoint, after warm-up. For ct_sparse the same geometry is also run through
astra-toolbox's CPU 'linear' projector (``astra.create_sino`` then
``astra.create_backprojection``, one image at a time, as astra takes 2-D arrays). Writes
``results/operators.json`` (every figure plus the machine) and ``results/operators.md``.

    python benchmarks/bench_operators.py [--threads 2 --repeats 30]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import machine, median_ms, write_results  # noqa: E402
from invdiff.core.operator import LinearOperator  # noqa: E402
from invdiff.plugins import build_registry, make_plugin_manager  # noqa: E402

SIZES = (64, 128)
BATCHES = (1, 8)


def astra_ct_ms(op, x: torch.Tensor, repeats: int) -> float:
    """Return the median ms of astra's CPU create_sino + create_backprojection on op's geometry."""
    import astra

    _, h, w = op.image_shape
    vol = astra.create_vol_geom(h, w)
    proj = astra.create_proj_geom("parallel", 1.0, op.detectors, op.geometry()["angles"])
    pid = astra.create_projector("linear", proj, vol)
    images = [img for img in x[:, 0].numpy()]

    def run() -> None:
        for img in images:
            sid, sino = astra.create_sino(img, pid)
            bid, _ = astra.create_backprojection(sino, pid)
            astra.data2d.delete([sid, bid])

    try:
        return median_ms(run, repeats)
    finally:
        astra.projector.delete(pid)


def run(threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    registry = build_registry(make_plugin_manager())
    rows = []
    g = torch.Generator().manual_seed(0)
    for name, entry in registry.items():
        if not issubclass(entry.cls, LinearOperator):
            continue
        channels = 3 if name == "grayscale" else 1
        for size in SIZES:
            op = entry.create((channels, size, size))
            for batch in BATCHES:
                x = torch.rand(batch, channels, size, size, generator=g)
                y = op(x)
                ms = median_ms(lambda op=op, x=x, y=y: (op(x), op.adjoint(y)), repeats)
                row = {"operator": name, "size": size, "batch": batch, "torch_ms": ms}
                if name == "ct_sparse":
                    row["views"], row["detectors"] = op.views, op.detectors
                    row["astra_cpu_ms"] = astra_ct_ms(op, x, repeats)
                rows.append(row)
                print(row, flush=True)
    return {"machine": machine(threads), "repeats": repeats, "dtype": "float32", "rows": rows}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Forward + adjoint time per operator (CPU, float32)",
        "",
        f"Median of {report['repeats']} repeats after 3 warm-up calls, in milliseconds; "
        f"{m['torch_threads']} torch threads on {m['processor']} ({m['cpu_count']} cores), "
        f"torch {m['torch']}, load average at start {m['load_average_at_start']}. "
        "The machine was shared with a training job, so read the figures as upper bounds. "
        "Default parameters (ct_sparse: 23 views, ceil(sqrt(2) n) detectors; astra column: its "
        "CPU 'linear' projector, create_sino + create_backprojection per image, same geometry).",
        "Made by `python benchmarks/bench_operators.py`.",
        "",
        "| operator | size | batch | invdiff (ms) | astra CPU (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        astra = f"{r['astra_cpu_ms']:.2f}" if "astra_cpu_ms" in r else ""
        lines.append(
            f"| {r['operator']} | {r['size']} | {r['batch']} | {r['torch_ms']:.2f} | {astra} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    report = run(args.threads, args.repeats)
    write_results("operators", report, markdown(report))


if __name__ == "__main__":
    main()
