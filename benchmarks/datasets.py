"""Fixed validation and test sets of the benchmark tasks, written as HDF5 with checksums.

Every task is an operator with fixed parameters applied to thorax phantoms
(``invdiff.phantoms.make_phantoms``) of the validation split (seed ``SPLIT_SEEDS["val"]`` = 1,
used only for tuning) and the test split (seed ``SPLIT_SEEDS["test"]`` = 2, used only for
reporting). One file per task and split, ``data/{task}_{split}.h5``:

- ``/ground_truth``: float32 (N, 1, H, W) in [0, 1];
- ``/measurement``: y = A x + noise_std n, float32 (CT sinograms, masked images) or complex64
  (MRI k-space), shape (N, *measurement shape);
- geometry: ``/angles`` (radians) for CT, ``/mask`` (H x W, 1 = measured) for MRI and masking;
- attributes: task, split, operator, ``params`` (JSON: the operator's keyword arguments, including
  ``mask_seed``), noise_level, noise_std, noise_definition, image_seed, noise_seed, size, generator.

Noise. ``noise_level`` is relative: noise_std = noise_level * mean |A x| over all entries of the
noiseless measurements of the VALIDATION phantoms, rounded to 4 significant digits, so validation
and test share one noise_std and the test set plays no part in choosing it. "1 % noise" on a
sinogram is noise_level 0.01. The noise is drawn from ``torch.Generator().manual_seed(noise_seed)``
with noise_seed = the split's image seed, in one call for the whole split.

Files are byte-for-byte deterministic on one machine (h5py writes no timestamps); their SHA-256
sums for the default configuration (64 x 64, 16 validation and 32 test images) are committed in
``data/SHA256SUMS``. The HDF5 files themselves (about 10 MB) are not committed: this script
regenerates them, and the harness regenerates missing files and records whether the sums match.

    python benchmarks/datasets.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff.io import write_datasets
from invdiff.operator import Operator
from invdiff.phantoms import SPLIT_SEEDS, make_phantoms
from invdiff.plugins import build_registry, make_plugin_manager

DATA = Path(__file__).parent / "data"
SUMS = "SHA256SUMS"
SIZE, N_VAL, N_TEST = 64, 16, 32
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Task:
    """One benchmark problem: an operator, its parameters and a relative noise level."""

    name: str
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    noise_level: float = 0.0
    title: str = ""


_EQ = {"mask": "equispaced", "center_fraction": 0.08, "mask_seed": 0}
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("ct23", "ct_sparse", {"views": 23}, 0.0, "CT, 23 views, noiseless"),
        Task("ct23_noise", "ct_sparse", {"views": 23}, 0.01, "CT, 23 views, 1 % noise"),
        Task("ct8", "ct_sparse", {"views": 8}, 0.0, "CT, 8 views, noiseless"),
        Task("ct8_noise", "ct_sparse", {"views": 8}, 0.01, "CT, 8 views, 1 % noise"),
        Task("mri4", "mri", {**_EQ, "acceleration": 4}, 0.0, "MRI 4x, equispaced columns"),
        Task("mri8", "mri", {**_EQ, "acceleration": 8}, 0.0, "MRI 8x, equispaced columns"),
        Task(
            "mri_vd8",
            "mri",
            {
                "mask": "variable_density",
                "acceleration": 8,
                "center_fraction": 0.08,
                "mask_seed": 0,
            },
            0.0,
            "MRI 8x, 2-D variable-density mask",
        ),
        Task(
            "inpaint70",
            "masking",
            {"mask": "random", "fraction": 0.7, "mask_seed": 0},
            0.0,
            "inpainting, 70 % random pixels missing",
        ),
        Task(
            "inpaint_box",
            "masking",
            {"mask": "box", "fraction": 0.25, "mask_seed": 0},
            0.0,
            "inpainting, a box of 25 % of the pixels missing",
        ),
    )
}

NOISE_DEFINITION = "noise_std = noise_level * mean |A x| over the validation measurements"


def build_operator(
    operator: str, size: int, params: dict[str, Any], noise_std: float, registry=None
) -> Operator:
    """Return the registered operator ``operator`` on 1 x size x size images."""
    registry = registry or build_registry(make_plugin_manager())
    return registry[operator].create((1, size, size), noise_std=noise_std, **params)


def noise_std_for(task: Task, op: Operator, val: torch.Tensor) -> float:
    """Return noise_level * mean |A x| over the validation phantoms (4 significant digits)."""
    if task.noise_level == 0:
        return 0.0
    scale = float(op(val).abs().mean())
    return float(f"{task.noise_level * scale:.4g}")


def make_split(task: Task, split: str, n: int, size: int, noise_std: float, registry=None):
    """Return (datasets, attributes) of one task and split."""
    seed = SPLIT_SEEDS[split]
    truth = torch.from_numpy(make_phantoms(n, size, seed)[0])
    op = build_operator(task.operator, size, task.params, noise_std, registry)
    y = op.measure(truth, torch.Generator().manual_seed(seed))
    arrays = {"ground_truth": truth.numpy(), "measurement": y.numpy(), **op.geometry()}
    attrs = {
        "task": task.name,
        "title": task.title,
        "split": split,
        "operator": task.operator,
        "params": json.dumps(task.params, sort_keys=True),
        "noise_level": task.noise_level,
        "noise_std": noise_std,
        "noise_definition": NOISE_DEFINITION,
        "image_seed": seed,
        "noise_seed": seed,
        "size": size,
        "generator": "invdiff.phantoms.make_phantoms",
    }
    return arrays, attrs


def sha256(path: Path) -> str:
    """Return the SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_all(
    data_dir: Path = DATA,
    tasks: list[str] | None = None,
    size: int = SIZE,
    n_val: int = N_VAL,
    n_test: int = N_TEST,
) -> dict[str, str]:
    """Write every task's validation and test files; return {file name: SHA-256}."""
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = build_registry(make_plugin_manager())
    sums = {}
    for name in tasks or list(TASKS):
        task = TASKS[name]
        val = torch.from_numpy(make_phantoms(n_val, size, SPLIT_SEEDS["val"])[0])
        op = build_operator(task.operator, size, task.params, 0.0, registry)
        noise_std = noise_std_for(task, op, val)
        for split, n in (("val", n_val), ("test", n_test)):
            path = data_dir / f"{name}_{split}.h5"
            write_datasets(path, *make_split(task, split, n, size, noise_std, registry))
            sums[path.name] = sha256(path)
    return sums


