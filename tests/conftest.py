"""Shared fixtures: tiny data sets and a tiny trained model, made once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def gen() -> torch.Generator:
    """One seeded CPU generator per test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """32 phantoms of 16 x 16 written by the CLI's own writer."""
    from invdiff.data.phantoms import make_phantoms
    from invdiff.io import write_datasets

    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    images, labels = make_phantoms(32, 16, seed=0)
    write_datasets(path, {"images": images, "labels": labels}, {"seed": 0})
    return str(path)


TINY_NET = ["--base", "8", "--mult", "1,2", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_data) -> str:
    """A tiny score model trained for a few steps through the CLI (not meant to be good)."""
    from typer.testing import CliRunner

    from invdiff.cli import app

    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    args = ["train", tiny_data, "--out", str(out), "--steps", "4", "--batch-size", "4"]
    result = CliRunner().invoke(app, [*args, "--ckpt-every", "2", *TINY_NET])
    assert result.exit_code == 0, result.output
    return str(out)
