"""Fixed validation and test sets of the benchmark tasks, written as HDF5 with checksums.

Every task is an operator with fixed parameters applied to thorax phantoms
(``invdiff.data.phantoms.make_phantoms``) of the validation split (seed ``SPLIT_SEEDS["val"]`` = 1,
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

Determinism across machines. A x is computed in float64 and rounded once to float32 (complex64
for MRI); the noise is then added in float32. Computed in float32, the CT sinograms (sparse matrix
products) and MRI k-space (FFTs) depended on the CPU: MKL picks SSE, AVX2 or AVX-512 kernels whose
float32 rounding differs by a few ulp, so one commit wrote different CT and MRI files on different
machines (inpainting and the ground truth never differed). Rounded from float64, A x is the same
on every kernel path tried (``MKL_CBWR`` COMPATIBLE, AVX2 or unset; ``ATEN_CPU_CAPABILITY`` avx2 or
default); tests/benchmarks/test_datasets.py checks two of them. The noise is torch's float32 normal
draw, the same on x86 CPUs with AVX2 (ATen's vectorised kernel) but another one without AVX2 or off
x86: there the four noisy CT files differ (``--check`` names their /measurement).

The files behind the first SHA256SUMS (commit b88686a to 8e73376: float32 maths, on a CPU where MKL
took its pre-AVX2 kernels), on which benchmarks/results/harness_200nfe.json (and harness.json until
its re-run of 2026-12-02 on the present files) were run, are what this script of commit 8e73376
writes under ``MKL_CBWR=COMPATIBLE``; their CT and MRI measurements differ from the present ones by
at most 4e-7 of the largest entry.

Checksums. ``data/SHA256SUMS`` holds, for the default configuration (64 x 64, 16 validation and 32
test images), the SHA-256 of every file (``sha256sum -c`` format) and, on ``#`` lines that
``sha256sum`` skips, a content digest of each dataset (dtype, shape, values) and of the attributes.
A file matches when its content digests do (its bytes may also depend on the HDF5 and zlib builds;
h5py writes no timestamps); ``--check`` names the datasets or attributes that differ. The HDF5
files themselves (about 10 MB) are not committed: this script regenerates them, and the harness
regenerates missing files and records whether they match.

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

from invdiff.core.operator import LinearOperator, Operator
from invdiff.data.phantoms import SPLIT_SEEDS, make_phantoms
from invdiff.io import write_datasets
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


def forward64(op: Operator, x: torch.Tensor) -> torch.Tensor:
    """Return A x computed in float64 (complex128), the same on every CPU up to the last bits."""
    y = op(x.to(torch.float64))
    if y.dtype not in (torch.float64, torch.complex128):
        raise TypeError(f"{op.name} returned {y.dtype} for a float64 input; need float64 maths")
    return y


def measure(op: Operator, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return y = A x + noise_std n: A x from float64 rounded once to float32 (complex64), the
    noise drawn by ``op.measure`` itself (for a linear operator, op.measure(0) is the noise alone).
    """
    if not isinstance(op, LinearOperator) or type(op).measure is not Operator.measure:
        raise TypeError(f"{op.name}: task sets hold linear operators with additive noise only")
    y = forward64(op, x)
    y = y.to(torch.complex64 if y.is_complex() else x.dtype)
    if op.noise_std == 0:
        return y
    return y + op.measure(torch.zeros_like(x), generator)


def noise_std_for(task: Task, op: Operator, val: torch.Tensor) -> float:
    """Return noise_level * mean |A x| over the validation phantoms (4 significant digits)."""
    if task.noise_level == 0:
        return 0.0
    scale = float(forward64(op, val).abs().mean())
    return float(f"{task.noise_level * scale:.4g}")


def make_split(task: Task, split: str, n: int, size: int, noise_std: float, registry=None):
    """Return (datasets, attributes) of one task and split."""
    seed = SPLIT_SEEDS[split]
    truth = torch.from_numpy(make_phantoms(n, size, seed)[0])
    op = build_operator(task.operator, size, task.params, noise_std, registry)
    y = measure(op, truth, torch.Generator().manual_seed(seed))
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


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray | np.generic):
        return v.tolist()
    return v


