"""`invdiff sample`: unconditional or class-conditional samples from a score model."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

from invdiff.cli._common import (
    check_sampling,
    clip_option,
    deprecated,
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
    clip: bool = clip_option(),
    label: int | None = typer.Option(
        None, "--label", help="Class-conditional: sample p(x | y = LABEL) by classifier guidance."
    ),
    scale: float = typer.Option(1.0, "--scale", help="Guidance scale s (with --label)."),
    classifier: Path | None = typer.Option(
        None, "--classifier", help="Classifier for --label; default: shipped lesion classifier."
    ),
    seed: int = typer.Option(0, help="Sample k uses seed + k."),
    batch_size: int = typer.Option(16, help="Samples per network call."),
    device: str = typer.Option("auto", help="auto, cpu, cuda ..."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Side of the samples (any-size models; default 64)."
    ),
) -> None:
    """Draw samples with a PC sampler or the probability-flow ODE.

    With --label c, the prior score is guided by a time-conditional classifier (Song et al. 2021,
    Sec. 5): grad log p_t(x) + s * grad log p_t(c | x_t), e.g. --label 1 --scale 70 --steps 500
    --corrector none for phantoms with a lesion (see README, class hypotheses).
    """
    import numpy as np
    import torch

    from invdiff import __version__, samplers
    from invdiff.checkpoint import file_sha256, load_model, resolve_model
    from invdiff.images import grid, save_png
    from invdiff.io import write_datasets
    from invdiff.score import data_range_prior

    if n_old is not None:
        deprecated("--n", "--samples")
        n = n_old
    if n < 1 or batch_size < 1 or steps < 1:
        raise InvdiffError("--samples, --batch-size and --steps must be positive")
    check_sampling(steps=steps, seed=seed, snr=snr)
    if corrector_steps < 1 or not (rtol > 0 and math.isfinite(rtol)):
        raise InvdiffError("--corrector-steps must be >= 1 and --rtol a positive number")
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
    for path in (out, png):
        if path is not None and path.exists() and not force:
            raise InvdiffError(
                f"{path} exists; pass --force to overwrite it or choose another name"
            )
    set_threads(threads)
    dev = resolve_device(device)
    model_path = resolve_model(model)
    score_model, config = load_model(model_path, dev)
    prior = data_range_prior(score_model, config, clip)
    image = config["image"]
    side = image["size"]
    if image.get("any_size"):
        side = image_size or 64
    elif image_size not in (None, side):
        raise InvdiffError(f"--image-size: this model makes {side} x {side} images only")
    if not 8 <= side <= 4096:
        raise InvdiffError(f"--image-size must lie in [8, 4096], got {side}")
    shape = (image["channels"], side, side)
    guidance = {}  # what records a class-conditional run in the output's attributes
    if label is not None:
        prior, guidance = class_guided(prior, score_model.sde, shape, label, scale, classifier, dev)
    like = torch.empty(0, device=dev)
    total = steps if sampler != "ode-rk45" else None

    from rich.progress import Progress

    chunks, nfe, t0 = [], 0, time.perf_counter()
    with Progress(disable=not progress) as bar:
        task = bar.add_task("sampling", total=(total or 1) * -(-n // batch_size))
        for start in range(0, n, batch_size):
            seeds = range(seed + start, seed + min(n, start + batch_size))
            gens = samplers.generators_for(seeds, dev)
            common = {"like": like, "denoise": denoise, "callback": lambda _: bar.advance(task)}
            if sampler == "pc":
                res = samplers.pc_sample(
                    prior,
                    score_model.sde,
                    shape,
                    gens,
                    predictor=samplers.PREDICTORS[predictor],
                    corrector=corr,
                    steps=steps,
                    **common,
                )
            elif sampler == "ode-heun":
                res = samplers.heun_ode_sample(
                    prior, score_model.sde, shape, gens, steps=steps, **common
                )
            else:
                res = samplers.rk45_ode_sample(
                    prior, score_model.sde, shape, gens, rtol=rtol, atol=rtol, **common
                )
            chunks.append(res.x.float().cpu().numpy())
            nfe += res.nfe
    wall = time.perf_counter() - t0
    x = np.concatenate(chunks)
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
    write_datasets(out, {"samples": x}, attrs, force=True)
    if png is not None:
        save_png(png, grid(x), scale=2)
    typer.echo(f"wrote {n} samples to {out} ({nfe} network evaluations, {wall:.1f} s on {dev})")


def class_guided(prior, sde, shape, label: int, scale: float, classifier: Path | None, device):
    """Return the prior guided towards class ``label`` by the ``classifier`` operator, and the
    attributes that record it."""
    import torch

    from invdiff.checkpoint import file_sha256
    from invdiff.classifier import default_classifier_path
    from invdiff.guidance import ClassifierGuidedScore, Measurement
    from invdiff.plugins import build_registry, make_plugin_manager

    entry = build_registry(make_plugin_manager())["classifier"]
    op = entry.create(shape, label=label, scale=scale, classifier=str(classifier or "")).to(device)
    try:
        guided = ClassifierGuidedScore(prior, sde, [Measurement(op, torch.tensor([label]))])
    except ValueError as err:
        raise InvdiffError(str(err)) from None
    path = classifier or default_classifier_path()
    attrs = {"label": label, "scale": scale, "classifier": str(path)}
    return guided, attrs | {"classifier_sha256": file_sha256(path)}
