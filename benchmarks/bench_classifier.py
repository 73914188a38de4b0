"""Classifier guidance on the phantom model (issue 6): accuracy vs t, conditional samples, and
how much a lesion hypothesis changes an 8-view CT reconstruction.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_classifier.py --scales 1 3

Defaults: the shipped lesion classifier ``invdiff/models/lesion_classifier.pt`` and the judge
``benchmarks/models/lesion_judge.pt``. Both are trained on lesion twins (``--twins``: the same
anatomy with and without its lesion, drawn as pairs with common t and noise); the judge on
clean images of an independent seed (3), with another initialisation seed:

    invdiff data phantoms tw_train.h5 --n 4000 --seed 0 --twins
    invdiff train-classifier tw_train.h5 --out lesion_classifier.pt --steps 12000 \
        --batch-size 32 --lr 1e-3 --ema-decay 0.999 --ckpt-every 250 --seed 0 --threads 1
    invdiff data phantoms tw_judge.h5 --n 4000 --seed 3 --twins
    invdiff train-classifier tw_judge.h5 --out lesion_judge.pt --clean --steps 4000 \
        --batch-size 32 --lr 1e-3 --ema-decay 0.99 --ckpt-every 250 --seed 1 --threads 1

1. Accuracy of the time-conditional classifier p_t(y | x_t) on test phantoms (seed 2), each
   diffused to time t with fresh noise, for a grid of t; the clean-image judge at t_min beside it.
2. Class-conditional sampling (Song et al. 2021, Sec. 5): samples with the guided score
   prior + s * grad log p_t(c | x_t) for c = 1 and c = 0, and unconditional samples with the same
   seeds (weight 0), judged by a SEPARATELY trained clean-image classifier (``invdiff
   train-classifier --clean``, another seed); the fraction judged as the requested class.
3. Lesion hypothesis in sparse-view CT: test phantoms with a lesion and their lesion-free twins
   (same random anatomy: the lesion is the last random draw of ``thorax_phantom``), measured with
   ``ct_sparse`` (8 views); reconstructions with and without the hypothesis "lesion present"
   (classifier operator, label 1); mean |difference| inside the true lesion region and outside,
   and PSNR against the truth.

The >= 90 % check of issue 6 at one common setting: the scale was chosen on seeds 0-31 (``--name
search_sS``, scales 10-100), then checked on fresh seeds 1000-1095, one class per process and the
unconditional row, merged into one report (results/classifier_heldout.md):

    python benchmarks/bench_classifier.py --steps 500 --n-samples 96 --seed 1000 --scales 70 \
        --labels 1 --skip accuracy unconditional ct --name heldout_s70_label1 --threads 1
    (the same with --labels 0 --name heldout_s70_label0, in parallel)
    python benchmarks/bench_classifier.py --steps 500 --n-samples 96 --seed 1000 --scales \
        --skip accuracy ct --name heldout_unconditional --threads 2
    python benchmarks/bench_classifier.py --merge heldout_unconditional heldout_s70_label1 \
        heldout_s70_label0 --name classifier_heldout --note "..."
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.bench_samples import plausible_area, stats  # noqa: E402
from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from invdiff.core.checkpoint import file_sha256, load_model, resolve_model  # noqa: E402
from invdiff.core.samplers import generators_for  # noqa: E402
from invdiff.core.score import data_range_prior  # noqa: E402
from invdiff.data.phantoms import SPLIT_SEEDS, lesion_twins, make_phantoms  # noqa: E402
from invdiff.eval.metrics import psnr  # noqa: E402
from invdiff.guidance import Measurement, solve  # noqa: E402
from invdiff.images import grid, save_png  # noqa: E402
from invdiff.plugins import build_registry, make_plugin_manager  # noqa: E402
from invdiff.training.classifier import accuracy, load_classifier  # noqa: E402

T_GRID = (1e-5, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def majority_rate(n: int) -> float:
    """Return the accuracy of always answering the more frequent test class (chance level)."""
    labels = make_phantoms(n, 64, SPLIT_SEEDS["test"], 0.5)[1]
    return float(max(labels.mean(), 1 - labels.mean()))


def accuracy_vs_t(clf, judge, n: int) -> list[dict]:
    images, labels = make_phantoms(n, 64, SPLIT_SEEDS["test"], 0.5)
    x, y = torch.as_tensor(images), torch.as_tensor(labels)
    rows = []
    for t in T_GRID:
        g = torch.Generator().manual_seed(0)
        _, sigma = clf.sde.coefficients(torch.tensor([t]))
        row = {"t": t, "sigma_t": float(sigma), "time_conditional": accuracy(clf, x, y, t, g)}
        if t == T_GRID[0]:
            row["clean_judge"] = accuracy(judge, x, y, t, torch.Generator().manual_seed(0))
        rows.append(row)
        print(row, flush=True)
    return rows


def classifier_op(registry, clf_path: str, label: int, scale: float):
    """The ``classifier`` operator for the hypothesis "class ``label``" at guidance ``scale``."""
    return registry["classifier"].create((1, 64, 64), label=label, scale=scale, classifier=clf_path)


def conditional_samples(
    model,
    registry,
    clf_path: str,
    judge,
    n: int,
    steps: int,
    scales,
    snr: float,
    seed: int = 0,
    unconditional: bool = True,
    labels=(1, 0),
) -> tuple[list[dict], np.ndarray]:
    """Judge n samples (seeds seed..seed+n-1) per (class, scale) row; return the rows and the
    first 8 samples of each."""
    _, lo, hi = plausible_area(64)
    rows, tiles = [], []
    plan = [(None, 0.0)] if unconditional else []
    for label, scale in plan + [(c, s) for s in scales for c in labels]:
        cls = 1 if label is None else label  # unconditional: weight 0, the label is irrelevant
        op = classifier_op(registry, clf_path, cls, scale)
        m = Measurement(op, torch.tensor([cls]), 0.0 if label is None else 1.0)
        t0 = time.perf_counter()
        with torch.no_grad():
            gens = generators_for(range(seed, seed + n), "cpu")
            res = solve(model, model.sde, [m], gens, steps=steps, snr=snr)
        x = res.x.clamp(0, 1)
        tiles.append(x[:8].numpy())
        tt = torch.full((n,), judge.sde.t_min)
        with torch.no_grad():
            pred = judge(x, tt).argmax(1)
        row = {
            "requested": "unconditional" if label is None else int(label),
            "scale": scale,
            "fraction_judged_lesion": float((pred == 1).float().mean()),
            "fraction_judged_as_requested": None
            if label is None
            else float((pred == label).float().mean()),
            # Crude realism check (benchmarks/bench_samples.py): body of plausible size.
            "fraction_plausible_size": stats(res.x.numpy(), lo, hi)["fraction_plausible_size"],
            "nfe": res.nfe,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(row, flush=True)
    return rows, np.concatenate(tiles)


def ct_hypothesis(model, registry, clf_path, n: int, samples: int, scales, name: str) -> dict:
    """Reconstruct n lesion phantoms and their twins from 8 views, without and with the
    hypothesis "lesion present" at each guidance scale; the change inside and outside the lesion."""
    present, absent, masks = lesion_twins(n, 64, SPLIT_SEEDS["test"])
    truth = np.concatenate([present, absent])
    mask = np.concatenate([masks, masks])
    ct = registry["ct_sparse"].create((1, 64, 64), views=8, noise_std=0.01)
    g = torch.Generator().manual_seed(7)
    y = ct.measure(torch.as_tensor(truth), g)
    idx = np.repeat(np.arange(len(truth)), samples)
    recon = {}
    for scale in [0.0, *scales]:  # 0: CT only
        ms = [Measurement(ct, y[idx])]
        if scale:
            ms.append(Measurement(classifier_op(registry, clf_path, 1, scale), torch.tensor([1])))
        t0 = time.perf_counter()
        gens = generators_for(range(len(idx)), "cpu")  # the same seeds for every scale: paired
        x = solve(model, model.sde, ms, gens, strategy="diffpir").x
        recon[scale] = x.reshape(len(truth), samples, 1, 64, 64).mean(1).clamp(0, 1).numpy()
        print(f"scale {scale:g}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for scale in scales:
        diff = np.abs(recon[scale] - recon[0.0])
        for case, sl in (("lesion_present", slice(0, n)), ("lesion_absent", slice(n, 2 * n))):
            d, m = diff[sl], mask[sl]
            row = {
                "truth": case,
                "scale": scale,
                "mean_abs_change_inside_lesion_region": float(d[m].mean()),
                "mean_abs_change_outside": float(d[~m].mean()),
                "psnr_ct_only": float(psnr(recon[0.0][sl], truth[sl]).mean()),
                "psnr_with_hypothesis": float(psnr(recon[scale][sl], truth[sl]).mean()),
                "mean_inside_lesion_region_truth": float(truth[sl][m].mean()),
                "mean_inside_lesion_region_ct_only": float(recon[0.0][sl][m].mean()),
                "mean_inside_lesion_region_with_hypothesis": float(recon[scale][sl][m].mean()),
            }
            rows.append(row)
            print(row, flush=True)
    # Figure: per row one phantom (first lesion phantoms, then their twins); columns truth, CT
    # only, CT + hypothesis at the largest scale, |change| divided by its largest value shown.
    top = max(scales)
    diff = np.abs(recon[top] - recon[0.0])
    shown = [*range(min(n, 2)), *range(n, n + min(n, 2))]
    scale_diff = float(diff[shown].max()) or 1.0
    cols = [truth, recon[0.0], recon[top], diff / scale_diff]
    tiles = np.concatenate([np.stack([c[r] for c in cols]) for r in shown])
    figure = {"file": f"{name}_ct.png", "scale": top, "largest_change": scale_diff}
    save_png(RESULTS / figure["file"], grid(tiles, ncols=4), scale=2)
    return {"rows": rows, "figure": figure}


def markdown(report: dict) -> str:
    a = report["args"]
    lines = [
        "# Classifier guidance on the phantom model (issue 6)",
        "",
        *([f"> {report['note']}", ""] if report.get("note") else []),
        f"Command: `{report['command']}`; CPU, {a['threads']} thread(s), shared machine; "
        f"model sha256 {report['model_sha256'][:12]}, classifier "
        f"{a['classifier'] or 'invdiff/models/lesion_classifier.pt (shipped)'}, judge "
        f"{os.path.relpath(a['judge'])}; prior "
        + ("clipped to [0, 1] (ClippedScore, the solve default)." if a.get("clip") else "raw."),
    ]
    if "accuracy_vs_t" in report:
        lines += [
            "",
            f"## Accuracy of p_t(y | x_t) on {a['n_test']} test phantoms (seed 2)",
            "",
            f"Chance level (always the more frequent class): {report['majority_rate']:.3f}.",
            "",
            "| t | sigma_t | time-conditional | clean judge |",
            "|---|---|---|---|",
        ]
        for r in report["accuracy_vs_t"]:
            judge = f"{r['clean_judge']:.3f}" if "clean_judge" in r else ""
            lines.append(
                f"| {r['t']:g} | {r['sigma_t']:.3g} | {r['time_conditional']:.3f} | {judge} |"
            )
    if "conditional_samples" in report:
        corrector = f"Langevin corrector snr {a['snr']:g}" if a["snr"] else "no corrector"
        lines += [
            "",
            f"## Conditional samples ({a['n_samples']} per row, sampling seeds "
            f"{a['seed']}-{a['seed'] + a['n_samples'] - 1}, {a['steps']} "
            f"reverse-diffusion steps, {corrector}), judged by the clean classifier",
            "",
            "Plausible size: tissue area inside the 1st-99th percentile of real phantoms "
            "(benchmarks/bench_samples.py), a crude check that guidance has not broken the body.",
            "",
            "| requested | scale | judged lesion | judged as requested | plausible size | NFE "
            "| wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["conditional_samples"]:
            req = r["fraction_judged_as_requested"]
            req = "" if req is None else f"{req:.3f}"
            lines.append(
                f"| {r['requested']} | {r['scale']:g} | {r['fraction_judged_lesion']:.3f} | {req} "
                f"| {r['fraction_plausible_size']:.3f} | {r['nfe']} | {r['wall_s']} |"
            )
        rows = ", ".join(
            "unconditional"
            if r["requested"] == "unconditional"
            else f"{'lesion' if r['requested'] else 'no lesion'} at scale {r['scale']:g}"
            for r in report["conditional_samples"]
        )
        lines += ["", f"![first 8 samples per row: {rows}]({report['samples_figure']})"]
    if "ct_hypothesis" not in report:
        return "\n".join(lines) + "\n"
    ct = report["ct_hypothesis"]
    lines += [
        "",
        f"## Lesion hypothesis in 8-view CT ({a['ct_images']} phantoms with a lesion and their "
        f"lesion-free twins, {a['ct_samples']} DiffPIR samples each, 1 % noise)",
        "",
        'Change = |reconstruction with the hypothesis "lesion present" (classifier, label 1, '
        "the scale given) - reconstruction from the CT data alone|, same seeds.",
        "",
        "| truth | scale | mean abs change inside lesion region | outside | PSNR CT only | PSNR "
        "with hypothesis | mean in region: truth / CT only / with hypothesis |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in ct["rows"]:
        lines.append(
            f"| {r['truth']} | {r['scale']:g} | {r['mean_abs_change_inside_lesion_region']:.4f} "
            f"| {r['mean_abs_change_outside']:.4f} | {r['psnr_ct_only']:.2f} | "
            f"{r['psnr_with_hypothesis']:.2f} | {r['mean_inside_lesion_region_truth']:.3f} / "
            f"{r['mean_inside_lesion_region_ct_only']:.3f} / "
            f"{r['mean_inside_lesion_region_with_hypothesis']:.3f} |"
        )
    f = ct["figure"]
    lines += [
        "",
        f"![rows: lesion phantoms, then their lesion-free twins; columns: truth, CT only, CT "
        f"+ hypothesis at scale {f['scale']:g}, |change| / {f['largest_change']:.3g}]({f['file']})",
    ]
    return "\n".join(lines) + "\n"


def merge(names: list[str], out: str, note: str) -> None:
    """Combine the sample rows of several runs (same model, seeds, steps and corrector, e.g. one
    class per process) into results/OUT.{json,md} with their figures stacked; nothing is
    recomputed."""
    import json

    import imageio.v3 as iio

    reports = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    keys = ("n_samples", "seed", "steps", "snr", "clip", "classifier", "judge")
    first = reports[0]
    for r in reports[1:]:
        same = all(r["args"].get(k) == first["args"].get(k) for k in keys)
        if not same or r["model_sha256"] != first["model_sha256"]:
            raise SystemExit(f"merge: runs differ in one of {keys} or the model; not merged")
    merged = dict(first)
    merged["merged_from"] = [f"{n}.json" for n in names]
    again = f"python benchmarks/bench_classifier.py --merge {' '.join(names)} --name {out}"
    merged["command"] = "; ".join(r["command"] for r in reports) + f"; merged by {again}"
    merged["note"] = note
    threads = sorted({r["args"]["threads"] for r in reports})
    merged["args"] = dict(first["args"], threads=" or ".join(map(str, threads)))
    merged["conditional_samples"] = [row for r in reports for row in r["conditional_samples"]]
    merged["samples_figure"] = f"{out}_samples.png"
    rows = [iio.imread(RESULTS / r["samples_figure"]) for r in reports]
    save_png(RESULTS / merged["samples_figure"], np.concatenate(rows) / 255.0)
    write_results(out, merged, markdown(merged))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", default="")
    ap.add_argument(
        "--judge",
        default=str(Path(__file__).parent / "models" / "lesion_judge.pt"),
        help="clean-image classifier (train-classifier --clean), trained apart from --classifier",
    )
    ap.add_argument("--model", default="")
    ap.add_argument("--n-test", type=int, default=512)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--scales", type=float, nargs="*", default=[1.0])
    ap.add_argument("--labels", type=int, nargs="+", default=[1, 0], help="requested classes")
    ap.add_argument("--seed", type=int, default=0, help="first sampling seed")
    ap.add_argument("--snr", type=float, default=0.0, help="Langevin corrector snr (0: none)")
    ap.add_argument("--ct-images", type=int, default=4)
    ap.add_argument("--ct-samples", type=int, default=2)
    ap.add_argument("--ct-scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-clip", dest="clip", action="store_false", help="raw prior")
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["accuracy", "samples", "unconditional", "ct"]
    )
    ap.add_argument("--name", default="classifier", help="results/NAME.{json,md,png}")
    ap.add_argument("--note", default="", help="a sentence shown under the report's title")
    ap.add_argument(
        "--merge", nargs="+", default=[], help="results names of sample runs to combine as --name"
    )
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.name, args.note)
        return
    torch.set_num_threads(args.threads)
    model_path = args.model or resolve_model("phantom64")  # the classifier's model
    model, model_cfg = load_model(model_path)
    model = data_range_prior(model, model_cfg, args.clip)  # as `invdiff solve` samples
    clf, clf_cfg = load_classifier(args.classifier or None)
    judge, _ = load_classifier(args.judge)
    registry = build_registry(make_plugin_manager())
    report = {
        "command": "python benchmarks/bench_classifier.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "machine": machine(args.threads),
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "classifier_trained_for_model_sha256": clf_cfg["model"]["sha256"],
        "note": args.note,
    }
    t0 = time.perf_counter()
    if "accuracy" not in args.skip:
        report["accuracy_vs_t"] = accuracy_vs_t(clf, judge, args.n_test)
        report["majority_rate"] = majority_rate(args.n_test)
    if "samples" not in args.skip:
        report["conditional_samples"], tiles = conditional_samples(
            model,
            registry,
            args.classifier,
            judge,
            args.n_samples,
            args.steps,
            args.scales,
            args.snr,
            args.seed,
            "unconditional" not in args.skip,
            args.labels,
        )
        report["samples_figure"] = f"{args.name}_samples.png"
        save_png(RESULTS / report["samples_figure"], grid(tiles, ncols=8), scale=2)
    if "ct" not in args.skip:
        report["ct_hypothesis"] = ct_hypothesis(
            model,
            registry,
            args.classifier,
            args.ct_images,
            args.ct_samples,
            args.ct_scales,
            args.name,
        )
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    write_results(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
