"""CPU execution variants of the score network (issue 17, item 3): which one to keep.

Times ``ScoreModel.score`` of the default model, the call a reconstruction makes once per step,
for each variant at each (size, batch), interleaved round by round so that a load change on a
shared machine hits every variant alike; reports the median over rounds and the largest
difference of the variant's output from the NCHW reference's (a variant must compute the same
thing):

- ``nchw``: ``torch.no_grad()``, weights and input in PyTorch's default NCHW layout (the
  reference every other variant is compared with);
- ``default``: the model as ``load_model`` returns it on the CPU, the path of
  ``invdiff.core.reconstruct`` (weights in NHWC, :meth:`ScoreModel.to_channels_last`, kept
  because it won here);
- ``inference``: NCHW under ``torch.inference_mode()`` (no version counters / autograd
  bookkeeping);
- ``compile``: NCHW through ``torch.compile`` (Inductor, C++ code generation; the one-off compile
  time is reported separately).

    python benchmarks/bench_network.py --threads 1 --sizes 64 128 256 --batches 1 8

Writes results/network.json and .md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.common import machine, write_results  # noqa: E402
from invdiff.core.checkpoint import load_model, resolve_model  # noqa: E402

VARIANTS = ("nchw", "default", "inference", "compile")
REFERENCE = "nchw"


def variants(model, names):
    """Return {name: (context manager factory, callable(x, t))} for the requested variants;
    ``model`` is the loaded one (NHWC), an NCHW copy serves the others."""
    nchw = copy.deepcopy(model).to_channels_last(False)
    out = {}
    for name in names:
        if name == "nchw":
            out[name] = (torch.no_grad, nchw.score)
        elif name == "default":
            out[name] = (torch.no_grad, model.score)
        elif name == "inference":
            out[name] = (torch.inference_mode, nchw.score)
        elif name == "compile":
            out[name] = (torch.no_grad, torch.compile(nchw.score, dynamic=False))
        else:
            raise ValueError(f"unknown variant {name!r}; use {VARIANTS}")
    return out


def measure(model, fns, size: int, batch: int, rounds: int) -> list[dict]:
    """Time each variant ``rounds`` times (interleaved) on one input; first call is warm-up."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=g)
    t = torch.full((batch,), 0.5)
    ref = None
    times: dict[str, list[float]] = {n: [] for n in fns}
    first: dict[str, float] = {}
    err: dict[str, float] = {}
    for r in range(rounds + 1):
        for name, (ctx, fn) in fns.items():
            with ctx():
                start = time.perf_counter()
                out = fn(x, t)
                elapsed = time.perf_counter() - start
            if r == 0:
                first[name] = elapsed
                ref = out if name == REFERENCE else ref
                err[name] = float((out - ref).abs().max()) if ref is not None else float("nan")
            else:
                times[name].append(elapsed)
    base = statistics.median(times[REFERENCE]) if REFERENCE in times else float("nan")
    return [
        {
            "size": size,
            "batch": batch,
            "variant": n,
            "median_s": statistics.median(ts),
            "speedup_vs_nchw": base / statistics.median(ts),
            "first_call_s": first[n],
            "max_abs_diff_vs_nchw": err[n],
        }
        for n, ts in times.items()
    ]


def always_faster(rows: list[dict]) -> str:
    """Return the variants whose median beat NCHW's in every (size, batch), or 'none'."""
    names = {r["variant"] for r in rows} - {REFERENCE}
    wins = sorted(
        n for n in names if all(r["speedup_vs_nchw"] > 1 for r in rows if r["variant"] == n)
    )
    return ", ".join(wins) or "none"


def markdown(report: dict) -> str:
    lines = [
        "# Score network on the CPU: execution variants",
        "",
        f"Default model, `ScoreModel.score` on random input at t = 0.5, median of "
        f"{report['args']['rounds']} interleaved rounds after one warm-up call, "
        f"{report['args']['threads']} torch thread(s), {report['machine']['processor']} "
        f"({report['machine']['cpu_count']} cores), torch {report['machine'].get('torch', '')}. "
        f"Load average at start {report['machine'].get('load_average_at_start')}. "
        f"Command: `{report['command']}`. The first call of `compile` includes compilation.",
        "",
        f"Faster than NCHW at every size and batch measured: {always_faster(report['rows'])}.",
        "",
        "| px | batch | variant | median s | speed-up vs nchw | first call s | "
        "max abs diff vs nchw |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['variant']} | {r['median_s']:.4f} | "
            f"{r['speedup_vs_nchw']:.2f} | {r['first_call_s']:.2f} | "
            f"{r['max_abs_diff_vs_nchw']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-pixels", type=int, default=8 * 128 * 128)
    ap.add_argument("--name", default="network")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(resolve_model(None))[0]
    fns = variants(model, [REFERENCE, *[v for v in args.variants if v != REFERENCE]])
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            if batch > 1 and batch * size * size > args.max_pixels:
                continue
            rows += measure(model, fns, size, batch, args.rounds)
            for r in rows[-len(fns) :]:
                print(r, flush=True)
    report = {
        "args": vars(args),
        "command": "python benchmarks/bench_network.py " + " ".join(sys.argv[1:]),
        "machine": {**machine(args.threads), "torch": torch.__version__},
        "rows": rows,
    }
    write_results(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
