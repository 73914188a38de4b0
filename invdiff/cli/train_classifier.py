"""`invdiff train-classifier`: a time-conditional classifier p_t(y | x_t) for a score model."""

from __future__ import annotations

from pathlib import Path

import typer

from invdiff.cli._checks import (
    check_net,
    check_network_memory,
    check_state_output,
    check_training,
    parse_ints,
)
from invdiff.cli._common import (
    BatchSize,
    Device,
    Force,
    Threads,
    resolve_device,
    seeded_build,
    set_threads,
    user_errors,
)
from invdiff.errors import InvdiffError

MAX_CLASSES = 65536  # /labels are class indices 0..K-1; the classifier has one output per class


@user_errors
def train_classifier(
    data: Path = typer.Argument(..., help="HDF5 file with /images and integer /labels."),
    out: Path = typer.Option(..., "--out", "-o", help="Classifier file to write."),
    model: Path | None = typer.Option(
        None, "--model", help="Score model whose SDE the classifier is for; default: shipped."
    ),
    steps: int = typer.Option(2000, help="Optimiser steps."),
    batch_size: BatchSize = 32,
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    ema_decay: float = typer.Option(0.99, help="EMA decay of the weights (0: no EMA)."),
    base: int = typer.Option(16, help="Channels at full resolution."),
    mult: str = typer.Option("1,2,2,2", help="Channel multipliers per level."),
    res_blocks: int = typer.Option(1, help="Residual blocks per level."),
    clean: bool = typer.Option(False, "--clean", help="Train at t = t_min only (clean images)."),
    paired: bool | None = typer.Option(
        None,
        "--paired/--unpaired",
        help="Batches of twins 2k, 2k+1 (default: when DATA has a 'paired' attribute).",
    ),
    ckpt_every: int = typer.Option(500, help="Write OUT (and OUT.train) every this many steps."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT.train (same options); exact on CPU."
    ),
    force: Force = False,
    seed: int = typer.Option(0, help="Seed of initialisation, batches and noise."),
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Train p_t(y | x_t) on images diffused with the model's SDE (Song et al. 2021, Sec. 5)."""
    import numpy as np

    from invdiff.core.checkpoint import default_model_path, file_sha256, load_model
    from invdiff.io import read_images
    from invdiff.training.classifier import (
        ClassifierConfig,
        ClassifierTrainConfig,
        build_classifier,
    )
    from invdiff.training.classifier import train_classifier as run
    from invdiff.training.train import state_path

    set_threads(threads)
    check_training(steps, batch_size, lr, ema_decay, ckpt_every, seed)
    mults = parse_ints(mult, "--mult")
    check_net(base, res_blocks, mults)
    model_path = model or default_model_path()
    check_state_output(out, state_path(out), [data, model_path], force, resume)
    dev = resolve_device(device)
    model_cfg = load_model(model_path)[1]  # a model that loads: its SDE and image are sound
    images, labels, attrs = read_images(data)
    if labels is None:
        raise InvdiffError(f"{data} has no /labels; store one integer class per image")
    classes = np.unique(labels)
    if classes.min() < 0 or len(classes) < 2:
        raise InvdiffError(f"/labels in {data} must hold at least two classes >= 0, got {classes}")
    if classes.max() >= MAX_CLASSES:
        raise InvdiffError(
            f"/labels in {data} go up to {classes.max()}; classes are numbered 0, 1, ... and "
            f"there are at most {MAX_CLASSES}: renumber them"
        )
    n, c, h, w = images.shape
    image = model_cfg["image"]
    fixed = not image.get("any_size")
    if c != image["channels"] or (fixed and (h, w) != (image["size"], image["size"])):
        raise InvdiffError(
            f"images in {data} are {c}x{h}x{w} but the model expects "
            f"{image['channels']}x{image['size']}x{image['size']}; use matching data or --model"
        )
    net = ClassifierConfig(c, int(classes.max()) + 1, base, mults, res_blocks)
    config = {
        "net": net.to_dict(),
        "sde": model_cfg["sde"],
        "sigma_data": model_cfg.get("sigma_data", 0.5),
        "image": {"channels": c, "size": h},
        "model": {"file": Path(model_path).name, "sha256": file_sha256(model_path)},
        "classes": {"counts": np.bincount(labels).tolist(), "meaning": attrs.get("label_meaning")},
        "data": {"file": data.name, "n": n, "attrs": attrs},
    }
    paired = "paired" in attrs if paired is None else paired
    if paired and (n % 2 or bool((labels[0::2] == labels[1::2]).any())):
        raise InvdiffError(
            f"--paired needs images 2k, 2k+1 of {data} to be twins with different labels; "
            "write such a file with `invdiff data phantoms --twins` or pass --unpaired"
        )
    tc = ClassifierTrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        ema_decay=ema_decay,
        clean=clean,
        ckpt_every=ckpt_every,
        seed=seed,
        paired=paired,
    )
    check_network_memory(build_classifier, config)
    clf = seeded_build(build_classifier, config, seed)  # initial weights depend on --seed only
    run(images, labels, clf, config, out, tc, device=dev, resume=resume)
    typer.echo(f"wrote {out}")
