"""Out-of-distribution suite (issue 15): images the model never saw, at the sizes users bring.

For every case (task, image, size) the same simulated measurement (the operator's default noise,
drawn from a generator seeded by the image's name, :func:`noise_stream`) is reconstructed by
- the classical baseline of the operator (FBP, zero-filled or biharmonic);
- FISTA-TV with its weight tuned on a separate validation set of the same size (``VAL``), and
  with the best weight for the image itself (the oracle, the best case for TV);
- invdiff: the strategy and options given, ``--samples`` posterior samples, their mean scored.

It reports PSNR / SSIM (``invdiff.eval.metrics``), seconds per image and the process's peak resident
memory after each size, and, per case, the share of pixels whose truth lies in the samples' 90 %
interval (5th-95th percentile) and the correlation of the std map with the absolute error.
Every image is checked against the model's training data first (``ood_images.check_heldout``).

    python benchmarks/bench_ood.py --model general --threads 1 [--quick]

Writes results/ood.json and results/ood.md (``--name`` changes the stem).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import ood_images  # noqa: E402
from benchmarks.common import machine, operator_knobs_line, write_results  # noqa: E402
from invdiff.atomic import atomic_path  # noqa: E402
from invdiff.core.checkpoint import file_sha256, load_model, resolve_model  # noqa: E402
from invdiff.core.reconstruct import reconstruct  # noqa: E402
from invdiff.core.score import data_range_prior  # noqa: E402
from invdiff.eval.baselines import fista_tv, lipschitz_constant  # noqa: E402
from invdiff.eval.metrics import SSIM_CONVENTION, psnr, ssim  # noqa: E402
from invdiff.guidance import resolved_options, strategy_options  # noqa: E402
from invdiff.plugins import build_registry, make_plugin_manager  # noqa: E402
from invdiff.training.train import step_generator  # noqa: E402

TASKS = {
    "ct23": ("ct_sparse", {"views": 23}),
    "ct8": ("ct_sparse", {"views": 8}),
    "mri4": ("mri", {"acceleration": 4}),
    "mri8": ("mri", {"acceleration": 8}),
    "inpaint70": ("masking", {"mask": "random", "fraction": 0.7}),
}
# Validation images: TV weights and strategy knobs only, never scored as results. The first three
# are also the model card's denoising curve (recipes/validate.py, model_card.py); the
# piecewise-constant ``blobs`` joined the set later, so that a flat-region, sharp-edge image (the
# suite's Shepp-Logan is one) has a say in the knobs.
VAL_DENOISE = ("mni_z90", "moon", "brick")
VAL = (*VAL_DENOISE, "blobs")
# A wider validation set for the sampler's knobs (benchmarks/tune_strategy.py --images ood-wide),
# not for TV's weight: four images decided kappa at 23 views by one flat image (session 12), so
# this set has three flat, sharp-edged images (blobs, blobs_b, horse), two photographs of objects
# on a flat background (page, coins), two held-out MNI slices and two textures.
VAL_WIDE = (*VAL, "mni_z105", "blobs_b", "horse", "page", "coins")
SUITE = {
    "ct23": [
        ("shepp_logan", 64),
        ("shepp_logan", 128),
        ("shepp_logan", 256),
        ("mni_z95", 128),
        ("camera", 128),
    ],
    "ct8": [
        ("shepp_logan", 64),
        ("shepp_logan", 128),
        ("shepp_logan", 256),
        ("mni_z95", 128),
        ("camera", 128),
    ],
    "mri4": [("mni_z85", 128), ("mni_z100", 128), ("shepp_logan", 128)],
    "mri8": [("mni_z85", 128), ("mni_z100", 128), ("shepp_logan", 128)],
    "inpaint70": [("camera", 128), ("astronaut", 128), ("coffee", 128), ("shepp_logan", 128)],
}
QUICK = {t: [c for c in cases if c[1] == 64 or c == cases[0]][:1] for t, cases in SUITE.items()}
TV_GRID = np.geomspace(1e-6, 1.0, 7)


NOISE = "noise by name"  # in the cache keys: older caches numbered the streams over VAL + names


def noise_stream(seed: int, name: str) -> torch.Generator:
    """Return the measurement-noise generator of image ``name``: it depends on (seed, name) only,
    so adding or removing another image (validation or test) leaves every other measurement as it
    was. (invdiff's posterior samples are still seeded by position in the group, as
    ``invdiff solve`` seeds slices of a file, so their draws do move.)"""
    return step_generator(seed, zlib.crc32(name.encode()))


def measure(op, images: torch.Tensor, names: Sequence[str], seed: int) -> torch.Tensor:
    """Simulate y = A x + noise with the operator's noise_std, one stream per image name (a
    ValueError if the counts differ)."""
    pairs = zip(names, images, strict=True)
    return torch.cat([op.measure(x[None], noise_stream(seed, n)) for n, x in pairs])


def tv_rows(op, ys, truths, n_val: int, iters: int) -> dict:
    """Run FISTA-TV over the weight grid (refined around the validation best) on val + test."""
    big_l = lipschitz_constant(op)
    table = {}

    def run(w: float) -> None:
        if w not in table:
            table[w] = fista_tv(op, ys, w, iters, lipschitz=big_l).float()

    for w in TV_GRID:
        run(float(w))

    def val_psnr(w: float) -> float:
        return float(psnr(table[w][:n_val].numpy(), truths[:n_val].numpy()).mean())

    best = max(table, key=val_psnr)
    for w in (best / 10**0.5, best * 10**0.5):  # half-decade refinement around the best
        run(float(w))
    best = max(table, key=val_psnr)
    test = {w: psnr(x[n_val:].numpy(), truths[n_val:].numpy()) for w, x in table.items()}
    per_image = np.array([max(test, key=lambda w, i=i: test[w][i]) for i in range(len(ys) - n_val)])
    oracle = np.stack([table[w][n_val + i].numpy() for i, w in enumerate(per_image)])
    return {
        "val_weight": best,
        "val_x": table[best][n_val:].numpy(),
        "oracle_w": per_image,
        "oracle_x": oracle,
    }


def invdiff_rows(model, config, op, ys, args) -> tuple[np.ndarray, float, int]:
    """Return samples (N, K, C, H, W), seconds per image and NFE per sample
    (``invdiff.core.reconstruct``, the same computation as ``invdiff solve``: seed scheme, batching,
    clipped prior)."""
    prior = data_range_prior(model, config, clip=True)
    with torch.no_grad():
        rec = reconstruct(
            prior,
            model.sde,
            [op],
            [ys],
            strategy=args.strategy,
            options=args.options,
            samples=args.samples,
            seed=args.seed,
            batch_size=args.batch_size,
        )
    return rec.samples.numpy(), rec.seconds / max(len(ys), 1), rec.nfe_per_sample


def uncertainty(samples: np.ndarray, truth: np.ndarray) -> dict:
    """Return the 90 % interval coverage and the std-error correlation of one image's samples."""
    lo, hi = np.percentile(samples, [5, 95], axis=0)
    inside = float(((truth >= lo) & (truth <= hi)).mean())
    std, err = samples.std(0, ddof=1).ravel(), np.abs(samples.mean(0) - truth).ravel()
    corr = float(np.corrcoef(std, err)[0, 1]) if std.std() > 0 and err.std() > 0 else float("nan")
    return {"coverage90": inside, "std_err_corr": corr}


