"""Bad options and paths across train, train-classifier, data, solve and sample: one-line errors
(exit 2) before any work, nothing overwritten. A first slice of issue 18's fuzz matrix."""

from __future__ import annotations

import hashlib

import pytest

from tests._cli_helpers import assert_user_error, invoke

BAD_TRAIN = [
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--steps", "1000000000000"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--ema-decay", "2"], "--ema-decay"),
    (["--ckpt-every", "0"], "--ckpt-every"),
    (["--sigma-max", "-3"], "--sigma-max"),
    (["--sigma-min", "0"], "--sigma-min"),
    (["--threads", "-1"], "--threads"),
    (["--device", "nonsense"], "--device"),
    (["--crop", "-4"], "--crop"),
    (["--zoom-max", "0.5"], "--zoom-max"),
    (["--p-std", "0"], "--p-std"),
    (["--warmup", "-1"], "--warmup"),
    (["--base", "0"], "--base"),
    (["--precond", "magic"], "--precond"),
]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("extra,word", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_options_are_one_line_errors(extra, word, tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    assert_user_error(invoke("train", tiny_data, "--out", out, "--no-progress", *extra), word)
    assert not out.exists()


def test_train_never_overwrites_its_data_or_a_model_without_force(tiny_data, tmp_path):
    from pathlib import Path

    data = Path(tiny_data)
    before = _digest(data)
    assert_user_error(invoke("train", data, "--out", data), "input file")
    assert _digest(data) == before
    model = tmp_path / "model.pt"
    model.write_bytes(b"user's model")
    assert_user_error(invoke("train", data, "--out", model), "--force")
    assert model.read_bytes() == b"user's model"
    assert_user_error(invoke("train", data, "--out", tmp_path / "no" / "m.pt"), "does not exist")


def test_train_classifier_refuses_bad_options_and_overwrites(tiny_data, tmp_path):
    out = tmp_path / "c.pt"
    assert_user_error(invoke("train-classifier", tiny_data, "--out", out, "--lr", "-1"), "--lr")
    assert_user_error(invoke("train-classifier", tiny_data, "--out", tiny_data), "input file")
    out.write_bytes(b"keep")
    assert_user_error(invoke("train-classifier", tiny_data, "--out", out), "--force")
    assert out.read_bytes() == b"keep"


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("invdiff ")


BAD_DATA = [
    (["ellipses", "--size", "200000"], "--size"),
    (["ellipses", "--seed", "-1"], "--seed"),
    (["ellipses", "--n", "0"], "--n"),
    (["deadleaves", "--n", "1000000", "--size", "4096"], "GiB"),
    (["phantoms", "--seed", "-1"], "--seed"),
    (["phantoms", "--size", "8"], "--size"),
    (["foam", "--size", "99999"], "--size"),
    (["textures", "--n", "-3"], "--n"),
]


@pytest.mark.parametrize("args,word", BAD_DATA, ids=[" ".join(a) for a, _ in BAD_DATA])
def test_bad_data_requests_are_one_line_errors_before_allocating(args, word, tmp_path):
    out = tmp_path / "d.h5"
    assert_user_error(invoke("data", args[0], out, *args[1:]), word)
    assert not out.exists()


BAD_SAMPLING = [
    (["--steps", "1000000000000"], "--steps"),
    (["--seed", "-1"], "--seed"),
    (["--zeta", "nan"], "--zeta"),
    (["--lambda", "-1"], "--lambda"),
    (["--lambda", "inf"], "--lambda"),
    (["--strategy", "projection", "--snr", "nan"], "--snr"),
    (["--strategy", "projection", "--snr", "-1"], "--snr"),
    (["--image-size", "0"], "--image-size"),
    (["--samples", "0"], "--samples"),
]


@pytest.mark.parametrize("extra,word", BAD_SAMPLING, ids=[" ".join(a) for a, _ in BAD_SAMPLING])
def test_bad_solve_knobs_are_one_line_errors_before_sampling(extra, word, tmp_path):
    import h5py
    import numpy as np

    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["image"] = np.zeros((1, 1, 16, 16), np.float32)
    before = _digest(src)
    out = tmp_path / "o.h5"
    args = ["solve", "--operator", "masking", "--simulate", src, "--out", out, *extra]
    assert_user_error(invoke(*args), word)
    assert not out.exists() and _digest(src) == before


BAD_SAMPLE = [
    (["--snr", "-1"], "--snr"),
    (["--snr", "nan"], "--snr"),
    (["--corrector-steps", "-1"], "--corrector-steps"),
    (["--rtol", "0"], "--rtol"),
    (["--seed", "-5"], "--seed"),
    (["--image-size", "5"], "--image-size"),
]


@pytest.mark.parametrize("extra,word", BAD_SAMPLE, ids=[" ".join(a) for a, _ in BAD_SAMPLE])
def test_bad_sample_options_are_one_line_errors(extra, word, tmp_path):
    out = tmp_path / "s.h5"
    assert_user_error(invoke("sample", "--out", out, "--no-progress", *extra), word)
    assert not out.exists()


def _h5(path, attrs=None, **datasets):
    import h5py

    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if isinstance(value, str) and value == "GROUP":
                f.create_group(name)
            else:
                f[name] = value
        f.attrs.update(attrs or {})
    return path


def _bad_files():
    import numpy as np

    y = np.zeros((1, 1, 23, 91), np.float32)
    ct = {"operator": "ct_sparse"}
    return [
        ("string_image", {"image": np.array([b"abc"])}, "not numbers"),
        ("group_image", {"image": "GROUP"}, "group"),
        ("empty_image", {"image": np.zeros((0, 1, 16, 16), np.float32)}, "empty"),
        ("complex_image", {"image": np.ones((1, 1, 16, 16), np.complex64)}, "complex"),
        ("params_list", {"measurement": y, "attrs": {**ct, "operator_params": "[1, 2]"}}, "JSON"),
        ("params_text", {"measurement": y, "attrs": {**ct, "operator_params": "{no"}}, "JSON"),
        (
            "params_type",
            {"measurement": y, "attrs": {**ct, "operator_params": '{"views": "x"}'}},
            "views must be a int",
        ),
        (
            "params_name",
            {"measurement": y, "attrs": {**ct, "operator_params": '{"viewz": 3}'}},
            "does not take",
        ),
        ("operator_int", {"measurement": y, "attrs": {"operator": 5}}, "operator name"),
        ("string_measurement", {"measurement": np.array([b"x"])}, "not numbers"),
        ("measurements_dataset", {"measurements": np.zeros(3)}, "group of datasets"),
    ]


@pytest.mark.parametrize("case", _bad_files(), ids=[c[0] for c in _bad_files()])
def test_malformed_hdf5_inputs_are_one_line_errors(case, tmp_path):
    name, content, word = case
    content = dict(content)
    src = _h5(tmp_path / f"{name}.h5", content.pop("attrs", None), **content)
    before = _digest(src)
    out = tmp_path / "o.h5"
    args = ["--simulate", "--operator", "masking"] if "image" in content else []
    assert_user_error(invoke("solve", "--image-size", "64", *args, src, "-o", out), word)
    assert not out.exists() and _digest(src) == before


@pytest.mark.parametrize(
    "content,word",
    [
        ({"images": "GROUP"}, "group"),
        ({"images": __import__("numpy").zeros((0, 1, 16, 16), "float32")}, "empty"),
        ({"images": __import__("numpy").array([b"abc"])}, "not numbers"),
    ],
    ids=["group", "empty", "strings"],
)
def test_malformed_training_files_are_one_line_errors(content, word, tmp_path):
    src = _h5(tmp_path / "train.h5", **content)
    out = tmp_path / "m.pt"
    assert_user_error(invoke("train", src, "-o", out, "--steps", "1", "--no-progress"), word)
    assert not out.exists()
