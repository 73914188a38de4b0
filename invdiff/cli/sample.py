"""`invdiff sample`: unconditional or class-conditional samples from a score model, drawn by a
PC or probability-flow ODE sampler through ``invdiff.core.reconstruct.sample_prior`` (the batches
and seed scheme of the one reconstruction core: sample k uses seed + k)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import typer

from invdiff.cli._checks import (
    check_image_size,
    check_memory,
    check_outputs,
    check_sampling,
    require,
    within,
)
from invdiff.cli._common import (
    BatchSize,
    Clip,
    Device,
    Force,
    Progress,
    Threads,
    deprecated,
    image_shape,
    load_registry,
    resolve_device,
    set_threads,
    user_errors,
)
from invdiff.errors import InvdiffError

SAMPLERS = ("pc", "ode-heun", "ode-rk45")


@user_errors
def sample(
    n: int = typer.Option(16, "--samples", help="Number of samples."),
    n_old: int | None = typer.Option(None, "--n", hidden=True, help="Deprecated: --samples."),
    out: Path = typer.Option(Path("samples.h5"), "--out", "-o", help="HDF5 file for /samples."),
    png: Path | None = typer.Option(None, "--png", help="Also write a PNG grid here."),
    model: str | None = typer.Option(
        None, "--model", help="Shipped model name (e.g. phantom64) or checkpoint path."
    ),
    sampler: str = typer.Option("pc", help="pc, ode-heun or ode-rk45."),
    predictor: str = typer.Option(
        "reverse_diffusion", help="euler_maruyama, reverse_diffusion, ancestral or none (pc only)."
    ),
    corrector: str = typer.Option("langevin", help="langevin or none (pc only)."),
    snr: float = typer.Option(0.16, help="Langevin signal-to-noise ratio."),
    corrector_steps: int = typer.Option(1, help="Langevin steps per time step."),
    steps: int = typer.Option(100, help="Time steps (pc, ode-heun)."),
    rtol: float = typer.Option(1e-4, help="ode-rk45 relative and absolute tolerance."),
    denoise: bool = typer.Option(True, help="Finish with a Tweedie denoising step."),
    clip: Clip = True,
    label: int | None = typer.Option(
        None, "--label", help="Class-conditional: sample p(x | y = LABEL) by classifier guidance."
    ),
    scale: float = typer.Option(1.0, "--scale", help="Guidance scale s (with --label)."),
    classifier: Path | None = typer.Option(
        None, "--classifier", help="Classifier for --label; default: shipped lesion classifier."
    ),
    seed: int = typer.Option(0, help="Sample k uses seed + k."),
    batch_size: BatchSize = 16,
    device: Device = "auto",
    threads: Threads = 0,
    force: Force = False,
    progress: Progress = True,
    image_size: int | None = typer.Option(
        None, "--image-size", help="Side of the samples (any-size models; default 64)."
    ),
) -> None:
    """Draw samples with a PC sampler or the probability-flow ODE.

    With --label c, the prior score is guided by a time-conditional classifier (Song et al. 2021,
    Sec. 5): grad log p_t(x) + s * grad log p_t(c | x_t), e.g. --label 1 --scale 70 --steps 500
    --corrector none for phantoms with a lesion (see README, class hypotheses).
    """
    import torch

    from invdiff import __version__
    from invdiff.atomic import atomic_paths
    from invdiff.core import samplers
    from invdiff.core.checkpoint import file_sha256, load_model, resolve_model
    from invdiff.core.reconstruct import sample_prior
    from invdiff.core.score import data_range_prior
    from invdiff.images import grid, save_png
    from invdiff.io import write_datasets
    from invdiff.training.classifier import default_classifier_path

    if n_old is not None:
        n = n_old
    check_sampling(steps=steps, seed=seed, snr=snr, samples=n, batch_size=batch_size)
    check_image_size(image_size, 4096)
    require(
        {
            "--corrector-steps": within(corrector_steps, 1, 1000, "an integer"),
            "--rtol": (0 < rtol < 1, "a number in (0, 1)"),
            "--label": (label is None or label >= 0, "a class >= 0"),
            "--scale": within(scale, 0, 1e6),
        }
    )
    if sampler not in SAMPLERS:
        raise InvdiffError(f"unknown --sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if predictor not in samplers.PREDICTORS:
        raise InvdiffError(
            f"unknown --predictor {predictor!r}; use {', '.join(samplers.PREDICTORS)}"
        )
    try:
        corr = samplers.make_corrector(corrector, snr=snr, n_steps=corrector_steps)
    except ValueError as err:
        raise InvdiffError(f"{err} (--corrector)") from None
    model_path = resolve_model(model)
    used = [model_path] if label is None else [model_path, classifier or default_classifier_path()]
    check_outputs({"--out": out, "--png": png}, used, force)
    set_threads(threads)
    dev = resolve_device(device)
    score_model, config = load_model(model_path, dev)
    prior = data_range_prior(score_model, config, clip)
    image = config["image"]
    if not image.get("any_size") and image_size not in (None, image["size"]):
        side = image["size"]
        raise InvdiffError(f"--image-size: this model makes {side} x {side} images only")
    shape = image_shape(image, image_size or 64)  # any-size models: 64 x 64 unless told
    what = f"--samples {n} of {' x '.join(map(str, shape))}"
    check_memory(n * math.prod(shape), what, "draw them in several runs (--seed)")
    guidance = {}  # what records a class-conditional run in the output's attributes
    if label is not None:
        prior, guidance = class_guided(prior, score_model.sde, shape, label, scale, classifier, dev)
    total = steps if sampler != "ode-rk45" else None

    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        task = bar.add_task("sampling", total=(total or 1) * -(-n // batch_size))
        kw = {"like": torch.empty(0, device=dev), "denoise": denoise}
        kw["callback"] = lambda _: bar.advance(task)
        if sampler == "pc":
            predictor_step = samplers.PREDICTORS[predictor]
            run = functools.partial(
                samplers.pc_sample, predictor=predictor_step, corrector=corr, steps=steps, **kw
            )
        elif sampler == "ode-heun":
            run = functools.partial(samplers.heun_ode_sample, steps=steps, **kw)
        else:
            run = functools.partial(samplers.rk45_ode_sample, rtol=rtol, atol=rtol, **kw)
        rec = sample_prior(
            lambda gens: run(prior, score_model.sde, shape, gens),
            shape,
            samples=n,
            seed=seed,
            batch_size=batch_size,
            device=dev,
        )
    if not torch.isfinite(rec.samples).all():
        raise InvdiffError(
            f"{sampler} produced NaN/Inf; raise --steps or check --model {model_path}"
        )
    x, nfe, wall = rec.samples[0].numpy(), rec.nfe_total, rec.seconds
    attrs = guidance | {
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "sampler": sampler,
        "clip_denoised": clip,
        "predictor": predictor if sampler == "pc" else "",
        "corrector": corrector if sampler == "pc" else "",
        "snr": snr,
        "steps": steps,
        "seed": seed,
        "nfe": nfe,
        "wall_time_s": wall,
        "device": dev,
        "invdiff_version": __version__,
    }
    with atomic_paths(out, png) as (out_tmp, png_tmp):  # both files or neither
        write_datasets(out_tmp, {"samples": x}, attrs, force=True)
        if png_tmp is not None:
            save_png(png_tmp, grid(x), scale=2)
    typer.echo(f"wrote {n} samples to {out} ({nfe} network evaluations, {wall:.1f} s on {dev})")
    if n_old is not None:  # after the work, so that an error stays the only line
        deprecated("--n", "--samples")


def class_guided(prior, sde, shape, label: int, scale: float, classifier: Path | None, device):
    """Return the prior guided towards class ``label`` by the ``classifier`` operator, and the
    attributes that record it."""
    import torch

    from invdiff.core.checkpoint import file_sha256
    from invdiff.guidance import ClassifierGuidedScore, Measurement
    from invdiff.training.classifier import default_classifier_path

    entry = load_registry().lookup("classifier")
    op = entry.create(shape, label=label, scale=scale, classifier=str(classifier or "")).to(device)
    try:
        guided = ClassifierGuidedScore(prior, sde, [Measurement(op, torch.tensor([label]))])
    except ValueError as err:
        raise InvdiffError(str(err)) from None
    path = classifier or default_classifier_path()
    attrs = {"label": label, "scale": scale, "classifier": str(path)}
    return guided, attrs | {"classifier_sha256": file_sha256(path)}