def scores(estimates: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Return {"psnr NAME": ..., "ssim NAME": ...} of each (1, C, H, W) estimate."""
    out = {}
    for name, x in estimates.items():
        out[f"psnr {name}"] = float(psnr(x, truth)[0])
        out[f"ssim {name}"] = float(ssim(x, truth)[0])
    return out


def tv_scores(task: str, size: int, names: list[str], op, ys, truths, args) -> dict:
    """Return the baseline and FISTA-TV scores of one group, from ``--tv-cache`` when it holds
    this exact computation (task, size, images, iterations, seed), else computed and cached."""
    key = group_key(task, size, names, args.seed, ",".join(VAL), args.fista_iters)
    return _cached(args.tv_cache, key, lambda: _tv_compute(names, op, ys, truths, args), "tv")


def _tv_compute(names, op, ys, truths, args) -> dict:
    n_val = len(VAL)
    t0 = time.perf_counter()
    tv = tv_rows(op, ys, truths, n_val, args.fista_iters)
    secs = (time.perf_counter() - t0) / len(ys)
    label, base = op.baseline(ys[n_val:])
    out = {
        "baseline": label,
        "tv_val_weight": tv["val_weight"],
        "seconds_tv_grid": secs,
        "images": [],
    }
    for i in range(len(names)):
        truth = truths[n_val + i : n_val + i + 1].numpy()
        est = {
            label: base[i : i + 1].float().numpy(),
            "FISTA-TV (val-tuned)": tv["val_x"][i : i + 1],
            "FISTA-TV (per-image best)": tv["oracle_x"][i : i + 1],
        }
        out["images"].append({"tv_image_weight": float(tv["oracle_w"][i]), **scores(est, truth)})
    return out


def group_key(task: str, size: int, names, seed: int, *extra) -> str:
    """Return the cache key of one group's computation: what its measurements depend on (task,
    size, the noise scheme ``NOISE``, the images, the seed), then ``extra`` (what the method
    depends on)."""
    return "|".join([task, str(size), NOISE, ",".join(names), str(seed), *map(str, extra)])


#: Groups this process read from a cache instead of computing: {"tv": n, "invdiff": m}.
CACHE_HITS: dict[str, int] = {"tv": 0, "invdiff": 0}


def _cached(path: str, key: str, compute, kind: str):
    """Return cache[key] from the JSON file ``path`` (counted in :data:`CACHE_HITS` under
    ``kind``) or compute, store and return it."""
    cache = json.loads(Path(path).read_text()) if path and Path(path).exists() else {}
    if key in cache:
        CACHE_HITS[kind] += 1
        return cache[key]
    value = compute()
    if path:
        cache = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        cache[key] = value
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(cache, indent=1))
    return value


def invdiff_scores(task, size, names, op, ys, truths, model, config, args) -> list[dict]:
    """Return per-image invdiff scores (mean of the samples, uncertainty, time), cached under
    the model's SHA-256, strategy, options, samples and seed when ``--invdiff-cache`` is given."""
    options = resolved_options(args.strategy, args.options, [op])  # what runs, defaults included
    key = group_key(
        task,
        size,
        names,
        args.seed,
        args.model_sha256,
        args.strategy,
        json.dumps(options, sort_keys=True),
        args.samples,
    )

    def compute() -> list[dict]:
        samples, secs, _ = invdiff_rows(model, config, op, ys[len(VAL) :], args)
        out = []
        for i in range(len(names)):
            truth = truths[len(VAL) + i : len(VAL) + i + 1].numpy()
            mean = samples[i].mean(0, keepdims=True)
            row = {"seconds_invdiff": secs, "invdiff_options": options}
            row.update(scores({"invdiff": mean}, truth))
            row.update(uncertainty(samples[i], truth[0]))
            out.append(row)
        return out

    return _cached(args.invdiff_cache, key, compute, "invdiff")


