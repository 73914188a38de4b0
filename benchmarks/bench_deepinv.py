"""DeepInverse side by side (issue 17, item 1): invdiff's samplers against DeepInverse's.

One run, the same test images, the same prior and the same number of network evaluations (NFE):

- invdiff's ``diffpir`` (DiffPIR: Zhu, Zhang, Liang, Cao, Wen, Timofte, Van Gool, "Denoising
  Diffusion Models for Plug-and-Play Image Restoration", CVPR Workshops 2023) and ``dps``
  (DPS: Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior Sampling for General Noisy Inverse
  Problems", ICLR 2023) strategies, through ``invdiff.core.reconstruct`` as ``invdiff solve`` runs
  them;
- DeepInverse's own ``deepinv.sampling.DiffPIR`` and ``deepinv.sampling.DPS``, driven by the same
  invdiff prior seen as the denoiser DeepInverse expects (:class:`ScoreDenoiser`,
  D(x, sigma) = x + sigma^2 s(x, sigma)), each with DeepInverse's own defaults, on DeepInverse's
  physics (``deepinv.physics.Tomography``, ``deepinv.physics.MRI``) and, in the "cross" rows, on
  invdiff's operators wrapped as a ``deepinv.physics.LinearPhysics`` (the same y as invdiff's rows:
  the sampler is then the only difference); two more rows on DeepInverse's physics separate
  knobs from method: its DiffPIR with invdiff's lam and zeta, and its DPS with the guidance weight
  chosen on validation phantoms (its default weight 1 barely moves the samples towards the data).

Before any number, each task checks that DeepInverse's physics measures what ours does and times
both packages' operators (``benchmarks/deepinv_physics.py``; a mismatch stops the run unless
``--allow-mismatch``). ``benchmarks/deepinv_peer.py`` imports DeepInverse (with a stand-in for
torchvision if need be) and runs its samplers; ``benchmarks/deepinv_report.py`` writes the Markdown.

Data: the harness's phantom test set (``benchmarks/datasets.py``, 64 x 64, the first ``--images``
test images of each task), ``--samples`` posterior samples per image, scored as their mean with
``invdiff.eval.metrics`` psnr / ssim. Noiseless data, as in the harness: the DiffPIR rows assume the
harness's nominal likelihood noise (``harness_tasks.DIFFPIR_NOMINAL_STD``, in invdiff's
measurement units; DeepInverse's physics gets it divided by the checked scale).

    python benchmarks/bench_deepinv.py --threads 1 [--tasks ct23 mri8 --nfe 100 --images 4]

Writes results/deepinv.json and results/deepinv.md (``--name`` changes the stem; ``--render
results/deepinv.json`` rewrites the Markdown from the JSON without recomputing). Without
deepinv installed, invdiff's rows run and the DeepInverse rows say "deepinv not installed".
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: libgomp spin-waits otherwise

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # run by path: import benchmarks as a package, not its modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import common, datasets  # noqa: E402
from benchmarks.deepinv_peer import (  # noqa: E402
    NOT_INSTALLED,
    Run,
    ScoreDenoiser,
    check_denoiser,
    import_deepinv,
    run_deepinv_diffpir,
    run_deepinv_dps,
    tune_dps_weight,
)
from benchmarks.deepinv_physics import (  # noqa: E402
    DinvPhysics,
    deepinv_physics,
    operator_ms,
    physics_match,
    wrap_operator,
)
from benchmarks.deepinv_report import markdown  # noqa: E402
from benchmarks.harness_config import Config as HarnessConfig  # noqa: E402
from benchmarks.harness_report import jsonable  # noqa: E402
from benchmarks.harness_tasks import DIFFPIR_NOMINAL_STD, diffpir_op, load_data  # noqa: E402
from invdiff.core.reconstruct import reconstruct  # noqa: E402
from invdiff.core.score import data_range_prior  # noqa: E402
from invdiff.eval.metrics import psnr, ssim  # noqa: E402
from invdiff.guidance import resolved_options, strategy_options  # noqa: E402

#: Tasks of ``datasets.TASKS`` this benchmark knows how to give DeepInverse.
SUPPORTED = ("ct23", "ct8", "mri4", "mri8")


# One task ---------------------------------------------------------------------------------------


@dataclass
class Config:
    """Everything that decides the numbers; stored in the JSON."""

    tasks: list[str] = field(default_factory=lambda: ["ct23", "mri8"])
    nfe: list[int] = field(default_factory=lambda: [100])
    images: int = 4
    samples: int = 2
    seed: int = 0
    cross: bool = True  # also DeepInverse's samplers on invdiff's operators
    matched_diffpir: bool = True  # also deepinv's DiffPIR with invdiff's lam and zeta
    dps_weights: list[float] = field(default_factory=lambda: [0.3, 1.0, 3.0, 10.0, 30.0, 100.0])
    tune_images: int = 2  # validation images for deepinv DPS's weight
    allow_mismatch: bool = False
    clip: bool = True  # the clipped prior of `invdiff solve`
    threads: int = 1
    op_repeats: int = 10
    model: str | None = None
    name: str = "deepinv"
    size: int = datasets.SIZE
    n_val: int = datasets.N_VAL
    n_test: int = datasets.N_TEST
    data_dir: str = str(datasets.DATA)


def run_invdiff(prior, sde, op, y, strategy: str, nfe: int, samples: int, seed: int) -> Run:
    """invdiff's own strategy with its defaults, steps set so that NFE = ``nfe`` (steps + 1)."""
    options = {"steps": max(1, nfe - 1)}
    with torch.no_grad():
        rec = reconstruct(
            prior,
            sde,
            [op],
            [y],
            strategy=strategy,
            options=options,
            samples=samples,
            seed=seed,
            batch_size=len(y) * samples,
        )
    knobs = resolved_options(strategy, options, [op])
    if strategy == "diffpir":
        knobs["likelihood_noise_std"] = op.noise_std
    return Run(rec.samples, rec.nfe_per_sample, rec.seconds, knobs)


