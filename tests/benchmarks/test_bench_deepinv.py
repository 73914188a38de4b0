"""benchmarks/bench_deepinv.py and its deepinv_* modules: the rows and report on a tiny untrained
model without DeepInverse, the prior seen as DeepInverse's denoiser, and (when deepinv imports)
the physics check."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import bench_deepinv as bd
from benchmarks import datasets
from benchmarks import deepinv_peer as peer
from benchmarks import deepinv_physics as phys
from benchmarks.deepinv_report import markdown, paired_lines
from benchmarks.harness_config import tiny_model
from invdiff.core.score import data_range_prior
from invdiff.data.phantoms import make_phantoms


def test_rows_and_report_without_deepinv(tmp_path):
    model, config = tiny_model(32)
    cfg = bd.Config(
        tasks=["ct23", "mri8"],
        nfe=[3],
        images=2,
        samples=2,
        size=32,
        n_val=1,
        n_test=2,
        op_repeats=1,
        name="deepinv_tiny",
        data_dir=str(tmp_path / "data"),
    )
    out = bd.run(
        cfg, model, config, None, peer.NOT_INSTALLED, command="pytest tiny", results=tmp_path
    )
    data = json.loads((tmp_path / "deepinv_tiny.json").read_text())
    assert data["tasks"] == out["tasks"]  # (the file has its absolute paths made portable)
    assert list(data["tasks"]) == ["ct23", "mri8"]
    for task in data["tasks"].values():
        rows = task["rows"]
        ours = [r for r in rows if r["package"] == "invdiff"]
        theirs = [r for r in rows if r["package"] == "deepinv"]
        assert [r["sampler"] for r in ours] == ["diffpir", "dps"]
        assert [r["sampler"] for r in theirs] == ["DiffPIR", "DPS"]
        for r in ours:
            assert r["nfe"] == 3  # NFE as asked: steps + the final Tweedie evaluation
            assert len(r["per_image_psnr"]) == 2 and math.isfinite(r["psnr"])
            assert -1 <= r["ssim"] <= 1 and r["seconds_per_image"] > 0
        assert all(r["not_run"] == peer.NOT_INSTALLED for r in theirs)
        assert task["physics_check"] == peer.NOT_INSTALLED and task["operator_ms"]["invdiff"] > 0
    md = (tmp_path / "deepinv_tiny.md").read_text()
    assert md == markdown(data) and "pytest tiny" in md
    table = [line for line in md.splitlines() if line.startswith("| ct23 |") and "NFE" not in line]
    assert len(table) == 1 + 4  # the physics-check row, then four sampler rows
    assert sum(peer.NOT_INSTALLED in line for line in md.splitlines()) >= 2 * 2 + 2


def test_paired_section_compares_image_by_image():
    def row(package, sampler, nfe, per_image, secs, variant="defaults"):
        mean = sum(per_image) / len(per_image)
        return {
            "package": package,
            "sampler": sampler,
            "target_nfe": nfe,
            "variant": variant,
            "physics": "p",
            "psnr": mean,
            "per_image_psnr": per_image,
            "seconds_per_image": secs,
        }

    rows = [
        row("invdiff", "diffpir", 25, [30.0, 31.0, 29.0], 1.0),
        row("invdiff", "dps", 25, [40.0, 40.0, 40.0], 1.0),  # not the default: not compared
        row("deepinv", "DiffPIR", 25, [29.0, 31.5, 28.0], 2.0),
        row("deepinv", "DPS", 25, [10.0, 10.0, 10.0], 2.0),
        row("deepinv", "DiffPIR", 50, [31.0, 32.0, 30.0], 4.0, variant="v"),
        row("deepinv", "DiffPIR", 5, [50.0, 50.0, 50.0], 0.1),  # fewer NFE: never compared
    ]
    lines = [x for x in paired_lines({"tasks": {"t": {"rows": rows}}}) if x.startswith("| t |")]
    assert len(lines) == 2
    d = [1.0, -0.5, 1.0]  # against DiffPIR at 25 NFE, the better of the two 25-NFE rows
    se = torch.tensor(d).std().item() / 3**0.5
    assert f"| 25 | +0.50 +- {se:.2f} | 2 / 3 | 1.00 / 2.00 |" in lines[0]
    assert "DiffPIR (v), p | 50 | -1.00 +- 0.00 | 0 / 3 | 1.00 / 4.00 |" in lines[1]


def test_score_denoiser_is_tweedie():
    """D(x, sigma) = x + sigma^2 s(x, t(sigma)) on a VE prior; (real, imaginary) pairs keep
    the real channel and get a zero imaginary one."""
    model, config = tiny_model(16)
    prior = data_range_prior(model, config)
    den = peer.ScoreDenoiser(prior, model.sde)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 16, generator=g)
    sigma = torch.tensor([0.05, 0.5, 20.0])  # 20 > sigma_max: the time extends past 1
    t = peer.noise_time(model.sde, sigma)
    assert torch.allclose(model.sde.coefficients(t)[1], sigma, rtol=1e-5)
    with torch.no_grad():
        want = x + sigma[:, None, None, None] ** 2 * prior.score(x, t)
        assert torch.allclose(den(x, sigma), want, atol=1e-5)
        pair = den(torch.cat([x, torch.randn(3, 1, 16, 16, generator=g)], 1), sigma)
    assert torch.allclose(pair[:, :1], want, atol=1e-5) and not pair[:, 1:].any()
    assert den.calls == 2


@pytest.fixture(scope="module")
def dinv():
    module, note = peer.import_deepinv()
    if module is None:
        pytest.skip(note)
    return module


@pytest.mark.parametrize("task", ["ct23", "mri8"])
def test_physics_match_32px(dinv, task):
    spec = datasets.TASKS[task]
    op = datasets.build_operator(spec.operator, 32, spec.params, 0.0)
    images = torch.from_numpy(make_phantoms(3, 32, seed=2)[0])
    check = phys.physics_match(dinv, op, images)
    assert check["match"]
    if spec.operator == "mri":
        assert check["rel_error"] < phys.MRI_TOL and check["scale"] == pytest.approx(1.0, abs=1e-6)
    else:
        assert check["aligned_rel_error"] < phys.CT_ALIGNED_TOL
        assert check["aligned_scale"] == pytest.approx(1.0, abs=0.02)


def test_denoiser_through_deepinv(dinv):
    model, config = tiny_model(32)
    den = peer.ScoreDenoiser(data_range_prior(model, config), model.sde)
    images = torch.from_numpy(make_phantoms(2, 32, seed=2)[0])
    assert peer.check_denoiser(dinv, den, images, seed=0)["max_rel_diff"] < 1e-4


def test_command_line():
    cfg, command, no_deepinv, render = bd.parse(
        ["--tasks", "mri8", "--nfe", "100", "50", "--dps-weights", "--no-cross", "--no-deepinv"]
    )
    assert cfg.tasks == ["mri8"] and cfg.nfe == [100, 50] and cfg.dps_weights == []
    assert not cfg.cross and cfg.matched_diffpir and no_deepinv and render is None
    assert command.startswith("python benchmarks/bench_deepinv.py --tasks mri8")