def format_sums(sums: dict[str, str]) -> str:
    """Return sums in the ``sha256sum`` format, sorted by file name."""
    return "".join(f"{h}  {name}\n" for name, h in sorted(sums.items()))


def read_sums(path: Path) -> dict[str, str]:
    """Read a ``sha256sum``-format file into {file name: SHA-256}."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            h, name = line.split(maxsplit=1)
            out[name.strip()] = h
    return out


def check(data_dir: Path, sums_file: Path) -> dict[str, bool]:
    """Return {file name: whether its SHA-256 matches ``sums_file``} for the files listed there."""
    expected = read_sums(sums_file)
    return {
        name: (data_dir / name).is_file() and sha256(data_dir / name) == h
        for name, h in expected.items()
    }


def load_split(path: Path, registry=None) -> dict[str, Any]:
    """Read one task file back: its operator (rebuilt from the stored parameters), y, truth.

    The rebuilt operator's mask must equal the stored one (same parameters, same mask_seed).
    """
    import h5py  # benchmarks/ is not part of invdiff, where only invdiff/io.py imports h5py

    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        arrays = {k: f[k][...] for k in f}
    params = json.loads(attrs["params"])
    op = build_operator(
        attrs["operator"], int(attrs["size"]), params, float(attrs["noise_std"]), registry
    )
    if "mask" in arrays and not np.array_equal(op.geometry()["mask"], arrays["mask"]):
        raise ValueError(f"{path}: the stored mask differs from the operator's; regenerate it")
    return {
        "op": op,
        "params": params,
        "attrs": attrs,
        "truth": torch.from_numpy(arrays["ground_truth"]),
        "y": torch.from_numpy(arrays["measurement"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate, compare with SHA256SUMS")
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args()
    sums = write_all(args.out)
    if args.check:
        bad = [n for n, ok in check(args.out, DATA / SUMS).items() if not ok]
        print("all checksums match" if not bad else f"checksums differ: {', '.join(bad)}")
        raise SystemExit(1 if bad else 0)
    (args.out / SUMS).write_text(format_sums(sums))
    print(f"wrote {len(sums)} files and {args.out / SUMS}")


if __name__ == "__main__":
    main()