def scored(run: Run, truth: torch.Tensor) -> dict:
    """Return PSNR / SSIM of the posterior mean (per image, mean and std) and the costs."""
    mean = run.samples.mean(1).float()
    p, s = psnr(mean, truth), ssim(mean, truth)
    return {
        "psnr": float(np.mean(p)),
        "psnr_std": float(np.std(p)),
        "ssim": float(np.mean(s)),
        "ssim_std": float(np.std(s)),
        "per_image_psnr": [float(v) for v in p],
        "per_image_ssim": [float(v) for v in s],
        "nfe": int(run.nfe),
        "seconds_per_image": run.seconds / len(truth),
        "knobs": run.knobs,
    }


def run_task(cfg: Config, name: str, split: dict, prior, sde, dinv, dinv_note: str) -> dict:
    """Run every row of one task; return its physics check, operator times and rows."""
    test = split["test"]
    truth, y = test["truth"][: cfg.images], test["y"][: cfg.images]
    op = test["op"]
    op_diffpir = diffpir_op(test)
    noise = op_diffpir.noise_std
    n_batch = len(truth) * cfg.samples
    batch = truth.repeat_interleave(cfg.samples, 0)
    out = {"title": test["attrs"]["title"], "operator": op.name, "params": test["params"]}
    times = {"invdiff": operator_ms(op.forward, op.adjoint, batch, cfg.op_repeats)}
    rows = []
    for nfe in cfg.nfe:
        for strategy in ("diffpir", "dps"):
            solver = op_diffpir if strategy == "diffpir" else op
            run = run_invdiff(prior, sde, solver, y, strategy, nfe, cfg.samples, cfg.seed)
            rows.append(
                {
                    "package": "invdiff",
                    "sampler": strategy,
                    "physics": f"invdiff {op.name}",
                    "target_nfe": nfe,
                    **scored(run, truth),
                }
            )
            print(f"{name} invdiff {strategy} {nfe}: {rows[-1]['psnr']:.2f} dB", flush=True)
    if dinv is None:
        for nfe in cfg.nfe:
            for sampler in ("DiffPIR", "DPS"):
                rows.append(
                    {
                        "package": "deepinv",
                        "sampler": sampler,
                        "physics": "-",
                        "target_nfe": nfe,
                        "not_run": dinv_note,
                    }
                )
        return out | {"physics_check": dinv_note, "operator_ms": times, "rows": rows}
    check = physics_match(dinv, op, truth, cfg.allow_mismatch)
    out["physics_check"] = check
    den = ScoreDenoiser(prior, sde, op.image_shape[0])
    out["denoiser_check"] = check_denoiser(dinv, den, truth[:2], cfg.seed)
    scale = check.get("aligned_scale", check.get("scale", 1.0))
    own = deepinv_physics(dinv, op, noise / scale)
    times["deepinv"] = operator_ms(
        own.physics.A, own.physics.A_adjoint, own.embed(batch), cfg.op_repeats
    )
    with torch.no_grad():
        ys = {"own": own.physics.A(own.embed(truth)), "cross": y}
    cross = DinvPhysics(
        wrap_operator(dinv, op, noise),
        lambda v: v,
        lambda x: x,
        lambda x: x,
        f"invdiff {op.name} as LinearPhysics",
    )
    knobs = strategy_options("diffpir")
    matched = {"lambda_": 2 * knobs["lam"], "zeta": knobs["zeta"]}
    out["dps_tuning"] = {}
    for nfe in cfg.nfe:
        jobs = [("DiffPIR", "defaults", "own", {}), ("DPS", "defaults", "own", {})]
        if cfg.cross:
            jobs += [("DiffPIR", "defaults", "cross", {}), ("DPS", "defaults", "cross", {})]
        if cfg.matched_diffpir:
            variant = f"invdiff's lam {knobs['lam']:g} and zeta {knobs['zeta']:g}"
            jobs.append(("DiffPIR", variant, "own", matched))
        if cfg.dps_weights:
            val = split["val"]["truth"][: cfg.tune_images]
            print(f"{name}: tuning deepinv DPS's weight at {nfe} NFE", flush=True)
            tuning = tune_dps_weight(dinv, den, own, val, nfe, cfg.seed, cfg.dps_weights)
            out["dps_tuning"][str(nfe)] = tuning
            plural = "s" if len(val) != 1 else ""
            variant = f"weight {tuning['best']:g}, tuned on {len(val)} validation image{plural}"
            jobs.append(("DPS", variant, "own", {"weight": tuning["best"]}))
        for sampler, variant, kind, extra in jobs:
            setup = own if kind == "own" else cross
            shape = setup.embed(truth).shape[1:]
            args = (dinv, den, setup.physics, setup.real, ys[kind])
            if sampler == "DiffPIR":
                run = run_deepinv_diffpir(*args, nfe, cfg.samples, cfg.seed, **extra)
            else:
                run = run_deepinv_dps(*args, shape, nfe, cfg.samples, cfg.seed, **extra)
            rows.append(
                {
                    "package": "deepinv",
                    "sampler": sampler,
                    "variant": variant,
                    "physics": setup.label,
                    "physics_kind": kind,
                    "target_nfe": nfe,
                    **scored(run, truth),
                }
            )
            r = rows[-1]
            print(
                f"{name} deepinv {sampler} ({variant}, {kind}) {nfe}: {r['psnr']:.2f} dB",
                flush=True,
            )
    out |= {"operator_ms": times, "operator_batch": n_batch, "rows": rows}
    return out


