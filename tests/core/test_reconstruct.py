"""The one reconstruction core: `invdiff solve` and `invdiff sample` give bit-identical samples
to a direct call, and a sample does not depend on the batch it is drawn in."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from invdiff.core.checkpoint import load_model
from invdiff.core.reconstruct import reconstruct, sample_prior, sample_seed
from invdiff.core.score import data_range_prior
from invdiff.plugins import build_registry, make_plugin_manager
from tests._cli_helpers import invoke


def test_cli_and_core_give_bit_identical_samples(tiny_model, tmp_path):
    truth = np.random.default_rng(0).uniform(size=(2, 1, 16, 16)).astype(np.float32)
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["image"] = truth
    out = tmp_path / "out.h5"
    args = ["--operator", "masking", "--fraction", "0.5", "--simulate", str(src)]
    opts = ["--steps", "4", "--samples", "3", "--batch-size", "4", "--seed", "7"]
    r = invoke("solve", *args, "--model", tiny_model, "--out", out, *opts, "--no-progress")
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        cli = f["samples"][:]
        y = torch.as_tensor(f["measurement"][:])
        nfe = int(f.attrs["nfe_per_sample"])
    model, config = load_model(tiny_model)
    op = build_registry(make_plugin_manager())["masking"].create((1, 16, 16), fraction=0.5)
    prior = data_range_prior(model, config, clip=True)
    for batch in (1, 5):  # other batchings than the CLI's 4: same samples
        rec = reconstruct(
            prior, model.sde, [op], [y], options={"steps": 4}, samples=3, seed=7, batch_size=batch
        )
        np.testing.assert_array_equal(rec.samples.numpy(), cli)
        assert rec.nfe_per_sample == nfe == 5  # DiffPIR: steps + 1
    assert sample_seed(7, 1, 3, 2) == 7 + 1 * 3 + 2


@pytest.mark.parametrize("sampler", ["pc", "ode-heun"])
def test_sample_cli_and_core_give_bit_identical_samples(tiny_model, tmp_path, sampler):
    import functools

    from invdiff.core import samplers

    out = tmp_path / "s.h5"
    opts = ["--samples", "3", "--steps", "3", "--seed", "5", "--batch-size", "2", "--no-progress"]
    r = invoke("sample", "--model", tiny_model, "--sampler", sampler, "-o", out, *opts)
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        cli, nfe = f["samples"][:], int(f.attrs["nfe"])
    model, config = load_model(tiny_model)
    prior = data_range_prior(model, config, clip=True)
    if sampler == "pc":
        corrector = samplers.make_corrector("langevin")
        run = functools.partial(samplers.pc_sample, corrector=corrector, steps=3)
    else:
        run = functools.partial(samplers.heun_ode_sample, steps=3)
    for batch in (1, 3):
        rec = sample_prior(
            lambda gens: run(prior, model.sde, (1, 16, 16), gens),
            (1, 16, 16),
            samples=3,
            seed=5,
            batch_size=batch,
        )
        np.testing.assert_array_equal(rec.samples[0].numpy(), cli)  # sample k: seed + k
        assert rec.nfe_per_sample * 2 == nfe  # the CLI counts its 2 batches together
        assert rec.nfe_total == rec.nfe_per_sample * -(-3 // batch)


class Exponential(__import__("invdiff.core.operator", fromlist=["Operator"]).Operator):
    """A non-linear operator, y = exp(-x) (Beer-Lambert with the identity as projector)."""

    name = "exponential"

    def forward(self, x):
        self.check_input(x)
        return torch.exp(-x)


def test_strategies_check_their_needs_before_sampling_and_dps_takes_non_linear_operators(
    tiny_model,
):
    model, config = load_model(tiny_model)
    prior = data_range_prior(model, config, clip=True)
    op = Exponential((1, 16, 16))
    y = op.measure(torch.full((1, 1, 16, 16), 0.5), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="not linear; use --strategy dps"):
        reconstruct(prior, model.sde, [op], [y])
    rec = reconstruct(prior, model.sde, [op], [y], strategy="dps", options={"steps": 3})
    assert rec.samples.shape == (1, 1, 1, 16, 16) and torch.isfinite(rec.samples).all()
    assert op.baseline(y) is None  # no classical method: solve then writes none
    masking = build_registry(make_plugin_manager())["masking"].create((1, 16, 16), noise_std=0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        reconstruct(prior, model.sde, [masking], [masking(y)], strategy="diffpir")
    with pytest.raises(ValueError, match="exact pseudo-inverse"):
        ct = build_registry(make_plugin_manager())["ct_sparse"].create((1, 16, 16))
        reconstruct(prior, model.sde, [ct], [ct(y)], strategy="replacement")