def run_group(task: str, size: int, names: list[str], model, config, registry, args) -> list:
    """Evaluate every image of one (task, size): shared operator, TV grid and validation set."""
    name, params = TASKS[task]
    op = registry[name].create((1, size, size), **params)
    images = [ood_images.load(n, size) for n in (*VAL, *names)]
    truths = torch.as_tensor(np.concatenate(images))
    ys = measure(op, truths, (*VAL, *names), args.seed)
    if args.invdiff_only:
        invdiff_scores(task, size, names, op, ys, truths, model, config, args)
        return []
    tv = tv_scores(task, size, names, op, ys, truths, args)
    if args.tv_only:
        return []
    ours = invdiff_scores(task, size, names, op, ys, truths, model, config, args)
    rows = []
    for i, img in enumerate(names):
        row = {
            "task": task,
            "image": img,
            "size": size,
            "baseline": tv["baseline"],
            "tv_val_weight": tv["tv_val_weight"],
            "seconds_tv_grid": tv["seconds_tv_grid"],
            **tv["images"][i],
            **ours[i],
        }
        rows.append(row)
        keys = (tv["baseline"], "FISTA-TV (val-tuned)", "FISTA-TV (per-image best)", "invdiff")
        print(
            f"{task} {img} {size}: " + ", ".join(f"{k} {row[f'psnr {k}']:.2f}" for k in keys),
            flush=True,
        )
    return rows


