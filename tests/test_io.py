"""invdiff.io called directly: atomic writes, the training and solve layouts read back, the solve
output layout, and refusals the command-line tests do not reach (those are in
test_cli_bad_options.py, test_cli.py and test_solve.py; stale temporaries in test_checkpoint.py)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from invdiff.atomic import atomic_path
from invdiff.errors import InvdiffError
from invdiff.io import (
    SolveOutput,
    read_array,
    read_images,
    read_solve_input,
    write_datasets,
)


def _h5(path, attrs=None, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
        f.attrs.update(attrs or {})
    return path


# Atomic writes ---------------------------------------------------------------------------------


def test_atomic_path_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]  # no temporary left behind
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"  # untouched until the block ends
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_atomic_path_gives_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644  # mkstemp alone makes 0600


def test_atomic_path_refuses_an_existing_file_without_force_and_a_missing_folder(tmp_path):
    path = tmp_path / "keep.h5"
    path.write_bytes(b"keep")
    with pytest.raises(InvdiffError, match="--force"), atomic_path(path, force=False):
        pass
    assert path.read_bytes() == b"keep"
    with pytest.raises(InvdiffError, match="does not exist"), atomic_path(tmp_path / "no" / "f"):
        pass


def test_write_datasets_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "d.h5"
    write_datasets(path, {"a": np.zeros(2)})
    with pytest.raises(InvdiffError, match="exists"):
        write_datasets(path, {"a": np.ones(2)}, force=False)
    with h5py.File(path) as f:
        assert not f["a"][...].any()


# The training layout ---------------------------------------------------------------------------


def test_images_round_trip_with_labels_and_plain_attributes(tmp_path):
    images = np.random.default_rng(0).uniform(size=(3, 8, 8)).astype(np.float32)
    path = tmp_path / "d.h5"
    write_datasets(path, {"images": images, "labels": np.array([0, 1, 0])}, {"seed": 3})
    with h5py.File(path, "a") as f:
        f.attrs["source"] = np.bytes_(b"phantoms")
    got, labels, attrs = read_images(path)
    assert got.shape == (3, 1, 8, 8) and got.dtype == np.float32  # N x H x W read as C = 1
    np.testing.assert_array_equal(got[:, 0], images)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 0]
    assert attrs == {"seed": 3, "source": "phantoms"}
    assert type(attrs["seed"]) is int  # numpy scalars come back as Python values


@pytest.mark.parametrize(
    "datasets,word",
    [
        ({"images": np.zeros((2, 2, 1, 8, 8), np.float32)}, "N x C x H x W"),
        ({"images": np.zeros((2, 8, 8), np.float32), "labels": np.zeros(3, int)}, "/labels"),
        ({"images": np.zeros((2, 8, 8), np.complex64)}, "complex"),
    ],
    ids=["five_axes", "labels_count", "complex"],
)
def test_read_images_refuses(datasets, word, tmp_path):
    with pytest.raises(InvdiffError, match=word):
        read_images(_h5(tmp_path / "bad.h5", **datasets))


# The solve layouts -----------------------------------------------------------------------------


def test_solve_input_with_named_measurements_geometry_and_operator(tmp_path):
    ct, masking = np.zeros((2, 1, 4, 5), np.float32), np.zeros((2, 1, 8, 8), np.float32)
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f["measurements/ct_sparse"], f["measurements/masking"] = ct, masking
        f["angles"], f["mask"] = np.linspace(0, 3, 4), np.ones((8, 8))
        f["ground_truth"] = np.zeros((2, 8, 8))  # N x H x W: a channel axis is added
        f.attrs["operator"], f.attrs["operator_params"] = "ct_sparse", '{"views": 4}'
    data = read_solve_input(path)
    assert data.format == "invdiff" and data.n == 2
    assert set(data.measurements) == {"ct_sparse", "masking"}
    assert data.angles.dtype == np.float64 and data.mask.shape == (8, 8)
    assert data.ground_truth.shape == (2, 1, 8, 8) and data.ground_truth.dtype == np.float32
    assert data.operator == "ct_sparse" and data.operator_params == {"views": 4}


def test_solve_input_takes_the_training_layout_as_images(tmp_path):
    data = read_solve_input(_h5(tmp_path / "t.h5", images=np.zeros((3, 1, 8, 8), np.float32)))
    assert data.image.shape == (3, 1, 8, 8) and data.measurements == {} and data.n == 3
    assert data.operator is None and data.operator_params == {}


def test_lodopab_and_fastmri_layouts(tmp_path):
    lodopab = read_solve_input(_h5(tmp_path / "l.h5", data=np.zeros((2, 5, 7), np.float32)))
    assert lodopab.format == "lodopab" and lodopab.measurements[""].shape == (2, 1, 5, 7)
    with pytest.raises(InvdiffError, match="N x V x D"):
        read_solve_input(_h5(tmp_path / "l4.h5", data=np.zeros((2, 1, 5, 7), np.float32)))
    k = np.ones((2, 8, 6), np.complex64)
    esc = np.zeros((2, 8, 8), np.float32)
    fastmri = read_solve_input(
        _h5(tmp_path / "f.h5", kspace=k, mask=np.ones(6), reconstruction_esc=esc)
    )
    assert fastmri.format == "fastmri" and fastmri.operator == "mri"
    assert fastmri.measurements["mri"].shape == (2, 1, 8, 6)
    assert fastmri.ground_truth.shape == (2, 1, 8, 8) and fastmri.mask.shape == (6,)
    with pytest.raises(InvdiffError, match="single-coil"):
        read_solve_input(_h5(tmp_path / "real.h5", kspace=np.ones((2, 8, 6), np.float32)))


def test_solve_output_layout_reads_back_as_a_solve_input(tmp_path):
    samples = np.random.default_rng(1).uniform(size=(2, 3, 1, 4, 4)).astype(np.float32)
    y = {"ct_sparse": np.ones((2, 1, 3, 5), np.float32), "masking": np.ones((2, 1, 4, 4))}
    truth = np.zeros((2, 1, 4, 4), np.float32)
    result = SolveOutput(samples, y, {"seed": 7}, ground_truth=truth)
    result.metrics["invdiff_psnr"] = np.array([1.0, 2.0])
    result.write(tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5") as f:
        np.testing.assert_array_equal(f["reconstruction"][...], samples.mean(1))
        np.testing.assert_array_equal(f["std"][...], samples.std(1, ddof=1))
        assert f["metrics/invdiff_psnr"][...].tolist() == [1.0, 2.0] and f.attrs["seed"] == 7
        assert "baseline" not in f and "measurement" not in f
    back = read_solve_input(tmp_path / "o.h5")  # measurements and truth as the input layout
    assert set(back.measurements) == set(y) and back.ground_truth.shape == truth.shape
    one = SolveOutput(samples[:, :1], {"": y["masking"]}, {}, baseline=truth)
    one.write(tmp_path / "one.h5")
    with h5py.File(tmp_path / "one.h5") as f:
        assert set(f) == {"reconstruction", "samples", "baseline", "measurement"}  # no std: K = 1


def test_read_array_reads_one_dataset_with_the_shared_checks(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f["mask"] = np.eye(4, dtype=bool)
        f.create_group("group")
        f["text"] = "abc"
    assert read_array(path, "mask").dtype == bool and read_array(path, "mask").sum() == 4
    for name, says in (("group", "is a group"), ("text", "not numbers"), ("nothing", "no dataset")):
        with pytest.raises(InvdiffError, match=says):
            read_array(path, name)
