"""`invdiff train`: denoising score matching on an HDF5 image set."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from invdiff import torchrun
from invdiff.cli._checks import (
    check_net,
    check_network_memory,
    check_state_output,
    check_training,
    parse_ints,
    require,
    within,
)
from invdiff.cli._common import (
    BatchSize,
    Device,
    Force,
    Progress,
    Threads,
    resolve_device,
    seeded_build,
    set_threads,
    user_errors,
)
from invdiff.errors import InvdiffError


@user_errors
def train(
    ctx: typer.Context,
    data: list[Path] = typer.Argument(
        ..., help="HDF5 files with /images (N x C x H x W in [0, 1]), all of one image size."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Model file to write (state goes to OUT.train)."
    ),
    sde: str = typer.Option("ve", help="ve, vp or subvp."),
    sigma_max: float = typer.Option(0.0, help="VE sigma_max; 0 = largest pairwise data distance."),
    sigma_min: float = typer.Option(0.01, help="VE sigma_min."),
    precond: str = typer.Option(
        "eps", help="Network output: 'eps' (noise, sigma^2 weighting) or 'edm' (Karras 2022)."
    ),
    noise_dist: str = typer.Option(
        "uniform", help="Training noise levels: 'uniform' in t or 'lognormal' in sigma."
    ),
    p_mean: float = typer.Option(-1.2, help="lognormal: mean of log sigma."),
    p_std: float = typer.Option(1.2, help="lognormal: std of log sigma."),
    crop: int = typer.Option(0, help="Train on random crops of this side (0: whole images)."),
    zoom_max: float = typer.Option(4.0, help="Crops: largest window / crop side (zoom-out)."),
    norm: bool = typer.Option(True, "--norm/--no-norm", help="GroupNorm in the UNet blocks."),
    mid_attention: bool = typer.Option(
        True, "--mid-attention/--no-mid-attention", help="Self-attention in the UNet middle."
    ),
    steps: int = typer.Option(10_000, help="Optimiser steps."),
    batch_size: BatchSize = 16,
    lr: float = typer.Option(2e-4, help="Adam learning rate."),
    warmup: int = typer.Option(500, help="Linear warm-up steps."),
    lr_decay_start: int = typer.Option(
        0, help="Step where the cosine learning-rate anneal starts."
    ),
    lr_decay_steps: int = typer.Option(0, help="Length of the anneal in steps (0: constant rate)."),
    lr_final: float = typer.Option(0.1, help="Learning rate at the end of the anneal / --lr."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the weights."),
    ckpt_every: int = typer.Option(500, help="Checkpoint every this many steps."),
    base: int = typer.Option(24, help="UNet channels at full resolution."),
    mult: str = typer.Option("1,2,3,4", help="UNet channel multipliers per level."),
    res_blocks: int = typer.Option(1, help="Residual blocks per level."),
    attn: str = typer.Option("", help="Feature-map sizes with attention, e.g. '16'."),
    seed: int = typer.Option(0, help="Seed of initialisation, batches and noise."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.train if present."),
    init: str = typer.Option(
        "",
        "--init",
        help="Start from this model's weights (a shipped name such as 'general', or a file): "
        "fine-tuning on other data or crops; its network, SDE and preconditioning are used "
        "unless given.",
    ),
    force: Force = False,
    device: Device = "auto",
    threads: Threads = 0,
    progress: Progress = True,
    weights: str = typer.Option("ema", help="Model file holds the 'ema' or the 'raw' weights."),
) -> None:
    """Train a score model with denoising score matching (Song et al. 2021)."""
    import torch

    from invdiff.core.checkpoint import build_model
    from invdiff.core.nets import UNetConfig
    from invdiff.core.sde import max_pairwise_distance
    from invdiff.training.augment import CropConfig
    from invdiff.training.train import TrainConfig, state_path
    from invdiff.training.train import train as run

    set_threads(threads)
    _check_options(locals())
    torchrun.ranks()  # before reading the data; the training loop reads the same
    check_state_output(out, state_path(out), list(data), force, resume)
    dev = resolve_device(device)
    images, attrs = _read_all(data)
    n, c, h, w = images.shape
    if h != w and not crop:
        raise InvdiffError(f"images are {h}x{w}; the UNet needs square images (crop or pad them)")
    crop_cfg = CropConfig(size=crop, zoom_max=zoom_max) if crop else None
    if crop > min(h, w):
        raise InvdiffError(f"--crop {crop} must be at most the image side {min(h, w)}")
    adopted, source, loaded = {}, None, None
    if init:  # the model's network, SDE and preconditioning unless given on the command line
        from invdiff.core.checkpoint import load_model, resolve_model
        from invdiff.training.train import init_parts

        source = resolve_model(init, "--init")
        given = {k for k in ctx.params if str(ctx.get_parameter_source(k)).endswith("COMMANDLINE")}
        loaded = load_model(source)
        adopted = init_parts(loaded[1], given, c)
    net = (
        adopted.get("net")
        or UNetConfig(
            channels=c,
            base=base,
            mult=parse_ints(mult, "--mult"),
            num_res_blocks=res_blocks,
            attn_resolutions=parse_ints(attn, "--attn", empty=True),
            mid_attention=mid_attention,
            norm=norm,
        ).to_dict()
    )
    side, down = crop or h, UNetConfig.from_dict(net).downsampling
    if side % down:
        raise InvdiffError(f"image size {side} must be divisible by {down} for --mult")
    if "sde" in adopted:
        sde_cfg = adopted["sde"]
    elif sde == "ve":
        smax = sigma_max or max_pairwise_distance(torch.as_tensor(images))
        if smax <= sigma_min:
            raise InvdiffError(
                f"the training images are (nearly) identical: their largest distance {smax:.3g} "
                f"is not above --sigma-min {sigma_min:g}; give --sigma-max or more varied images"
            )
        sde_cfg = {"name": "ve", "sigma_min": sigma_min, "sigma_max": round(smax, 3)}
    else:  # vp or subvp (checked)
        sde_cfg = {"name": sde, "beta_min": 0.1, "beta_max": 20.0}
    config = {
        "net": net,
        "sde": sde_cfg,
        "image": {"channels": c, "size": side, "range": [0.0, 1.0], "any_size": bool(crop)},
        "sigma_data": float(images.std()),
        "precond": adopted.get("precond", precond),
        "data": {"files": [d.name for d in data], "n": n, "attrs": attrs},
    }
    if crop_cfg is not None:
        config["crop"] = asdict(crop_cfg)
    tc = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        lr_decay_start=lr_decay_start,
        lr_decay_steps=lr_decay_steps,
        lr_final=lr_final,
        ema_decay=ema_decay,
        ckpt_every=ckpt_every,
        seed=seed,
        noise_dist=noise_dist,
        p_mean=p_mean,
        p_std=p_std,
    )
    check_network_memory(build_model, config)
    model = seeded_build(build_model, config, seed)  # initial weights depend on --seed only
    if loaded is not None:  # recorded in the config: --resume checks the same --init is given
        from invdiff.training.train import initialise_from

        config["init"] = initialise_from(model, config, loaded, source, init)
    run(
        images,
        model,
        config,
        out,
        tc,
        resume=resume,
        device=dev,
        progress=progress,
        weights=weights,
        crop=crop_cfg,
    )
    typer.echo(f"wrote {out}")


def _check_options(o: dict) -> None:
    """Refuse impossible training options before reading any data."""
    check_training(o["steps"], o["batch_size"], o["lr"], o["ema_decay"], o["ckpt_every"], o["seed"])
    check_net(o["base"], o["res_blocks"], parse_ints(o["mult"], "--mult"))
    parse_ints(o["attn"], "--attn", empty=True)
    require(
        {
            "--warmup": (o["warmup"] >= 0, ">= 0"),
            "--lr-decay-start": (o["lr_decay_start"] >= 0, ">= 0"),
            "--lr-decay-steps": (o["lr_decay_steps"] >= 0, ">= 0 (0: constant rate)"),
            "--lr-final": (0 < o["lr_final"] <= 1, "a fraction in (0, 1]"),
            "--sigma-min": (0 < o["sigma_min"] < 1e3, "a positive number"),
            "--sigma-max": (
                o["sigma_max"] == 0 or o["sigma_min"] < o["sigma_max"] <= 1e5,
                "0 (automatic) or larger than --sigma-min, at most 1e5",
            ),
            "--sde": (o["sde"] in ("ve", "vp", "subvp"), "ve, vp or subvp"),
            "--precond": (o["precond"] in ("eps", "edm"), "eps or edm"),
            "--noise-dist": (o["noise_dist"] in ("uniform", "lognormal"), "uniform or lognormal"),
            "--p-std": (0 < o["p_std"] < 10, "a number in (0, 10)"),
            "--p-mean": (abs(o["p_mean"]) < 20, "a number in (-20, 20)"),
            "--crop": (o["crop"] >= 0, ">= 0 (0: whole images)"),
            "--zoom-max": within(o["zoom_max"], 1, 64),
            "--weights": (o["weights"] in ("ema", "raw"), "ema or raw"),
        }
    )


def _read_all(files: list[Path]):
    """Read and concatenate the /images of several files; attributes are kept per file."""
    import numpy as np

    from invdiff.io import read_images

    parts = [read_images(f) for f in files]
    shapes = {p[0].shape[1:] for p in parts}
    if len(shapes) > 1:
        raise InvdiffError(
            f"training files have different image shapes {sorted(shapes)}; write them at one --size"
        )
    attrs = (
        parts[0][2]
        if len(parts) == 1
        else {f.name: p[2] for f, p in zip(files, parts, strict=True)}
    )
    return np.concatenate([p[0] for p in parts]), attrs