def content_digests(path: Path) -> dict[str, str]:
    """Return {"/NAME": SHA-256 of dtype, shape and C-order values} for every dataset of an HDF5
    file and {"attrs": SHA-256 of its attributes as sorted JSON}: what the file holds, whatever
    bytes the HDF5 and zlib builds lay it out in."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                arr = np.ascontiguousarray(obj[...])
                h = hashlib.sha256(f"{arr.dtype.str} {arr.shape}\n".encode())
                h.update(arr.tobytes())
                out["/" + name] = h.hexdigest()

        f.visititems(visit)
        attrs = json.dumps({k: _plain(v) for k, v in f.attrs.items()}, sort_keys=True)
    out["attrs"] = hashlib.sha256(attrs.encode()).hexdigest()
    return out


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


def format_sums(sums: dict[str, str], contents: dict[str, dict[str, str]] | None = None) -> str:
    """Return sums in the ``sha256sum`` format, sorted by file name, then the files' content digests
    (``contents``: {file name: content_digests}) on ``#`` lines, which ``sha256sum -c`` skips."""
    text = "".join(f"{h}  {name}\n" for name, h in sorted(sums.items()))
    if contents:
        text += f"{CONTENT_HEADER}\n" + "".join(
            f"# {h}  {name}:{part}\n"
            for name in sorted(contents)
            for part, h in sorted(contents[name].items())
        )
    return text


CONTENT_HEADER = (
    "# Content digests (benchmarks/datasets.py content_digests: each dataset's dtype, shape and\n"
    "# values, and the attributes); a file whose bytes differ matches when all of these do."
)
SAME_DATA = "same datasets and attributes, other file bytes (HDF5 or zlib build)"


def read_sums(path: Path) -> dict[str, str]:
    """Read a ``sha256sum``-format file into {file name: SHA-256} (``#`` lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            h, name = line.split(maxsplit=1)
            out[name.strip()] = h
    return out


def read_content_sums(path: Path) -> dict[str, dict[str, str]]:
    """Read the content digests of a sums file: {file name: {"/dataset" or "attrs": SHA-256}}."""
    out: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "#" and len(words[1]) == 64 and ":" in words[2]:
            name, part = words[2].split(":", 1)
            out.setdefault(name, {})[part] = words[1]
    return out


def compare(data_dir: Path, sums_file: Path) -> dict[str, str]:
    """Return {file name: "" (same bytes), SAME_DATA, or what differs} for the files listed in
    ``sums_file``: "missing", or "differs: /measurement, attrs" (the datasets and attributes
    whose content digests differ)."""
    expected, contents = read_sums(sums_file), read_content_sums(sums_file)
    out = {}
    for name, h in expected.items():
        path = data_dir / name
        if not path.is_file():
            out[name] = "missing"
        elif sha256(path) == h:
            out[name] = ""
        elif name not in contents:
            out[name] = "file bytes differ (no content digests listed to say what)"
        else:
            want, got = contents[name], content_digests(path)
            diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            out[name] = f"differs: {', '.join(diff)}" if diff else SAME_DATA
    return out


def check(data_dir: Path, sums_file: Path) -> dict[str, bool]:
    """Return {file name: whether it matches ``sums_file``} for the files listed there: the same
    bytes, or the same content digests (datasets and attributes)."""
    return {name: note in ("", SAME_DATA) for name, note in compare(data_dir, sums_file).items()}


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
        notes = compare(args.out, DATA / SUMS)
        for name, note in sorted(notes.items()):
            if note:
                print(f"{name}: {note}")
        bad = [n for n, note in notes.items() if note not in ("", SAME_DATA)]
        print(
            f"{len(bad)} of {len(notes)} files differ from {DATA / SUMS}"
            if bad
            else f"all {len(notes)} files match {DATA / SUMS}"
        )
        raise SystemExit(1 if bad else 0)
    contents = {name: content_digests(args.out / name) for name in sums}
    (args.out / SUMS).write_text(format_sums(sums, contents))
    print(f"wrote {len(sums)} files and {args.out / SUMS}")


if __name__ == "__main__":
    main()
