"""`invdiff solve`: end to end on the shipped model, metadata, and one test per bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from invdiff_operators.ct_sparse import CTSparse

from invdiff.data.phantoms import make_phantoms
from tests._cli_helpers import assert_user_error as _user_error
from tests._cli_helpers import invoke


def assert_user_error(result, *words):
    _user_error(result, *words, ignore_case=True)


def write(path, **datasets):
    attrs = datasets.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
        f.attrs.update(attrs)
    return path


@pytest.fixture(scope="module")
def truth64():
    return make_phantoms(2, 64, seed=2)[0]


FAST = ["--steps", "24", "--samples", "2", "--no-progress", "--threads", "2", "--image-size", "64"]


@pytest.mark.parametrize(
    "operator,baseline",
    [(["ct_sparse", "--views", "23"], "FBP"), (["mri", "--acceleration", "4"], "zero")],
)
def test_end_to_end_beats_the_classical_baseline(tmp_path, truth64, operator, baseline):
    src = write(tmp_path / "in.h5", image=truth64)
    out = tmp_path / "out.h5"
    r = invoke("solve", "--operator", *operator, "--simulate", src, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        gain = f["metrics/invdiff_psnr"][:] - f["metrics/baseline_psnr"][:]
        assert f.attrs["baseline"].lower().startswith(baseline.lower())
        assert (gain > 1.0).all(), gain  # measured ~ +5 dB (CT) at 12 steps; 1 dB is the floor
        assert f["samples"].shape == (2, 2, 1, 64, 64) and f["std"].shape == (2, 1, 64, 64)
        # Samples differ inside the body; in the air around it the clipped prior may pin them
        # to exactly 0, the value every training image has there.
        assert (f["std"][:][truth64 > 0.05] > 0).mean() > 0.9


def test_metadata_round_trip_and_input_untouched(tmp_path, truth64):
    src = write(tmp_path / "in.h5", image=truth64[:1])
    before = src.read_bytes()
    out, png = tmp_path / "o.h5", tmp_path / "o.png"
    r = invoke(
        "solve",
        "--operator",
        "ct_sparse",
        "--views",
        "8",
        "--noise-std",
        "0.02",
        "--simulate",
        src,
        "--out",
        out,
        "--png",
        png,
        "--seed",
        "5",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    assert src.read_bytes() == before
    assert png.read_bytes()[:4] == b"\x89PNG"
    with h5py.File(out) as f:
        a = dict(f.attrs)
        assert json.loads(a["operators"]) == [
            {"name": "ct_sparse", "views": 8, "noise_std": 0.02, "detectors": 0}
        ]
        assert a["strategy"] == "diffpir" and json.loads(a["strategy_options"])["steps"] == 24
        # No --sigma-start: the operator's own warm-start level, recorded as the number used.
        level = CTSparse((1, 64, 64), views=8).warm_start_sigma
        assert json.loads(a["strategy_options"])["sigma_start"] == level != 0.5
        # No --kappa: the operator's own factor (not the base class's 1), recorded likewise.
        assert json.loads(a["strategy_options"])["kappa"] == CTSparse.noise_inflation != 1
        assert a["seed"] == 5 and a["samples_per_slice"] == 2 and a["device"] == "cpu"
        assert len(a["model_sha256"]) == 64 and a["nfe_per_sample"] == 25
        assert a["invdiff_version"] and a["wall_time_s"] > 0
        measurement = f["measurement"][:]
    # The written measurement solves again from the file alone (operator stored with it).
    again = write(
        tmp_path / "again.h5",
        measurement=measurement,
        ground_truth=truth64[:1],
        attrs={
            "operator": "ct_sparse",
            "operator_params": json.dumps({"views": 8, "noise_std": 0.02}),
        },
    )
    r = invoke("solve", again, "--out", tmp_path / "again_out.h5", *FAST)
    assert r.exit_code == 0, r.output


def test_noiseless_masking_keeps_observed_pixels(tmp_path, truth64):
    src = write(tmp_path / "in.h5", image=truth64[:1])
    out = tmp_path / "o.h5"
    r = invoke(
        "solve",
        "--operator",
        "masking",
        "--fraction",
        "0.7",
        "--noise-std",
        "0",
        "--simulate",
        src,
        "--strategy",
        "replacement",
        "--out",
        out,
        *FAST,
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        y, x = f["measurement"][:], f["samples"][:]
    observed = y != 0
    for k in range(x.shape[1]):
        np.testing.assert_array_equal(x[:, k][observed], y[observed])


def test_two_operators_and_several_inputs(tmp_path, truth64):
    for k in range(2):
        write(tmp_path / f"in{k}.h5", image=truth64[k : k + 1])
    (tmp_path / "outs").mkdir()
    r = invoke(
        "solve",
        "--operator",
        "ct_sparse",
        "--views",
        "8",
        "--operator",
        "masking",
        "--fraction",
        "0.9",
        "--simulate",
        tmp_path / "in0.h5",
        tmp_path / "in1.h5",
        "--out",
        tmp_path / "outs",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    for k in range(2):
        with h5py.File(tmp_path / "outs" / f"in{k}_invdiff.h5") as f:
            assert set(f["measurements"]) == {"ct_sparse", "masking"}


def test_fastmri_layout(tmp_path, truth64):
    # A synthetic single-coil file in the fastMRI layout: 96 x 80 k-space of a padded phantom.
    img = np.zeros((1, 96, 80), np.float32)
    img[:, 16:80, 8:72] = truth64[0, 0]
    k = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    mask = np.zeros(80, np.float32)
    mask[::4] = 1
    mask[36:44] = 1
    k = (k * mask).astype(np.complex64)
    src = write(tmp_path / "file1000.h5", kspace=k, mask=mask, attrs={"acquisition": "CORPD_FBK"})
    r = invoke("solve", src, "--out", tmp_path / "o.h5", *FAST)
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["input_format"] == "fastmri" and f["reconstruction"].shape == (1, 1, 64, 64)


# Bad input: one line, exit 2, nothing written --------------------------------------------------


def test_bad_inputs(tmp_path, truth64):
    out = tmp_path / "o.h5"
    ok = write(tmp_path / "ok.h5", image=truth64[:1])
    ct = ["--image-size", "64", "--operator", "ct_sparse", "--views", "23"]
    cases = [
        (["solve", *ct, tmp_path / "missing.h5"], ["not found"]),
        (["solve", *ct, write(tmp_path / "empty.h5", other=np.zeros(3))], ["/measurement"]),
        (
            [
                "solve",
                *ct,
                "--simulate",
                write(tmp_path / "m.h5", measurement=np.zeros((1, 1, 23, 91))),
            ],
            ["/image"],
        ),
        (
            ["solve", *ct, write(tmp_path / "shape.h5", measurement=np.zeros((1, 1, 20, 91)))],
            ["shape", "--views"],
        ),
        (
            [
                "solve",
                *ct,
                "--simulate",
                write(tmp_path / "size.h5", image=np.zeros((1, 1, 32, 32))),
            ],
            ["--image-size 64 disagrees", "32 x 32"],
        ),
        (
            ["solve", *ct, write(tmp_path / "nan.h5", measurement=np.full((1, 1, 23, 91), np.nan))],
            ["NaN"],
        ),
        (
            [
                "solve",
                "--image-size",
                "64",
                "--operator",
                "mri",
                write(tmp_path / "real.h5", measurement=np.zeros((1, 1, 64, 64))),
            ],
            ["complex"],
        ),
        (["solve", "--operator", "ct_sprase", ok], ["unknown operator", "ct_sparse"]),
        (["solve", "--operator", "ct_sparse", "--vews", "3", ok], ["no option --vews", "--views"]),
        (["solve", "--operator", "ct_sparse", "--views", "many", ok], ["takes a int"]),
        (["solve", *ct, "--simulate", ok, "--strategy", "magic"], ["--strategy"]),
        (["solve", *ct, "--simulate", ok, "--strategy", "dps", "--lambda", "1"], ["--lambda"]),
        (["solve", *ct, "--simulate", ok, "--kappa", "0.5"], ["--kappa", "[1, 100]"]),
        (["solve", *ct, "--simulate", ok, "--relax", "2.5"], ["--relax", "(0, 2]"]),
        (["solve", *ct, "--simulate", ok, "--strategy", "dps", "--relax", "1"], ["--relax"]),
        (["solve", *ct, "--simulate", ok, "--strategy", "dps", "--kappa", "2"], ["--kappa"]),
        (["solve", ok], ["--operator"]),
        (
            [
                "solve",
                *ct,
                "--simulate",
                ok,
                "--model",
                write(tmp_path / "notmodel.h5", x=np.zeros(2)),
            ],
            ["corrupt"],
        ),
    ]
    (tmp_path / "garbage.h5").write_text("not hdf5")
    cases.append((["solve", *ct, tmp_path / "garbage.h5"], ["not a readable HDF5"]))
    for args, words in cases:
        assert_user_error(invoke(*args, "--out", out, "--no-progress"), *words)
        assert not out.exists()
    out.write_bytes(b"keep me")
    assert_user_error(invoke("solve", *ct, "--simulate", ok, "--out", out), "exists", "--force")
    assert out.read_bytes() == b"keep me"
    assert_user_error(invoke("solve", *ct, "--simulate", ok, "--out", ok), "input")


def test_torchrun_splits_inputs_over_processes(tmp_path, tiny_model):
    import os
    import subprocess
    import sys

    images = make_phantoms(3, 16, seed=2)[0]
    srcs = [write(tmp_path / f"in{k}.h5", image=images[k : k + 1]) for k in range(3)]
    (tmp_path / "outs").mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "invdiff", "solve", "--model", tiny_model, "--operator", "masking", "--simulate"]
    cmd += [*map(str, srcs), "--out", str(tmp_path / "outs"), "--steps", "3", "--samples", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "--no-progress"], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == [
        f"in{k}_invdiff.h5" for k in range(3)
    ]


def test_torchrun_process_checks_only_its_own_outputs(tmp_path):
    # A fast process may have written its first output before a slow one starts checking: the
    # slow one must not take that file for the user's (the race that failed CI once).
    from invdiff.cli.solve import _outputs
    from invdiff.errors import InvdiffError

    srcs = [write(tmp_path / f"in{k}.h5", image=np.zeros((1, 16, 16))) for k in range(3)]
    (tmp_path / "outs").mkdir()
    (tmp_path / "outs" / "in0_invdiff.h5").write_bytes(b"written by rank 0")
    model = tmp_path / "model.pt"
    paths = _outputs(srcs, tmp_path / "outs", None, False, model, rank=1, world=2)
    assert [p.name for p in paths] == [f"in{k}_invdiff.h5" for k in range(3)]
    with pytest.raises(InvdiffError, match="exists"):
        _outputs(srcs, tmp_path / "outs", None, False, model, rank=0, world=2)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, invdiff, invdiff.cli; print('astra' in sys.modules, 'h5py' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr


def test_lodopab_layout_takes_geometry_from_options(tmp_path, truth64):
    # LoDoPaB-CT stores only `data` (N x views x detectors); the geometry comes from the options.
    import torch
    from invdiff_operators.ct_sparse import CTSparse

    op = CTSparse((1, 64, 64), views=23, detectors=91, noise_std=0.0)
    sino = op(torch.as_tensor(truth64[:1]))[:, 0].numpy()
    src = write(tmp_path / "observation_test_000.hdf5", data=sino)
    args = ["solve", "--image-size", "64", "--operator", "ct_sparse", "--views", "23"]
    args += ["--detectors", "91", src]
    r = invoke(*args, "--out", tmp_path / "o.h5", *FAST)
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["input_format"] == "lodopab" and f["reconstruction"].shape == (1, 1, 64, 64)
    r = invoke(
        "solve",
        "--image-size",
        "64",
        "--operator",
        "ct_sparse",
        "--views",
        "30",
        src,
        "--out",
        tmp_path / "p.h5",
    )
    assert_user_error(r, "shape", "--views")


def test_operator_options_are_typed_by_one_rule_from_the_command_line_and_from_files():
    from pathlib import Path

    from invdiff.cli._options import file_params, parse_extra
    from invdiff.errors import InvdiffError
    from invdiff.plugins import build_registry, make_plugin_manager

    registry = build_registry(make_plugin_manager())
    words = ["--operator", "mri", "--acceleration=8", "--noise-std", "0", "a.h5"]
    specs, inputs = parse_extra(
        [*words, "--operator", "masking", "--mask", "box", "b.h5"], registry
    )
    assert [(s.name, s.params) for s in specs] == [
        ("mri", {"acceleration": 8, "noise_std": 0.0}),
        ("masking", {"mask": "box"}),
    ]
    assert inputs == [Path("a.h5"), Path("b.h5")]
    mri = registry["mri"]
    assert file_params(mri, {"acceleration": 8, "noise_std": 0}, "f.h5") == {
        "acceleration": 8,
        "noise_std": 0.0,  # an int serves for a float
    }
    refused = [
        (lambda: parse_extra(["--operator", "mri", "--mask", "star"], registry), "one of"),
        (lambda: parse_extra(["--views", "3"], registry), "after --operator"),
        (lambda: parse_extra(["--operator", "mri", "--acceleration"], registry), "needs a value"),
        (lambda: file_params(mri, {"acceleration": "8"}, "f.h5"), "must be a int"),  # no parsing
        (lambda: file_params(mri, {"acceleration": True}, "f.h5"), "must be a int"),
        (lambda: file_params(mri, {"mask": "star"}, "f.h5"), "one of"),
    ]
    for call, word in refused:
        with pytest.raises(InvdiffError, match=word):
            call()


def test_png_preview_has_titled_columns_and_a_colour_bar(tmp_path, tiny_model):
    """--png: truth, baseline, reconstruction, std (colour map and bar), |error|; one row per
    slice, titles above (drawn without matplotlib)."""
    import imageio.v3 as iio

    from invdiff.images import MIN_COLUMN, PAD, TITLE_H, preview_columns

    images = make_phantoms(2, 16, seed=4)[0]
    src = write(tmp_path / "in.h5", image=images)
    out, png = tmp_path / "o.h5", tmp_path / "o.png"
    args = ["--model", tiny_model, "--operator", "masking", "--simulate", src, "-o", out]
    r = invoke("solve", *args, "--png", png, "--steps", "2", "--samples", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    picture = iio.imread(png).astype(float) / 255
    tile = 16 * max(2, -(-MIN_COLUMN // 16))
    with h5py.File(out) as f:
        mean, baseline, std = f["reconstruction"][:], f["baseline"][:], f["std"][:]
        cols, top = preview_columns(mean, images, baseline, std, f.attrs["baseline"])
    titles = ["truth", "biharmonic", "reconstruction", "std", "|error|"]
    assert [title for title, _ in cols] == titles
    assert picture.shape[0] == TITLE_H + 2 * (tile + PAD)  # one row per slice
    assert picture.shape[1] > PAD + 5 * (tile + PAD)  # five columns, then the colour bar
    for j in range(5):  # every column has a title: dark pixels in the band above it
        x = PAD + j * (tile + PAD)
        assert picture[:TITLE_H, x : x + tile].min() < 0.5, j
    x = PAD + 3 * (tile + PAD)  # std: in colour; the images are grey
    std_tile = picture[TITLE_H : TITLE_H + tile, x : x + tile]
    assert np.ptp(std_tile, axis=-1).max() > 0.2 and top > 0
    bar = picture[TITLE_H : TITLE_H + tile, PAD + 5 * (tile + PAD) + PAD]
    assert np.ptp(bar, axis=-1).max() > 0.2  # the colour bar
    truth = picture[TITLE_H : TITLE_H + tile, PAD : PAD + tile]
    assert np.ptp(truth, axis=-1).max() < 1e-6


def test_fast_setting_starts_from_the_baseline_and_is_recorded(tmp_path, truth64):
    """--steps 49 --sigma-start 1 (the fast setting): 50 NFE, recorded in the output."""
    src = write(tmp_path / "in.h5", image=truth64[:1])
    out = tmp_path / "out.h5"
    args = ["--samples", "1", "--no-progress", "--image-size", "64", "--steps", "9"]
    r = invoke(
        "solve",
        "--operator",
        "ct_sparse",
        "--simulate",
        src,
        "-o",
        out,
        *args,
        "--sigma-start",
        "1",
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        assert json.loads(f.attrs["strategy_options"])["sigma_start"] == 1.0
        assert int(f.attrs["nfe_per_sample"]) == 10
        assert f["metrics/invdiff_psnr"][0] > f["metrics/baseline_psnr"][0]


def test_tv_term_is_applied_recorded_and_refused_where_the_strategy_has_none(tmp_path, truth64):
    """--tv 1 changes the DiffPIR solve and is recorded; a strategy without the knob refuses it
    in one line before any work."""
    src = write(tmp_path / "in.h5", image=truth64[:1])
    args = ["--samples", "1", "--no-progress", "--image-size", "64", "--steps", "4"]
    images = {}
    for tv in ("0", "1"):
        out = tmp_path / f"tv{tv}.h5"
        r = invoke("solve", "--operator", "mri", "--simulate", src, "-o", out, *args, "--tv", tv)
        assert r.exit_code == 0, r.output
        with h5py.File(out) as f:
            assert json.loads(f.attrs["strategy_options"])["tv"] == float(tv)
            images[tv] = f["samples"][()]
    assert not np.allclose(images["0"], images["1"])
    out = tmp_path / "dps.h5"
    r = invoke(
        "solve",
        "--operator",
        "mri",
        "--simulate",
        src,
        "-o",
        out,
        "--strategy",
        "dps",
        *args,
        "--tv",
        "1",
    )
    assert r.exit_code != 0 and "--tv" in r.output and not out.exists()
