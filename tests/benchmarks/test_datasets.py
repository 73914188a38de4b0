"""The benchmark task sets: the same data whatever CPU kernels compute them, and checks that say
what differs (benchmarks/datasets.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from benchmarks import datasets

ROOT = Path(__file__).resolve().parents[2]
TINY = {"tasks": ["ct8", "ct23_noise", "mri_vd8"], "size": 32, "n_val": 2, "n_test": 3}

# Writes the tiny task sets into argv[1] and prints {file: content digests}.
_WRITE = """
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from benchmarks import datasets
d = Path(sys.argv[1])
sums = datasets.write_all(d, **json.loads(sys.argv[2]))
print(json.dumps({n: datasets.content_digests(d / n) for n in sums}))
"""


def _write(tmp_path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    sums = datasets.write_all(tmp_path, **TINY)
    contents = {n: datasets.content_digests(tmp_path / n) for n in sums}
    (tmp_path / datasets.SUMS).write_text(datasets.format_sums(sums, contents))
    return sums, contents


def test_same_data_on_other_cpu_kernels(tmp_path):
    """MKL_CBWR=COMPATIBLE makes MKL take its pre-AVX2 kernels, as on the machine that wrote the
    first SHA256SUMS; float32 sinograms and k-space then differed in the last bits."""
    _, here = _write(tmp_path / "here")
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _WRITE, str(tmp_path / "there"), json.dumps(TINY)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == here


def test_check_says_what_differs(tmp_path):
    sums, contents = _write(tmp_path)
    sums_file = tmp_path / datasets.SUMS
    assert datasets.read_sums(sums_file) == sums  # the '#' lines are not files
    assert datasets.read_content_sums(sums_file) == contents
    assert set(contents["ct8_test.h5"]) == {"/angles", "/ground_truth", "/measurement", "attrs"}
    assert all(datasets.check(tmp_path, sums_file).values())

    # the same content in other bytes (no compression, attributes in another order): a match
    path = tmp_path / "mri_vd8_val.h5"
    with h5py.File(path, "r") as f:
        arrays, attrs = {k: f[k][...] for k in f}, dict(f.attrs)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        for k in reversed(list(attrs)):
            f.attrs[k] = attrs[k]
    assert datasets.sha256(path) != sums[path.name]

    # one measurement entry off by one ulp, one attribute changed, one file gone
    path = tmp_path / "ct23_noise_test.h5"
    with h5py.File(path, "r+") as f:
        y = f["measurement"][...]
        y.flat[5] = np.nextafter(y.flat[5], np.float32(np.inf))
        f["measurement"][...] = y
    with h5py.File(tmp_path / "ct8_val.h5", "r+") as f:
        f.attrs["noise_std"] = 0.5
    (tmp_path / "mri_vd8_test.h5").unlink()

    notes = {k: v for k, v in datasets.compare(tmp_path, sums_file).items() if v}
    assert notes == {
        "mri_vd8_val.h5": datasets.SAME_DATA,
        "ct23_noise_test.h5": "differs: /measurement",
        "ct8_val.h5": "differs: attrs",
        "mri_vd8_test.h5": "missing",
    }
    bad = {k for k, ok in datasets.check(tmp_path, sums_file).items() if not ok}
    assert bad == {"ct23_noise_test.h5", "ct8_val.h5", "mri_vd8_test.h5"}
