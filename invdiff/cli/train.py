"""`invdiff train`: denoising score matching on an HDF5 image set."""

from __future__ import annotations

from pathlib import Path

import typer

from invdiff.cli._common import resolve_device, seeded_build, set_threads, user_errors
from invdiff.errors import InvdiffError


@user_errors
def train(
    data: Path = typer.Argument(..., help="HDF5 file with /images (N x C x H x W in [0, 1])."),
    out: Path = typer.Option(..., "--out", help="Model file to write (state goes to OUT.train)."),
    sde: str = typer.Option("ve", help="ve, vp or subvp."),
    sigma_max: float = typer.Option(0.0, help="VE sigma_max; 0 = largest pairwise data distance."),
    sigma_min: float = typer.Option(0.01, help="VE sigma_min."),
    steps: int = typer.Option(10_000, help="Optimiser steps."),
    batch_size: int = typer.Option(16, help="Global batch size."),
    lr: float = typer.Option(2e-4, help="Adam learning rate."),
    warmup: int = typer.Option(500, help="Linear warm-up steps."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the weights."),
    ckpt_every: int = typer.Option(500, help="Checkpoint every this many steps."),
    base: int = typer.Option(24, help="UNet channels at full resolution."),
    mult: str = typer.Option("1,2,3,4", help="UNet channel multipliers per level."),
    res_blocks: int = typer.Option(1, help="Residual blocks per level."),
    attn: str = typer.Option("", help="Feature-map sizes with attention, e.g. '16'."),
    seed: int = typer.Option(0, help="Seed of initialisation, batches and noise."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.train if present."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    weights: str = typer.Option("ema", help="Model file holds the 'ema' or the 'raw' weights."),
) -> None:
    """Train a score model with denoising score matching (Song et al. 2021)."""
    import torch

    from invdiff.checkpoint import build_model
    from invdiff.io import read_images
    from invdiff.nets import UNetConfig
    from invdiff.sde import max_pairwise_distance
    from invdiff.train import TrainConfig
    from invdiff.train import train as run

    set_threads(threads)
    images, _, attrs = read_images(data)
    n, c, h, w = images.shape
    if h != w:
        raise InvdiffError(f"images are {h}x{w}; the UNet needs square images (crop or pad them)")
    try:
        net = UNetConfig(
            channels=c,
            base=base,
            mult=_ints(mult),
            num_res_blocks=res_blocks,
            attn_resolutions=_ints(attn),
        )
    except ValueError:
        raise InvdiffError("--mult and --attn take comma-separated integers, e.g. 1,2,2") from None
    if h % net.downsampling:
        raise InvdiffError(f"image size {h} must be divisible by {net.downsampling} for --mult")
    if sde == "ve":
        smax = sigma_max or max_pairwise_distance(torch.as_tensor(images))
        sde_cfg = {"name": "ve", "sigma_min": sigma_min, "sigma_max": round(smax, 3)}
    elif sde in ("vp", "subvp"):
        sde_cfg = {"name": sde, "beta_min": 0.1, "beta_max": 20.0}
    else:
        raise InvdiffError(f"unknown --sde {sde!r}; use ve, vp or subvp")
    config = {
        "net": net.to_dict(),
        "sde": sde_cfg,
        "image": {"channels": c, "size": h, "range": [0.0, 1.0]},
        "sigma_data": float(images.std()),
        "data": {"file": data.name, "n": n, "attrs": attrs},
    }
    tc = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema_decay=ema_decay,
        ckpt_every=ckpt_every,
        seed=seed,
    )
    model = seeded_build(build_model, config, seed)  # initial weights depend on --seed only
    run(
        images,
        model,
        config,
        out,
        tc,
        resume=resume,
        device=resolve_device(device),
        progress=progress,
        weights=weights,
    )
    typer.echo(f"wrote {out}")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())