# One run ----------------------------------------------------------------------------------------


def source_state() -> dict:
    """Return the git commit of the working tree and its modified files under invdiff/ and
    operators/ (what the invdiff rows ran), or {} outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "invdiff", "operators"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit, "modified": [line[3:] for line in status.splitlines() if line]}


def run(
    cfg: Config,
    model=None,
    config: dict | None = None,
    dinv=None,
    dinv_note: str = NOT_INSTALLED,
    command: str = "",
    model_info: dict | None = None,
    results: Path | None = None,
) -> dict:
    """Run every task of cfg, write NAME.json and NAME.md into ``results`` (default
    ``benchmarks/results``); return the report (plain JSON values)."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    unknown = sorted(set(cfg.tasks) - set(SUPPORTED))
    if unknown:
        raise ValueError(f"tasks {unknown} not supported; choose from {SUPPORTED}")
    if model is None:
        from invdiff.core.checkpoint import file_sha256, load_model, resolve_model

        path = resolve_model(cfg.model)
        model, config = load_model(path)
        model_info = {
            "name": cfg.model or path.stem,
            "sha256": file_sha256(path),
            "training_steps": config.get("training", {}).get("steps_done"),
        }
    prior = data_range_prior(model, config or {}, cfg.clip)
    hcfg = HarnessConfig(
        tasks=list(cfg.tasks),
        size=cfg.size,
        n_val=cfg.n_val,
        n_test=cfg.n_test,
        data_dir=cfg.data_dir,
    )
    data, checksums = load_data(hcfg)
    tasks = {}
    for name in cfg.tasks:
        tasks[name] = run_task(cfg, name, data[name], prior, model.sde, dinv, dinv_note)
        if dinv is not None:
            tasks[name]["deepinv_label"] = next(
                (r["physics"] for r in tasks[name]["rows"] if r.get("physics_kind") == "own"), ""
            )
    report = {
        "config": asdict(cfg),
        "run": {
            "command": command,
            "wall_seconds": time.perf_counter() - start,
            "machine": common.machine(cfg.threads),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "deepinv": dinv_note,
            "model": model_info or {"name": "in-memory", "sha256": "-", "training_steps": None},
            "data": checksums,
            "invdiff_source": source_state(),
        },
        "defaults": {s: strategy_options(s) for s in ("diffpir", "dps")},
        "nominal_noise_std": DIFFPIR_NOMINAL_STD,
        "tasks": tasks,
    }
    clean = jsonable(report)
    common.write_results(cfg.name, clean, markdown(clean), results or common.RESULTS)
    return clean