def markdown(report: dict) -> str:
    a = report["args"]
    lines = [
        "# Out-of-distribution suite (issue 15)",
        "",
        f"Model `{a['model']}` ({report['model_steps']} training steps), strategy "
        f"`{a['strategy']}` {report['strategy_options']}, mean of {a['samples']} samples, "
        f"seed {a['seed']}; FISTA-TV "
        f"{a['fista_iters']} iterations, weight tuned on {', '.join(VAL)} (same size, same task). "
        f"Noise: each operator's default noise_std. SSIM: {SSIM_CONVENTION}. Machine: "
        f"{report['machine']['processor']}, {a['threads']} torch thread(s), "
        f"{report['wall_minutes']:.1f} min for this run"
        + cache_note(report)
        + f". Command: `{report['command']}`.",
        "",
        "| task | image | px | baseline | FISTA-TV val | FISTA-TV best | invdiff "
        "| invdiff - TV val | invdiff - TV best | SSIM invdiff / TV val | 90 % cover "
        "| corr(std, err) | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        b, ours = r["baseline"], r["psnr invdiff"]
        lines.append(
            f"| {r['task']} | {r['image']} | {r['size']} | {r[f'psnr {b}']:.2f} | "
            f"{r['psnr FISTA-TV (val-tuned)']:.2f} | {r['psnr FISTA-TV (per-image best)']:.2f} | "
            f"**{ours:.2f}** | {ours - r['psnr FISTA-TV (val-tuned)']:+.2f} | "
            f"{ours - r['psnr FISTA-TV (per-image best)']:+.2f} | "
            f"{r['ssim invdiff']:.3f} / {r['ssim FISTA-TV (val-tuned)']:.3f} | "
            f"{r['coverage90']:.3f} | {r['std_err_corr']:.2f} | {r['seconds_invdiff']:.1f} |"
        )
    lines += [
        "",
        "Mean PSNR per task (dB):",
        "",
        "| task | baseline | FISTA-TV val | FISTA-TV best | invdiff | invdiff - TV val |",
        "|---|---|---|---|---|---|",
    ]
    for task, s in report["summary"].items():
        lines.append(
            f"| {task} | {s['baseline']:.2f} | {s['tv_val']:.2f} | {s['tv_best']:.2f} | "
            f"{s['invdiff']:.2f} | {s['invdiff'] - s['tv_val']:+.2f} |"
        )
    if reused(report)["invdiff"]:
        memory = "Peak memory: not measured by a run that reads invdiff's results from a cache."
    else:
        memory = "Peak resident memory of the process after each size (MiB): " + ", ".join(
            f"{k} px: {v:.0f}" for k, v in report["peak_rss_mib"].items()
        )
    own = {  # the knobs each operator chose (strategies.OPERATOR_KNOBS)
        f"{r['task']} {r['size']} px": r["invdiff_options"]
        for r in report["rows"]
        if r.get("invdiff_options", {}).get("sigma_start") is not None
    }
    if line := operator_knobs_line("invdiff's operator-dependent knobs", own):
        lines += ["", line]
    lines += ["", memory, ""]
    return "\n".join(lines)


def reused(report: dict) -> dict[str, bool]:
    """Return whether the run read any FISTA-TV or invdiff group from a cache (reports written
    before the hits were counted: whether a cache was given)."""
    a = report["args"]
    hits = report.get(
        "cache_hits", {"tv": bool(a.get("tv_cache")), "invdiff": bool(a.get("invdiff_cache"))}
    )
    return {kind: bool(n) for kind, n in hits.items()}


def cache_note(report: dict) -> str:
    """Return the sentence saying which results an earlier run computed (empty: none)."""
    kinds = [k for k, hit in reused(report).items() if hit]
    if not kinds:
        return ""
    what = " and ".join({"tv": "FISTA-TV", "invdiff": "invdiff"}[k] for k in kinds)
    times = ": the per-image times in the table are theirs" if "invdiff" in kinds else ""
    earlier = "the cache of an earlier run of the same computation"
    return f" (which read {what} results from {earlier}{times})"


def summarise(rows: list[dict]) -> dict:
    out = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == task]
        out[task] = {
            "baseline": float(np.mean([r[f"psnr {r['baseline']}"] for r in rs])),
            "tv_val": float(np.mean([r["psnr FISTA-TV (val-tuned)"] for r in rs])),
            "tv_best": float(np.mean([r["psnr FISTA-TV (per-image best)"] for r in rs])),
            "invdiff": float(np.mean([r["psnr invdiff"] for r in rs])),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="general", help="model name or checkpoint path")
    ap.add_argument("--strategy", default="diffpir")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--zeta", type=float, default=None)
    ap.add_argument(
        "--options",
        type=json.loads,
        default={},
        help="more strategy knobs as JSON, e.g. '{\"tv\": 0.5}' (the flags above win)",
    )
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16, help="samples per network call")
    ap.add_argument("--fista-iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", nargs="*", default=list(SUITE))
    ap.add_argument("--max-size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="one image per task (smoke test)")
    ap.add_argument("--name", default="ood")
    ap.add_argument("--tv-cache", default="", help="JSON file reusing FISTA-TV results across runs")
    ap.add_argument("--tv-only", action="store_true", help="compute (and cache) FISTA-TV only")
    ap.add_argument("--invdiff-cache", default="", help="JSON file reusing invdiff results")
    ap.add_argument("--invdiff-only", action="store_true", help="compute (and cache) invdiff only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    given = {"steps": args.steps, "lam": args.lam, "zeta": args.zeta}
    args.options = {**args.options, **{k: v for k, v in given.items() if v is not None}}
    path = resolve_model(args.model)
    model, config = load_model(path)
    args.model_sha256 = file_sha256(path)
    registry = build_registry(make_plugin_manager())
    suite = QUICK if args.quick else SUITE
    groups: dict[tuple[str, int], list[str]] = {}
    for task in args.tasks:
        for img, size in suite[task]:
            if size <= args.max_size:
                ood_images.check_heldout(img, config)
                groups.setdefault((task, size), []).append(img)
    for img in VAL:
        ood_images.check_heldout(img, config)
    t0, rows, peak = time.perf_counter(), [], {}
    for (task, size), names in sorted(groups.items(), key=lambda kv: kv[0][1]):
        rows += run_group(
            task, size, names, None if args.tv_only else model, config, registry, args
        )
        peak[str(size)] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.tv_only or args.invdiff_only:
        return
    report = {
        "args": {k: v for k, v in vars(args).items() if k != "options"}
        | {"model": str(args.model)},
        "strategy_options": {**strategy_options(args.strategy), **args.options},
        "model_steps": int(config.get("training", {}).get("steps_done", -1)),
        "command": "python benchmarks/bench_ood.py " + " ".join(sys.argv[1:]),
        "machine": machine(args.threads),
        "wall_minutes": (time.perf_counter() - t0) / 60,
        "peak_rss_mib": peak,
        "cache_hits": dict(CACHE_HITS),
        "rows": rows,
        "summary": summarise(rows),
    }
    write_results(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
