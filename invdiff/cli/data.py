"""`invdiff data`: generate training and test data."""

from __future__ import annotations

from pathlib import Path

import typer

from invdiff.cli._common import user_errors
from invdiff.errors import InvdiffError

app = typer.Typer(help="Generate data sets (HDF5, /images in [0, 1], optional /labels).")


@app.command("phantoms")
@user_errors
def phantoms(
    out: Path = typer.Argument(..., help="Output HDF5 file."),
    n: int = typer.Option(1024, "--n", help="Number of phantoms."),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed; splits use train 0, val 1, test 2."),
    lesion_fraction: float = typer.Option(0.5, help="Fraction of phantoms with a lesion."),
    twins: bool = typer.Option(
        False,
        "--twins",
        help="Write n lesion/no-lesion pairs of the same anatomy (2n images) for classifiers.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Generate CT-like thorax phantoms; /labels records whether a lesion is present."""
    import numpy as np

    from invdiff.io import write_datasets
    from invdiff.phantoms import lesion_twins, make_phantoms

    if n < 1 or size < 16:
        raise InvdiffError("need --n >= 1 and --size >= 16")
    if not 0 <= lesion_fraction <= 1:
        raise InvdiffError("--lesion-fraction must lie in [0, 1]")
    attrs = {
        "generator": "invdiff.phantoms.thorax_phantom",
        "seed": seed,
        "size": size,
        "lesion_fraction": lesion_fraction,
        "label_meaning": "1 = lesion present",
    }
    if twins:
        present, absent, _ = lesion_twins(n, size, seed)
        images = np.stack([present, absent], axis=1).reshape(2 * n, 1, size, size)
        labels = np.tile(np.array([1, 0], np.int64), n)
        attrs["lesion_fraction"] = 0.5
        attrs["paired"] = "images 2k (lesion) and 2k+1 (none) share their anatomy"
        n = 2 * n
    else:
        images, labels = make_phantoms(n, size, seed, lesion_fraction)
    write_datasets(out, {"images": images, "labels": labels}, attrs, force=force)
    typer.echo(f"wrote {n} phantoms of {size}x{size} to {out} ({int(labels.sum())} with a lesion)")


@app.command("photos")
@user_errors
def photos(
    out: Path = typer.Argument(..., help="Output HDF5 file."),
    n: int = typer.Option(8192, "--n", help="Number of patches."),
    size: int = typer.Option(32, "--size", help="Patch side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed; patch k depends on (seed, k) only."),
    split: str = typer.Option("train", help="train: all photos but the held-out one; test: it."),
    holdout: str = typer.Option("chelsea", help="The photograph kept out of training."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Cut random RGB patches from the colour photographs bundled with scikit-image (and
    scikit-learn, when installed)."""
    from invdiff.io import write_datasets
    from invdiff.photos import make_patches, sklearn_available

    if n < 1 or size < 8:
        raise InvdiffError("need --n >= 1 and --size >= 8")
    images, which, names = make_patches(n, size, seed, split, holdout)
    attrs = {
        "generator": "invdiff.photos.make_patches",
        "seed": seed,
        "size": size,
        "split": split,
        "holdout": holdout,
        "photos": ",".join(names),
        "label_meaning": "index of the source photograph in attribute 'photos'",
    }
    write_datasets(out, {"images": images, "labels": which}, attrs, force=force)
    typer.echo(f"wrote {n} {split} patches of {size}x{size} from {len(names)} photographs to {out}")
    if not sklearn_available():
        typer.echo(
            "note: scikit-learn is not installed, so its two photographs were not used (the "
            "shipped RGB model's data include them: pip install 'invdiff[photos]')"
        )