def parse(argv: list[str] | None = None) -> tuple[Config, str, bool, Path | None]:
    """Return the Config, the command that reproduces it, --no-deepinv and --render."""
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=SUPPORTED, default=d.tasks)
    p.add_argument("--nfe", nargs="+", type=int, default=d.nfe)
    p.add_argument("--images", type=int, default=d.images, help="test images per task")
    p.add_argument("--samples", type=int, default=d.samples, help="posterior samples per image")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--model", default=None, help="model name or file (default: the shipped one)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--name", default=d.name, help="results stem: NAME.json, NAME.md")
    p.add_argument("--no-cross", dest="cross", action="store_false", help="skip the cross rows")
    p.add_argument(
        "--no-matched",
        dest="matched_diffpir",
        action="store_false",
        help="skip deepinv DiffPIR with invdiff's lam and zeta",
    )
    p.add_argument(
        "--dps-weights",
        nargs="*",
        type=float,
        default=d.dps_weights,
        help="deepinv DPS weights tried on validation images (none: no tuned row)",
    )
    p.add_argument("--tune-images", type=int, default=d.tune_images)
    p.add_argument("--no-clip", dest="clip", action="store_false", help="raw prior, no clip")
    p.add_argument("--allow-mismatch", action="store_true", help="go on if the physics differ")
    p.add_argument("--no-deepinv", action="store_true", help="invdiff rows only")
    p.add_argument("--render", type=Path, help="only rewrite the Markdown of this JSON report")
    args = p.parse_args(argv)
    cfg = Config(
        **{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__},
    )
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/bench_deepinv.py", *argv])
    return cfg, command, args.no_deepinv, args.render


def main() -> None:
    cfg, command, no_deepinv, render = parse()
    if render is not None:
        render.with_suffix(".md").write_text(markdown(json.loads(render.read_text())))
        print(f"wrote {render.with_suffix('.md')}")
        return
    torch.set_num_threads(cfg.threads)
    dinv, note = (None, "deepinv not used (--no-deepinv)") if no_deepinv else import_deepinv()
    print(note, flush=True)
    run(cfg, dinv=dinv, dinv_note=note, command=command)


if __name__ == "__main__":
    main()
