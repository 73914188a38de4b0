"""Built-in operators: the conformance kit over every registered operator, then each one's maths.

The kit's cases are parametrised from the registry built at collection time (entry points
included), so a newly installed or added operator is checked without editing this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from invdiff_operators.ct_sparse import CTSparse
from invdiff_operators.masking import Masking
from invdiff_operators.mri import MRI

from invdiff.core.operator import Operator, real_inner
from invdiff.errors import InvdiffError
from invdiff.plugins import build_registry, make_plugin_manager
from invdiff.testing import CHECKS, check_operator

REGISTRY = build_registry(make_plugin_manager())
CPU_CHECKS = [c for c in CHECKS if c != "cuda"]


@pytest.mark.parametrize("check", CPU_CHECKS)
@pytest.mark.parametrize("name", list(REGISTRY))
def test_conformance(name, check):
    (result,) = check_operator(REGISTRY[name], checks=[check])
    if result.status == "skip":
        pytest.skip(result.detail)
    assert result.passed, str(result)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(REGISTRY))
def test_conformance_cuda(name):
    (result,) = check_operator(REGISTRY[name], checks=["cuda"])
    assert result.status == "pass", str(result)


def test_builtins_are_registered():
    assert {"masking", "grayscale", "ct_sparse", "mri", "superres", "ct_poisson"} <= set(REGISTRY)


# ct_sparse ------------------------------------------------------------------------------------


def _astra_projector(op):
    import astra

    _, h, w = op.image_shape
    vol = astra.create_vol_geom(h, w)
    angles = np.arange(op.views) * np.pi / op.views
    proj = astra.create_proj_geom("parallel", 1.0, op.detectors, angles)
    return astra, astra.create_projector("linear", proj, vol)


def test_ct_matches_astra_cpu_projector_and_backprojector(gen):
    op = REGISTRY["ct_sparse"].create((1, 37, 31), views=9).double()
    astra, pid = _astra_projector(op)
    try:
        x = torch.rand(1, 1, 37, 31, generator=gen, dtype=torch.float64)
        sid, sino = astra.create_sino(x[0, 0].numpy(), pid)
        bid, back = astra.create_backprojection(sino, pid)
        astra.data2d.delete([sid, bid])
    finally:
        astra.projector.delete(pid)
    ours = op(x)[0, 0].numpy()
    # astra computes in float32: agreement to float32 round-off.
    assert np.abs(ours - sino).max() <= 1e-5 * np.abs(sino).max()
    ours_back = op.adjoint(torch.from_numpy(sino).double()[None, None])[0, 0].numpy()
    assert np.abs(ours_back - back).max() <= 1e-5 * np.abs(back).max()


def _blob(n: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    return torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * (n / 8) ** 2))[None, None]


def test_ct_fbp_approaches_the_image_with_many_views():
    img = _blob(48)
    errors = []
    for views in (8, 32, 128):
        op = REGISTRY["ct_sparse"].create((1, 48, 48), views=views).double()
        errors.append(float((op.pseudo_inverse(op(img)) - img).norm() / img.norm()))
    # Measured: 0.075, 0.027, 0.013; the floor comes from the discretised ramp filter.
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


def test_ct_default_detector_count_and_shape():
    op = REGISTRY["ct_sparse"].create((1, 64, 64), views=5)
    assert op.detectors == math.ceil(math.sqrt(2) * 64)
    assert op(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 5, op.detectors)


def test_ct_refuses_zero_views():
    with pytest.raises(InvdiffError, match="--views"):
        REGISTRY["ct_sparse"].create((1, 16, 16), views=0)


# mri ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", ["equispaced", "random", "variable_density"])
def test_mri_mask_reaches_the_acceleration(mask):
    op = REGISTRY["mri"].create((1, 96, 96), mask=mask, acceleration=4, center_fraction=0.08)
    assert 3.0 <= op.acceleration_achieved() <= 5.5
    centre = op.mask[48, 46:51]
    assert bool(centre.all()), "the low-frequency centre must be fully sampled"


def test_mri_column_masks_sample_whole_columns():
    op = REGISTRY["mri"].create((1, 40, 36), mask="random", mask_seed=3)
    assert torch.equal(op.mask, op.mask[:1].expand_as(op.mask))


def test_mri_measurements_are_complex_and_zero_where_unsampled(gen):
    op = REGISTRY["mri"].create((1, 37, 31), mask="variable_density", noise_std=0.1)
    y = op.measure(torch.rand(2, 1, 37, 31, generator=gen), gen)
    assert y.dtype == torch.complex64
    assert torch.all(y[..., op.mask == 0] == 0)


def test_mri_is_an_orthonormal_fft_when_fully_sampled(gen):
    op = REGISTRY["mri"].create((1, 37, 31), acceleration=1).double()
    x = torch.rand(1, 1, 37, 31, generator=gen, dtype=torch.float64)
    assert torch.allclose(real_inner(op(x), op(x)), real_inner(x, x))
    assert torch.allclose(op.pseudo_inverse(op(x)), x)


def test_mri_unknown_mask_names_the_choices():
    with pytest.raises(InvdiffError, match="variable_density"):
        REGISTRY["mri"].create((1, 16, 16), mask="radial")


# masking --------------------------------------------------------------------------------------


def test_masking_random_fraction_is_exact():
    op = REGISTRY["masking"].create((1, 37, 31), mask="random", fraction=0.3, mask_seed=5)
    assert int((op.mask == 0).sum()) == round(0.3 * 37 * 31)


def test_masking_centre_box_is_centred():
    op = REGISTRY["masking"].create((1, 40, 40), mask="centre", fraction=0.25)
    missing = (op.mask == 0).nonzero()
    assert missing.min(0).values.tolist() == [10, 10]
    assert missing.max(0).values.tolist() == [29, 29]


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_masking_reads_a_mask_file(tmp_path, suffix):
    mask = (np.arange(7 * 5).reshape(7, 5) % 3 == 0).astype(np.float32)
    path = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(path, mask)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f["mask"] = mask
    op = REGISTRY["masking"].create((2, 7, 5), mask="file", path=str(path))
    assert torch.equal(op.mask, torch.from_numpy(mask))


def test_masking_file_of_the_wrong_shape_is_refused(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((5, 7)))
    with pytest.raises(InvdiffError, match="shape"):
        REGISTRY["masking"].create((1, 7, 5), mask="file", path=str(tmp_path / "m.npy"))


# grayscale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["mean", "luma"])
def test_grayscale_decoupling_is_orthogonal_with_the_measured_direction_first(weights):
    op = REGISTRY["grayscale"].create((3, 5, 7), weights=weights).double()
    q = op.decoupling  # built in float64, stored in the default float32: 1e-7 round-off
    assert torch.allclose(q @ q.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(q[0], op.weights / op.weights.norm(), atol=1e-6)


def test_grayscale_project_keeps_the_unmeasured_colour_channels(gen):
    op = REGISTRY["grayscale"].create((3, 9, 7)).double()
    x, truth = (torch.rand(1, 3, 9, 7, generator=gen, dtype=torch.float64) for _ in range(2))
    z, zp = op.decouple(x), op.decouple(op.project(x, op(truth), 1.0))
    assert torch.allclose(zp[:, 1:], z[:, 1:])
    assert torch.allclose(zp[:, :1], op.decouple(truth)[:, :1])


def test_grayscale_needs_three_channels():
    with pytest.raises(InvdiffError, match="3-channel"):
        REGISTRY["grayscale"].create((1, 8, 8))


# composition ----------------------------------------------------------------------------------


def test_linear_composition_has_the_composed_adjoint(gen):
    mask = REGISTRY["masking"].create((1, 37, 31), mask_seed=1).double()
    mri = REGISTRY["mri"].create((1, 37, 31)).double()
    op = mri @ mask
    x = torch.rand(2, 1, 37, 31, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 1, 37, 31, generator=gen, dtype=torch.complex128)
    lhs, rhs = real_inner(op(x), y).sum(), real_inner(x, op.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-10 * float(op(x).norm() * y.norm())


def test_ct_projection_step_converges_to_the_measurements():
    # Song et al. (2022) full-view projection: repeated steps drive A x to y (the sparse-view
    # FBP step x + FBP(y - A x) diverged here).
    from invdiff_operators.ct_sparse import CTSparse

    op = CTSparse((1, 32, 32), views=23, noise_std=0.0).double()
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y, z = op(x), torch.zeros_like(x)
    for _ in range(100):
        z = op.project(z, y)
    assert float((op(z) - y).norm() / y.norm()) < 5e-3


def test_default_pseudo_inverse_survives_convergence():
    # CGLS on a rank-deficient operator converges in rank(A) iterations; it must then stop
    # updating instead of dividing 0 by 0.
    from invdiff.core.operator import LinearOperator

    g = torch.Generator().manual_seed(0)
    mat = torch.randn(6, 16, generator=g, dtype=torch.float64)

    class Dense(LinearOperator):
        name = "dense_test"
        cg_iterations = 60

        def forward(self, x):
            return (x.flatten(1) @ mat.T).reshape(len(x), 1, 1, 6)

        def adjoint(self, y):
            return (y.flatten(1) @ mat).reshape(len(y), *self.image_shape)

    op = Dense((1, 4, 4))
    y = torch.randn(2, 1, 1, 6, generator=g, dtype=torch.float64)
    x = op.pseudo_inverse(y)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(op(x), y)
    torch.testing.assert_close(x.flatten(1), y.flatten(1) @ torch.linalg.pinv(mat).T)


def test_set_mask_takes_a_stored_mask_and_checks_it():
    from invdiff.errors import InvdiffError

    m = (torch.rand(37, 31, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    for name in ("masking", "mri"):
        op = REGISTRY[name].create((1, 37, 31), noise_std=0.0).double().set_mask(m)
        torch.testing.assert_close(op.mask, m.double())
        x = torch.rand(2, 1, 37, 31, dtype=torch.float64)
        y = op(x)
        torch.testing.assert_close(op(op.pseudo_inverse(y)), y)  # still the exact pseudo-inverse
        with pytest.raises(InvdiffError, match="shape"):
            op.set_mask(m[:-1])
        with pytest.raises(InvdiffError, match="0 and 1"):
            op.set_mask(m * 0.5)


def test_ct_geometry_too_large_is_refused_before_building_the_matrix():
    from invdiff_operators.ct_sparse import CTSparse

    with pytest.raises(InvdiffError, match="use fewer --views"):
        CTSparse((1, 64, 64), views=10**9)


def test_warm_start_levels_follow_how_good_the_baseline_is():
    """ct_sparse: higher with fewer views and larger images (FBP streaks), within [0.05, 0.2];
    masking: higher for a large hole than for scattered pixels; mri keeps the default 0.5."""
    ct = {(n, v): CTSparse((1, n, n), views=v).warm_start_sigma for n in (64, 256) for v in (8, 23)}
    assert ct[64, 23] < ct[64, 8] and ct[64, 23] < ct[256, 23] < ct[256, 8]
    assert ct[64, 23] == 0.05 and ct[256, 8] == 0.2
    assert CTSparse((1, 64, 64), views=400).warm_start_sigma == 0.05
    scattered = Masking((1, 64, 64), mask="random", fraction=0.7).warm_start_sigma
    box = Masking((1, 64, 64), mask="box", fraction=0.25).warm_start_sigma
    assert 0.1 == scattered < box <= 0.5
    assert MRI((1, 64, 64), acceleration=4).warm_start_sigma == Operator.warm_start_sigma == 0.5
