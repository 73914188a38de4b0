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

PSNR: data_range 1 on images clipped to [0, 1]; SSIM: ``invdiff.eval.metrics.SSIM_CONVENTION``.
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

This module is the entry point (the command line and one run from data to results files); the
concerns live beside it: ``harness_config`` (settings), ``harness_tasks`` (data, baselines,
sampling, sweep), ``harness_verdict`` (targets, limits) and ``harness_report`` (figures,
Markdown).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks import common, datasets  # noqa: E402
from benchmarks.harness_config import Config, tiny_config, tiny_model  # noqa: E402
from benchmarks.harness_report import figures, jsonable, markdown  # noqa: E402
from benchmarks.harness_tasks import load_data, run_sweep, run_task  # noqa: E402
from benchmarks.harness_verdict import targets  # noqa: E402

#: Where the DeepInverse comparison lives (its own run: same prior, images and NFE).
DEEPINV = "not in this run: see benchmarks/bench_deepinv.py (same prior, images and NFE)"


def run(
    cfg: Config,
    model=None,
    model_info: dict | None = None,
    command: str = "",
    results: Path = common.RESULTS,
) -> dict:
    """Run the whole harness for cfg and write results into the folder ``results``; return the
    report (with images)."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    if model is None:
        from invdiff.core.checkpoint import default_model_path, file_sha256, load_model

        path = Path(cfg.model) if cfg.model else default_model_path()
        model, mconf = load_model(path, cfg.device)
        model_info = {
            "path": str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path),
            "sha256": file_sha256(path),
            "training_steps": mconf.get("training", {}).get("steps_done"),
        }
    from invdiff.core.score import data_range_prior

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
    results.mkdir(parents=True, exist_ok=True)
    written = figures(results, cfg.name, tasks, sweep)
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
            "figures": written,
            "deepinv": DEEPINV,
        },
        "targets": targets(tasks),
        "tasks": tasks,
        "sweep": sweep,
    }
    report["run"]["wall_seconds"] = time.perf_counter() - start
    clean = jsonable(report)
    common.write_results(cfg.name, clean, markdown(clean), results)
    return report


def parse(argv: list[str] | None = None) -> tuple[Config, str, Path | None, Path]:
    """Return the Config from the command line, the command that reproduces it, --render and
    the results folder."""
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
    p.add_argument(
        "--model", help="model file (default: the default model, invdiff/models/general.pt)"
    )
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results)")
    p.add_argument("--render", type=Path, help="only rewrite the Markdown of this JSON report")
    args = p.parse_args(argv)
    cfg = tiny_config() if args.tiny else d
    if args.out is None and args.tiny:
        args.out = Path(cfg.data_dir) / "results"
    for key, value in vars(args).items():
        if key not in ("tiny", "out", "render") and value is not None:
            setattr(cfg, key, value)
    if not args.tiny and cfg.n_test != datasets.N_TEST:
        cfg.data_dir = str(Path(cfg.data_dir) / f"n{cfg.n_test}")
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/harness.py", *argv])
    return cfg, command, args.render, args.out or common.RESULTS


def main() -> None:
    cfg, command, render, results = parse()
    if render is not None:
        render.with_suffix(".md").write_text(markdown(json.loads(render.read_text())))
        print(f"wrote {render.with_suffix('.md')}")
        return
    model = info = None
    if cfg.name == "harness_tiny":
        model, _ = tiny_model(cfg.size)
    run(cfg, model, info, command, results)


if __name__ == "__main__":
    main()
