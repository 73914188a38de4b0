"""`invdiff solve`: posterior sampling for measurements in HDF5 files.

``--operator NAME`` starts an operator and the options after it (``--views 23``) set its
parameters until the next ``--operator``; every other word that is not an option is an input.

This module owns the command: its options and checks, the output paths, and one job per input
(read, sample through ``invdiff.core.reconstruct``, write). The operator-option mini-language is
``cli/_options.py``, turning a file into operators and measurements ``cli/_measurements.py``, the
output layout ``invdiff.io.SolveOutput`` and the PNG preview ``invdiff.images.save_preview``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import typer

from invdiff import torchrun
from invdiff.cli._checks import (
    check_image_size,
    check_memory,
    check_outputs,
    check_sampling,
    knob_flag,
)
from invdiff.cli._common import (
    BatchSize,
    Clip,
    Command,
    Device,
    Force,
    Progress,
    Threads,
    deprecated,
    load_registry,
    resolve_device,
    set_threads,
    user_errors,
)
from invdiff.cli._options import operator_help, parse_extra
from invdiff.errors import InvdiffError
from invdiff.guidance import DEFAULT_STRATEGY

USAGE = "[OPTIONS] --operator NAME [ITS OPTIONS]... INPUT.h5..."


class SolveCommand(Command):
    """solve's --help ends with every registered operator and its options (read when asked, so
    that importing the command line loads no plugin)."""

    def format_help(self, ctx, formatter):
        if self.epilog is None:
            self.epilog = operator_help(load_registry())
        return super().format_help(ctx, formatter)


@user_errors
def solve(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output HDF5 (one input) or folder (several); default INPUT_invdiff.h5.",
    ),
    png: Path | None = typer.Option(
        None,
        "--png",
        help="Preview PNG, one row per slice (the first 4), one titled column each: truth (when "
        "known), the baseline, the reconstruction (posterior mean), the std (with a colour bar) "
        "and |reconstruction - truth| (when the truth is known).",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Shipped model name (e.g. phantom64) or checkpoint path."
    ),
    strategy: str = typer.Option(
        DEFAULT_STRATEGY,
        "--strategy",
        help="projection, replacement, noisy_likelihood, moment, dps or diffpir.",
    ),
    sampler_old: str | None = typer.Option(
        None, "--sampler", hidden=True, help="Deprecated spelling of --strategy."
    ),
    steps: int | None = typer.Option(None, help="Time steps (default: the strategy's)."),
    snr: float | None = typer.Option(None, help="Langevin corrector snr (0: no corrector)."),
    lam: float | None = typer.Option(None, "--lambda", help="Projection / DiffPIR weight."),
    zeta: float | None = typer.Option(None, help="DPS / DiffPIR step weight."),
    cg_iters: int | None = typer.Option(
        None, "--cg-iters", help="Conjugate-gradient iterations per step (moment, diffpir)."
    ),
    sigma_start: float | None = typer.Option(
        None,
        "--sigma-start",
        help="DiffPIR: start at this noise level from the classical baseline (0: from noise; "
        "default: the operator's own level).",
    ),
    tv: float | None = typer.Option(
        None,
        "--tv",
        help="DiffPIR: add total variation to each data step, weighted like a TV denoiser at "
        "TV x the step's noise level (default 0: none; 0.5-1 for piecewise-constant objects).",
    ),
    kappa: float | None = typer.Option(
        None,
        "--kappa",
        help="DiffPIR: denoise at kappa x each step's noise level, >= 1, so that what earlier "
        "steps got wrong is removed with the noise (default: the operator's own).",
    ),
    relax: float | None = typer.Option(
        None,
        "--relax",
        help="DiffPIR: move each estimate RELAX times the way to the data's minimiser, in (0, 2] "
        "(over-relaxation; default: the operator's own).",
    ),
    predictor: str | None = typer.Option(None, help="PC predictor (PC-based strategies)."),
    samples: int = typer.Option(4, "--samples", help="Posterior samples per slice (std needs 2)."),
    simulate: bool = typer.Option(False, "--simulate", help="Measure /image with the operators."),
    noise: float | None = typer.Option(
        None, help="--simulate: noise std (default: each operator's --noise-std)."
    ),
    seed: int = typer.Option(0, help="Sample j of slice i uses seed + i * samples + j."),
    batch_size: BatchSize = 16,
    device: Device = "auto",
    threads: Threads = 0,
    force: Force = False,
    progress: Progress = True,
    clip: Clip = True,
    image_size: int | None = typer.Option(
        None, "--image-size", help="Image side when the input does not show it (any-size models)."
    ),
) -> None:
    """Reconstruct images from measurements with the diffusion prior (Bayes' rule for scores).

    Give operators as --operator NAME followed by its options (listed below and by `invdiff
    operators list`), e.g. --operator ct_sparse --views 23, then one or more input HDF5 files
    (/measurement, or /image with --simulate; the README lists the layouts).
    """
    from invdiff.core.checkpoint import load_model, resolve_model

    if sampler_old is not None:
        strategy = sampler_old
    registry = load_registry()
    specs, inputs = parse_extra(list(ctx.args), registry)
    if not inputs:
        raise InvdiffError("no input file; usage: invdiff solve --operator NAME [options] IN.h5")
    check_sampling(
        steps=steps,
        seed=seed,
        snr=snr,
        lam=lam,
        zeta=zeta,
        samples=samples,
        batch_size=batch_size,
        cg_iters=cg_iters,
        noise=noise,
        sigma_start=sigma_start,
        tv=tv,
        kappa=kappa,
        relax=relax,
    )
    check_image_size(image_size, 8192)
    given = {"steps": steps, "snr": snr, "lam": lam, "zeta": zeta, "cg_iters": cg_iters}
    given.update(sigma_start=sigma_start, tv=tv, kappa=kappa, relax=relax)
    options = _knobs(strategy, {**given, "predictor": predictor})
    model_path = resolve_model(model)
    rank, world, local_rank = torchrun.ranks()
    outputs = _outputs(inputs, out, png, force, model_path, rank, world)
    set_threads(threads)
    dev = resolve_device(device)
    if world > 1 and dev.startswith("cuda"):
        dev = f"cuda:{local_rank}"
    score_model, config = load_model(model_path, dev)
    job = SolveJob(registry, specs, score_model, config, model_path, dev, clip, image_size)
    mine = torchrun.share(list(zip(inputs, outputs, strict=True)), rank, world)
    if len(mine) > 1:  # every input is read and checked before the first is sampled
        for src, _ in mine:
            job.prepare(src, samples, simulate, noise, seed)
    for src, dst in mine:
        job.run(
            src, dst, png, strategy, options, samples, simulate, noise, seed, batch_size, progress
        )
    if sampler_old is not None:  # after the work, so that an error stays the only line
        deprecated("--sampler", "--strategy")


def _knobs(strategy: str, given: dict) -> dict:
    """Return the strategy's knobs that were given, refusing an unknown strategy or a knob it
    does not take (errors name options: --lambda, --cg-iters)."""
    from invdiff.guidance import STRATEGIES, strategy_options

    if strategy not in STRATEGIES:
        raise InvdiffError(f"unknown --strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    accepted = strategy_options(strategy)
    options = {k: v for k, v in given.items() if v is not None}
    for k in options:
        if k not in accepted:
            takes = ", ".join(knob_flag(a) for a in accepted if a in given)
            raise InvdiffError(f"--strategy {strategy} takes no {knob_flag(k)}; it takes {takes}")
    if strategy == "projection" and options.get("lam", 0) > 1:
        raise InvdiffError(
            "--lambda must lie in (0, 1] for --strategy projection (how far each step moves "
            "towards the measurement)"
        )
    return options


def _flags(text: str) -> str:
    """Return a core error message with the knobs solve takes named as options (lam: --lambda,
    cg_iters: --cg-iters)."""
    return re.sub(r"\b(lam|cg_iters)\b", lambda m: knob_flag(m[0]), text)


def _outputs(
    inputs: list[Path],
    out: Path | None,
    png: Path | None,
    force: bool,
    model: Path,
    rank: int = 0,
    world: int = 1,
) -> list[Path]:
    """Return one output path per input after checking every input and output path (outputs:
    distinct, not an input or the model, in existing folders, overwritten only with --force).

    Under torchrun each process checks only the outputs it writes (:func:`torchrun.share`):
    another process may already have written its own."""
    for src in inputs:
        if src.is_dir():
            raise InvdiffError(f"input {src} is a folder; give the HDF5 files in it")
        if not src.is_file():
            raise InvdiffError(f"input {src} not found; check the path")
    if png is not None and len(inputs) > 1:
        raise InvdiffError("--png needs a single input file")
    if out is None:
        paths = [src.with_name(src.stem + "_invdiff.h5") for src in inputs]
    elif len(inputs) > 1 or out.is_dir():
        if not out.is_dir():
            raise InvdiffError(f"--out {out} must be an existing folder for several inputs")
        paths = [out / (src.stem + "_invdiff.h5") for src in inputs]
    else:
        paths = [out]
    writer: dict[Path, Path] = {}
    own = set(torchrun.share(range(len(paths)), rank, world))
    for k, (src, dst) in enumerate(zip(inputs, paths, strict=True)):
        first = writer.setdefault(dst.resolve(), src)
        if first is not src:
            raise InvdiffError(
                f"inputs {first} and {src} would both write {dst}; give each input once, with "
                "different file names, or solve them separately"
            )
        if k in own:
            check_outputs({"--out": dst, "--png": png}, [*inputs, model], force)
    return paths


class SolveJob:
    """Read one input, build its operators and measurements, sample, write the output."""

    def __init__(self, registry, specs, model, config, model_path, device, clip, image_size):
        from invdiff.core.score import data_range_prior

        self.registry, self.specs = registry, specs
        self.model, self.config, self.model_path, self.device = model, config, model_path, device
        self.clip, self.prior = clip, data_range_prior(model, config, clip)
        self.image_size = image_size  # --image-size, for any-size models

    def run(
        self, src, dst, png, strategy, options, samples, simulate, noise, seed, batch_size, progress
    ) -> None:
        from invdiff.atomic import atomic_paths
        from invdiff.images import save_preview

        data, ops, ys = self.prepare(src, samples, simulate, noise, seed)
        rec = self.sample(src, ops, ys, strategy, options, samples, seed, batch_size, progress)
        result = self.output(data, ops, ys, rec, strategy, options, simulate, seed)
        with atomic_paths(dst, png) as (dst_tmp, png_tmp):  # both files or neither
            result.write(dst_tmp)
            if png_tmp is not None:
                save_preview(
                    png_tmp,
                    result.reconstruction,
                    result.ground_truth,
                    result.baseline,
                    result.std,
                    baseline_name=result.attrs["baseline"],
                )
        message = f"wrote {dst}: {len(ys[0])} slice(s) x {samples} sample(s), {strategy}"
        if result.metrics:
            message += f"; PSNR {result.attrs['invdiff_psnr_mean']:.2f} dB"
            if result.baseline is not None:
                name, value = result.attrs["baseline"], result.attrs["baseline_psnr_mean"]
                message += f" (baseline {name} {value:.2f} dB)"
        typer.echo(f"{message}; {rec.seconds:.1f} s on {self.device}")

    def prepare(self, src, samples: int, simulate: bool, noise: float | None, seed: int):
        """Return one input's data, its operators [(spec, op)] and their measurements, checked
        (the file, the operators against it, the memory its samples take)."""
        from invdiff.io import read_solve_input

        data = read_solve_input(src)
        if not self.specs and data.operator is None:
            raise InvdiffError(
                f"{data.path} does not say how it was measured; pass --operator NAME"
            )
        ops, ys, shape = self.measured(data, simulate, noise, seed)
        check_memory(
            len(ys[0]) * samples * math.prod(shape),
            f"{len(ys[0])} slice(s) x {samples} sample(s) of {' x '.join(map(str, shape))}",
            "lower --samples or split the input file",
        )
        return data, ops, ys

    def measured(self, data, simulate: bool, noise: float | None, seed: int):
        """Return the operators [(spec, op)], their measurements and the image shape (C, H, W)
        of one input."""
        from invdiff.cli._measurements import (
            build_operators,
            check_images,
            data_shape,
            read_measurements,
        )

        shape = data_shape(self.config["image"], data, simulate, self.image_size)
        if data.ground_truth is not None:
            check_images(data.ground_truth, shape, "/ground_truth", data.path)
        ops = build_operators(self.registry, self.specs, data, shape, noise, self.device)
        return ops, read_measurements(data, ops, shape, simulate, seed, self.device), shape

    def sample(self, src, ops, ys, strategy, options, samples, seed, batch_size, progress):
        """Return the Reconstruction of one input, with a progress bar over its time steps."""
        import torch
        from rich.progress import Progress

        from invdiff.core.reconstruct import reconstruct
        from invdiff.guidance import strategy_options

        steps = options.get("steps", strategy_options(strategy)["steps"])
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        batches = -(-len(ys[0]) * samples // batch_size)
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"{strategy} {src.name}", total=steps * batches)
            try:
                rec = reconstruct(
                    self.prior,
                    self.model.sde,
                    [op for _, op in ops],
                    ys,
                    strategy=strategy,
                    options=options,
                    samples=samples,
                    seed=seed,
                    batch_size=batch_size,
                    device=self.device,
                    callback=lambda _: bar.advance(task),
                )
            except ValueError as err:
                raise InvdiffError(f"{strategy}: {_flags(str(err))}") from None
        if not torch.isfinite(rec.samples).all():
            raise InvdiffError(
                f"{strategy} produced NaN/Inf for {src}; lower --lambda/--zeta or raise --steps"
            )
        return rec

    def output(self, data, ops, ys, rec, strategy, options, simulate, seed):
        """Return the SolveOutput of one input: samples, baseline, metrics and provenance."""
        import torch

        from invdiff import __version__
        from invdiff.core.checkpoint import file_sha256
        from invdiff.core.reconstruct import SEED_SCHEME
        from invdiff.guidance import resolved_options
        from invdiff.io import SolveOutput

        n, k_samples = rec.samples.shape[:2]
        names = ["" if len(ops) == 1 else spec.name for spec, _ in ops]
        result = SolveOutput(
            rec.samples.numpy(),
            {name: y.cpu().numpy() for name, y in zip(names, ys, strict=True)},
            {},
            ground_truth=data.image if simulate else data.ground_truth,
        )
        first = [k for k, (_, op) in enumerate(ops) if not op.time_conditional]
        found = ops[first[0]][1].baseline(ys[first[0]]) if first else None
        baseline_name = "none"  # hypotheses only, or an operator without a classical method
        if found is not None and found[1].shape == result.reconstruction.shape:
            baseline_name, result.baseline = found[0], found[1].float().cpu().numpy()
        used = resolved_options(
            strategy, options, [op for _, op in ops], baseline=found is not None
        )
        wall = rec.seconds
        result.attrs = {
            "invdiff_version": __version__,
            "input": str(data.path),
            "input_format": data.format,
            "operators": json.dumps([{"name": s.name, **s.params} for s, _ in ops]),
            "strategy": strategy,
            "clip_denoised": self.clip,
            "strategy_options": json.dumps(used),
            "model": str(self.model_path),
            "model_sha256": file_sha256(self.model_path),
            "model_steps": int(self.config.get("training", {}).get("steps_done", -1)),
            "seed": seed,
            "seeds": SEED_SCHEME.replace("K", str(k_samples)),
            "samples_per_slice": k_samples,
            "simulated": simulate,
            "nfe_per_sample": rec.nfe_per_sample,
            "vjp_per_sample": rec.vjp_per_sample,
            "wall_time_s": wall,
            "wall_time_per_slice_s": wall / n,
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
            "baseline": baseline_name,
        }
        if self.device.startswith("cuda"):
            result.attrs["peak_gpu_memory_bytes"] = int(
                torch.cuda.max_memory_allocated(self.device)
            )
        truth = result.ground_truth
        if truth is not None:
            from invdiff.eval.metrics import SSIM_MIN_SIDE, psnr, ssim

            metrics = [("psnr", psnr), ("ssim", ssim)]
            if min(truth.shape[-2:]) < SSIM_MIN_SIDE:
                metrics = metrics[:1]  # too small for SSIM's window: PSNR only
            for name, est in (("invdiff", result.reconstruction), ("baseline", result.baseline)):
                if est is None:
                    continue
                for metric, fn in metrics:
                    result.metrics[f"{name}_{metric}"] = values = fn(est, truth)
                    result.attrs[f"{name}_{metric}_mean"] = float(values.mean())
        return result
