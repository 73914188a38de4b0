"""The data / train / sample commands on tiny sizes, and their one-line errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests._cli_helpers import assert_user_error, invoke


def test_data_phantoms_layout_and_seeds(tmp_path):
    r = invoke("data", "phantoms", tmp_path / "a.h5", "--n", 6, "--size", 32, "--seed", 2)
    assert r.exit_code == 0, r.output
    r = invoke("data", "phantoms", tmp_path / "b.h5", "--n", 3, "--size", 32, "--seed", 2)
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a["images"].shape == (6, 1, 32, 32) and a["labels"].shape == (6,)
        assert a["images"].dtype == np.float32 and a.attrs["seed"] == 2
        np.testing.assert_array_equal(a["images"][:3], b["images"][:])  # image k: seed, k only
        assert 0 <= a["images"][:].min() and a["images"][:].max() <= 1


def test_data_refuses_to_overwrite(tmp_path):
    (tmp_path / "a.h5").write_bytes(b"precious")
    assert_user_error(invoke("data", "phantoms", tmp_path / "a.h5", "--n", 2), "exists", "--force")
    assert (tmp_path / "a.h5").read_bytes() == b"precious"


def test_sample_writes_hdf5_png_and_counts_nfe(tiny_model, tmp_path):
    out, png = tmp_path / "s.h5", tmp_path / "s.png"
    r = invoke(
        "sample",
        "--model",
        tiny_model,
        "--samples",
        3,
        "--steps",
        5,
        "--out",
        out,
        "--png",
        png,
        "--no-progress",
        "--threads",
        1,
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        assert f["samples"].shape == (3, 1, 16, 16)
        assert f.attrs["nfe"] == 5 * 2 + 1  # predictor + Langevin per step, one denoising
        assert len(f.attrs["model_sha256"]) == 64
        # The final Tweedie step of the clipped prior lands in the data range (up to rounding).
        clipped = f["samples"][...]
        assert f.attrs["clip_denoised"] and -1e-6 <= clipped.min() <= clipped.max() <= 1 + 1e-6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = tmp_path / "raw.h5"
    args = ["--model", tiny_model, "--samples", 3, "--steps", 5, "--out", raw, "--no-progress"]
    r = invoke("sample", *args, "--threads", 1, "--no-clip")
    assert r.exit_code == 0, r.output
    with h5py.File(raw) as f:
        assert not f.attrs["clip_denoised"] and not np.allclose(f["samples"][...], clipped)


@pytest.mark.parametrize("sampler", ["pc", "ode-heun"])
def test_sample_k_depends_on_seed_k_not_batch(tiny_model, tmp_path, sampler):
    common = ["--model", tiny_model, "--steps", 4, "--sampler", sampler, "--no-progress"]
    assert (
        invoke(
            "sample", *common, "--samples", 3, "--batch-size", 3, "--out", tmp_path / "a.h5"
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "sample", *common, "--samples", 3, "--batch-size", 2, "--out", tmp_path / "b.h5"
        ).exit_code
        == 0
    )
    r = invoke("sample", *common, "--samples", 1, "--seed", 2, "--out", tmp_path / "c.h5")
    assert r.exit_code == 0, r.output
    with (
        h5py.File(tmp_path / "a.h5") as a,
        h5py.File(tmp_path / "b.h5") as b,
        h5py.File(tmp_path / "c.h5") as c,
    ):
        np.testing.assert_allclose(
            a["samples"][:], b["samples"][:], rtol=1e-4, atol=1e-5
        )  # the 4-step tiny model is far from converged
        np.testing.assert_allclose(
            a["samples"][2:], c["samples"][:], rtol=1e-4, atol=1e-5
        )  # the 4-step tiny model is far from converged


def test_sample_rk45(tiny_model, tmp_path):
    r = invoke(
        "sample",
        "--model",
        tiny_model,
        "--samples",
        1,
        "--sampler",
        "ode-rk45",
        "--rtol",
        1e-2,
        "--out",
        tmp_path / "r.h5",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output


def test_sample_errors(tiny_model, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "o.h5"
    assert_user_error(invoke("sample", "--model", bad, "--out", out), "corrupt")
    assert_user_error(
        invoke("sample", "--model", tmp_path / "missing.pt", "--out", out), "not found"
    )
    assert_user_error(
        invoke("sample", "--model", tiny_model, "--sampler", "magic", "--out", out), "--sampler"
    )
    out.write_bytes(b"keep")
    assert_user_error(invoke("sample", "--model", tiny_model, "--out", out), "exists")
    assert out.read_bytes() == b"keep"
    assert_user_error(invoke("sample", "--device", "cuda:0", "--out", tmp_path / "x.h5"), "CUDA")


def test_train_rejects_bad_data(tmp_path):
    out = tmp_path / "m.pt"
    (tmp_path / "text.h5").write_text("hello")
    assert_user_error(invoke("train", tmp_path / "text.h5", "--out", out), "HDF5")
    assert_user_error(invoke("train", tmp_path / "none.h5", "--out", out), "not found")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["pictures"] = np.zeros((2, 16, 16), np.float32)
    assert_user_error(invoke("train", tmp_path / "other.h5", "--out", out), "/images")
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        x = np.zeros((2, 16, 16), np.float32)
        x[0, 3, 3] = np.nan
        f["images"] = x
    assert_user_error(invoke("train", tmp_path / "nan.h5", "--out", out), "NaN")
    with h5py.File(tmp_path / "range.h5", "w") as f:
        f["images"] = np.full((2, 16, 16), 255.0, np.float32)
    assert_user_error(invoke("train", tmp_path / "range.h5", "--out", out), "[0, 1]")
    assert not out.exists()


def test_default_model_is_used_without_model(tmp_path):
    from invdiff.core.checkpoint import default_model_path

    if not default_model_path().exists():
        pytest.skip("no shipped model in this checkout")
    r = invoke("sample", "--samples", 1, "--steps", 2, "--out", tmp_path / "d.h5", "--no-progress")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["samples"].shape == (1, 1, 64, 64)  # any-size default model: 64 by default


def test_old_option_spellings_still_work_with_a_note(tiny_model, tmp_path):
    """Renamed options keep their old spelling for a release: sample --n (now --samples)."""
    old = ["--n", 1]
    r = invoke("sample", "--model", tiny_model, *old, "--steps", 2, "-o", tmp_path / "s.h5")
    assert r.exit_code == 0, r.output
    assert "--n is deprecated" in r.stderr and "use --samples" in r.stderr
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["samples"].shape[0] == 1


# Help and flags --------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["sample"],
    ["solve"],
    ["train"],
    ["train-classifier"],
    ["data", "phantoms"],
    ["data", "photos"],
    ["data", "ellipses"],
    ["data", "mni152"],
    ["operators", "list"],
    ["operators", "check"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "invdiff" for c in COMMANDS])
def test_flags_show_no_value_in_help(command):
    """A flag (--force, --progress/--no-progress, --help) takes no value, and --help says so."""
    from typer.testing import CliRunner

    from invdiff.cli import app

    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and "--help" in r.output


@pytest.mark.parametrize(
    "words,named",
    [
        (["--force", "true"], "true"),
        (["--force=true"], "--force"),
        (["--progress=no"], "--progress"),
    ],
)
def test_a_flag_given_a_value_is_a_one_line_error(words, named, tmp_path):
    assert_user_error(invoke("sample", "-o", tmp_path / "s.h5", *words), named)
    assert not (tmp_path / "s.h5").exists()


def test_shared_options_are_defined_once():
    """--batch-size, --device, --threads, --force and --progress read the same everywhere."""
    import typer
    import typer.main

    from invdiff.cli import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    helps: dict[str, set] = {}
    for name in ("sample", "solve", "train", "train-classifier"):
        for p in root.get_command(ctx, name).params:
            if p.name in ("batch_size", "device", "threads", "force", "progress"):
                helps.setdefault(p.name, set()).add((tuple(p.opts), p.help))
    assert set(helps) == {"batch_size", "device", "threads", "force", "progress"}
    assert all(len(v) == 1 for v in helps.values()), helps


def test_solve_help_shows_inputs_and_every_operator_option():
    from typer.testing import CliRunner

    from invdiff.cli import app
    from invdiff.plugins import build_registry, make_plugin_manager

    r = CliRunner().invoke(app, ["solve", "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "--operator NAME" in text and "INPUT.h5" in text
    for entry in build_registry(make_plugin_manager()).values():
        assert f"{entry.name}: " in text
        for p in entry.params:
            assert p.option in text, (entry.name, p.option)
    assert "--views INT (default 23)" in text


def test_errors_name_options_not_python_names(tmp_path):
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["image"] = np.zeros((1, 1, 16, 16), np.float32)
    base = ["solve", "--operator", "masking", "--simulate", src, "-o", tmp_path / "o.h5"]
    for extra, word in (
        (["--strategy", "dps", "--cg-iters", "3"], "--cg-iters"),
        (["--strategy", "projection", "--lambda", "3"], "--lambda"),
        (["--strategy", "dps", "--lambda", "1"], "--lambda"),
    ):
        r = invoke(*base, *extra)
        assert_user_error(r, word)
        assert "cg_iters" not in r.output and "lam " not in r.output
