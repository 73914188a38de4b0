"""Time-conditional classifiers: likelihood scores, exact classifier guidance, CLI, checkpoints."""

from __future__ import annotations

import inspect
from typing import ClassVar

import h5py
import numpy as np
import pytest
import torch
from invdiff_operators.classifier import Classifier

from invdiff.cli import app
from invdiff.core.operator import Operator
from invdiff.core.samplers import generators_for
from invdiff.core.score import GaussianScore
from invdiff.core.sde import VESDE
from invdiff.errors import InvdiffError
from invdiff.guidance import ClassifierGuidedScore, Measurement, resolved_options, solve
from invdiff.guidance.strategies import solve_prior
from invdiff.testing import check_operator
from invdiff.training.classifier import load_classifier
from tests._cli_helpers import assert_user_error, runner

# Two-Gaussian toy: x_0 ~ 1/2 N(m_0, s^2 I) + 1/2 N(m_1, s^2 I) in R^2 (images of shape 1 x 1 x 2).
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
S = 0.5


def component_logits(sde, x, t):
    """log N(x; alpha_t m_c, v_t I) + const for each class c; v_t = alpha_t^2 s^2 + sigma_t^2."""
    alpha, sigma = sde.coefficients(t)
    v = alpha**2 * S**2 + sigma**2
    d = x.flatten(1)[:, None, :] - alpha[:, None, None] * MEANS[None]
    return -0.5 * d.pow(2).sum(-1) / v[:, None]


class MixtureScore:
    """Exact score of the diffused two-Gaussian mixture: grad logsumexp of the components."""

    def __init__(self, sde):
        self.sde = sde

    def score(self, x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = torch.logsumexp(component_logits(self.sde, xg, t), 1)
            return torch.autograd.grad(lp.sum(), xg)[0]


class ExactClassifier(Operator):
    """The exact p_t(c | x_t) of the mixture (equal weights): a softmax of the components."""

    name: ClassVar[str] = "exact_classifier"
    time_conditional: ClassVar[bool] = True

    def __init__(self, sde):
        super().__init__((1, 1, 2))
        self.sde = sde

    def forward(self, x):
        return x.flatten(1)

    def log_likelihood_t(self, x, t, y):
        logp = torch.log_softmax(component_logits(self.sde, x, t), 1)
        return logp.gather(1, torch.as_tensor(y).reshape(-1, 1).expand(len(x), 1)).squeeze(1)

    def likelihood_score_t(self, x, t, y):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_likelihood_t(xg, t, y).sum(), xg)[0]


@pytest.fixture
def toy():
    sde = VESDE(0.01, 5.0)
    return sde, MixtureScore(sde), ExactClassifier(sde)


def _sample(prior, sde, op, label, seeds, weight=1.0):
    ms = [Measurement(op, torch.tensor([label]), weight)]
    like = torch.empty(0, dtype=torch.float64)
    gens = generators_for(seeds, "cpu")
    return solve(prior, sde, ms, gens, steps=100, snr=0.0, like=like).x.flatten(1)


def test_guided_score_is_the_exact_class_conditional_score(toy, gen):
    sde, prior, op = toy
    x = 3 * torch.randn(6, 1, 1, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(6, generator=gen, dtype=torch.float64)
    for c in (0, 1):
        guided = ClassifierGuidedScore(prior, sde, [Measurement(op, torch.tensor([c]))])
        want = GaussianScore(sde, MEANS[c], S**2 * torch.eye(2, dtype=torch.float64))
        torch.testing.assert_close(guided.score(x, t), want.score(x, t), rtol=1e-12, atol=1e-12)


def test_guided_sampling_recovers_the_class_conditional_distribution(toy):
    sde, prior, op = toy
    n = 1000
    for c in (0, 1):
        x = _sample(prior, sde, op, c, range(c * n, (c + 1) * n))
        # Seed by seed the same as sampling N(m_c, s^2 I) with its exact score (weight 0: no
        # classifier term), so only the sampler's own error remains.
        exact = GaussianScore(sde, MEANS[c], S**2 * torch.eye(2, dtype=torch.float64))
        ref = _sample(exact, sde, op, c, range(c * n, (c + 1) * n), weight=0.0)
        torch.testing.assert_close(x, ref, rtol=1e-9, atol=1e-9)
        # Moments: 5 standard errors plus the discretisation bias of 100 reverse-diffusion steps
        # measured with the exact score on 20 000 samples (/tmp script, VE 0.01..5): mean -0.020
        # on the +2 coordinate, variance +6 % (0.267 and 0.262 for 0.25).
        se_mean, se_var = S / n**0.5, S**2 * (2 / n) ** 0.5
        assert (x.mean(0) - MEANS[c]).abs().max() < 5 * se_mean + 0.03
        assert (x.var(0) - S**2).abs().max() < 5 * se_var + 0.025
    # Without guidance the same sampler draws the mixture: mean near (0, 0.5), not m_1.
    uncond = _sample(prior, sde, op, 1, range(200), weight=0.0)
    assert abs(float(uncond[:, 0].mean())) < 0.8


def test_scale_multiplies_the_classifier_gradient(gen):
    op = Classifier.example(gen).double()
    x = torch.rand(3, *op.image_shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    got = op.likelihood_score_t(x, t, torch.tensor([1, 2, 3]))
    want = op.scale * op.clf.input_gradient(x, t, torch.tensor([1, 2, 3]))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.abs().sum() > 0


def test_classifier_likelihood_score_matches_autograd():
    results = check_operator(Classifier, checks=["likelihood_score_t", "likelihood_score"])
    assert all(r.status == "pass" for r in results), [str(r) for r in results]


def test_guidance_refuses_a_classifier_of_another_sde(gen):
    op = Classifier.example(gen)
    with pytest.raises(ValueError, match="trained for the SDE"):
        ClassifierGuidedScore(
            MixtureScore(VESDE(0.01, 5.0)), VESDE(0.01, 5.0), [Measurement(op, 1)]
        )


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tiny_data, tiny_model):
    out = tmp_path_factory.mktemp("clf") / "clf.pt"
    args = ["train-classifier", tiny_data, "--model", tiny_model, "--out", str(out)]
    args += ["--steps", "3", "--batch-size", "4", "--base", "4", "--mult", "1,2"]
    result = runner.invoke(app, [*args, "--ckpt-every", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return str(out)


def test_train_classifier_cli_stores_the_sde_and_model_hash(tiny_classifier, tiny_model):
    from invdiff.core.checkpoint import file_sha256, load_model

    clf, config = load_classifier(tiny_classifier)
    _, model_config = load_model(tiny_model)
    assert config["sde"] == model_config["sde"]
    assert config["model"]["sha256"] == file_sha256(tiny_model)
    assert config["training"]["steps_done"] == 3 and clf.num_classes == 2
    x = torch.rand(2, 1, 16, 16)
    assert clf(x, torch.full((2,), 0.5)).shape == (2, 2)


def test_solve_with_a_lesion_hypothesis_end_to_end(tmp_path, tiny_classifier, tiny_model):
    from invdiff.data.phantoms import make_phantoms

    images, _ = make_phantoms(2, 16, seed=2)
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["image"] = images
    out = tmp_path / "out.h5"
    args = ["solve", "--model", tiny_model, "--operator", "masking", "--noise-std", "0"]
    args += ["--operator", "classifier", "--classifier", tiny_classifier, "--label", "1"]
    args += ["--scale", "2", "--simulate", "--strategy", "projection", "--steps", "3"]
    args += ["--samples", "1", "--no-progress", "--out", str(out), str(src)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        assert f["reconstruction"].shape == (2, 1, 16, 16)
        assert np.isfinite(f["reconstruction"][...]).all()
        np.testing.assert_array_equal(f["measurements/classifier"][...], [1, 1])


def test_class_conditional_sample_cli(tmp_path, tiny_classifier, tiny_model):
    """`invdiff sample --label c`: scale 0 reproduces the unconditional samples bit for bit (the
    guidance term is exactly zero), a positive scale changes them, and the run is recorded."""
    base = ["sample", "--model", tiny_model, "--samples", "2", "--steps", "3", "--no-progress"]
    base += ["--threads", "1", "--corrector", "none"]
    clf = ["--label", "1", "--classifier", tiny_classifier]
    runs = {"plain": [], "scale0": [*clf, "--scale", "0"], "scale50": [*clf, "--scale", "50"]}
    samples = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.h5"
        result = runner.invoke(app, [*base, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        with h5py.File(out) as f:
            samples[name] = f["samples"][...]
            if extra:
                assert f.attrs["label"] == 1 and len(f.attrs["classifier_sha256"]) == 64
    np.testing.assert_array_equal(samples["scale0"], samples["plain"])
    assert np.abs(samples["scale50"] - samples["plain"]).max() > 1e-4
    bad_label = ["--classifier", tiny_classifier, "--label", "7", "--out", str(tmp_path / "x.h5")]
    bad = runner.invoke(app, [*base, *bad_label])
    assert_user_error(bad, "--label 7 is not a class")
    assert not (tmp_path / "x.h5").exists()


def test_classifier_checkpoint_errors_are_one_line(
    tmp_path, tiny_data, tiny_model, tiny_classifier
):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (tmp_path / "missing.pt", "not found"),
        (garbage, "corrupt"),
        (tiny_model, "not an invdiff-classifier/1"),
    ]
    for path, words in cases:
        with pytest.raises(InvdiffError, match=words):
            load_classifier(path)
        base = ["solve", "--model", tiny_model, "--operator", "classifier"]
        result = runner.invoke(app, [*base, "--classifier", str(path), "--simulate", tiny_data])
        assert_user_error(result, words)
    # A classifier for another image size is refused before sampling.
    result = runner.invoke(
        app,
        [
            "solve",
            "--model",
            "phantom64",
            "--operator",
            "classifier",
            "--classifier",
            tiny_classifier,
            tiny_data,
        ],
    )
    assert_user_error(result, "trained on 1x16x16")
    result = runner.invoke(
        app, ["train-classifier", tiny_data, "--model", str(garbage), "--out", "x"]
    )
    assert_user_error(result, "corrupt")


@pytest.mark.skipif(
    __import__("invdiff.training.classifier")
    .training.classifier.default_classifier_path()
    .is_file(),
    reason="a lesion classifier is shipped",
)
def test_missing_shipped_classifier_is_a_one_line_error(tiny_data):
    result = runner.invoke(app, ["solve", "--operator", "classifier", "--simulate", tiny_data])
    assert_user_error(result, "no lesion classifier is shipped")


def test_paired_batches_share_time_and_noise_within_twins():
    from invdiff.training.classifier import diffuse_batch

    sde = VESDE(sigma_max=10.0)
    k = torch.arange(4.0).repeat_interleave(2) / 10  # pair k: constant images k/10, k/10 + 0.5
    images = (k + 0.5 * torch.tensor([0.0, 1.0] * 4)).view(8, 1, 1, 1).expand(8, 1, 6, 6)
    labels = torch.tensor([1, 0] * 4)
    xt, t, y = diffuse_batch(images, labels, sde, 6, seed=3, step=5, clean=False, paired=True)
    assert xt.shape == (6, 1, 6, 6) and len(set(t[0::2].tolist())) == 3
    torch.testing.assert_close(t[0::2], t[1::2])
    assert (y[0::2] == 1).all() and (y[1::2] == 0).all()
    # Same noise within a pair: the twins' x_t differ by exactly alpha_t * 0.5 = 0.5 (VE).
    torch.testing.assert_close(xt[1::2] - xt[0::2], torch.full((3, 1, 6, 6), 0.5))
    again = diffuse_batch(images, labels, sde, 6, seed=3, step=5, clean=False, paired=True)
    torch.testing.assert_close(again[0], xt)


def test_twins_file_trains_paired_and_unpaired_labels_are_refused(tmp_path, tiny_model):
    path = tmp_path / "twins.h5"
    result = runner.invoke(app, ["data", "phantoms", str(path), "--n", "4", "--size", "16"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["data", "phantoms", str(path), "--n", "4", "--size", "16", "--twins", "--force"]
    )
    assert result.exit_code == 0, result.output
    with h5py.File(path) as f:
        assert f["images"].shape == (8, 1, 16, 16) and "paired" in f.attrs
        np.testing.assert_array_equal(f["labels"][...], [1, 0] * 4)
    out = tmp_path / "clf.pt"
    args = ["train-classifier", str(path), "--model", tiny_model, "--out", str(out)]
    args += ["--steps", "2", "--batch-size", "4", "--base", "4", "--mult", "1,2", "--threads", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_classifier(out)[1]["training"]["paired"] is True
    # A file whose consecutive images are not twins of different classes is refused for --paired.
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["images"] = np.zeros((4, 1, 16, 16), np.float32)
        f["labels"] = np.array([1, 1, 0, 0])
    result = runner.invoke(app, [*args[:1], str(plain), *args[2:], "--paired", "--force"])
    assert_user_error(result, "--paired needs images 2k, 2k+1")


@pytest.mark.skipif(
    not __import__("invdiff.training.classifier")
    .training.classifier.default_classifier_path()
    .is_file(),
    reason="no lesion classifier is shipped",
)
def test_shipped_lesion_classifier_fits_the_shipped_model_and_sees_lesions():
    from invdiff.core.checkpoint import file_sha256, resolve_model
    from invdiff.data.phantoms import SPLIT_SEEDS, lesion_twins

    clf, config = load_classifier()
    assert config["model"]["sha256"] == file_sha256(resolve_model("phantom64"))
    present, absent, _ = lesion_twins(16, 64, SPLIT_SEEDS["test"])
    t = torch.full((16,), clf.sde.t_min)
    with torch.no_grad():
        lp = clf.log_prob(torch.as_tensor(present), t, 1)
        la = clf.log_prob(torch.as_tensor(absent), t, 1)
    # Measured: all 16 test twins ranked right (the lesion twin more likely "lesion"), 94.7 %
    # accuracy on 512 test phantoms; 14 of 16 leaves room for thread-count rounding only.
    assert int((lp > la).sum()) >= 14
    assert float((lp.exp() > 0.5).float().mean()) >= 0.75  # most lesion twins called "lesion"


def test_train_classifier_resume_reaches_the_uninterrupted_weights(tmp_path, tiny_data, tiny_model):
    base = ["train-classifier", tiny_data, "--model", tiny_model, "--batch-size", "4"]
    base += ["--base", "4", "--mult", "1,2", "--threads", "1", "--ckpt-every", "2"]
    whole, part = tmp_path / "whole.pt", tmp_path / "part.pt"
    assert runner.invoke(app, [*base, "--out", str(whole), "--steps", "4"]).exit_code == 0
    assert runner.invoke(app, [*base, "--out", str(part), "--steps", "2"]).exit_code == 0
    assert (tmp_path / "part.pt.train").is_file()
    result = runner.invoke(app, [*base, "--out", str(part), "--steps", "4", "--resume"])
    assert result.exit_code == 0, result.output
    (a, ca), (b, cb) = load_classifier(whole), load_classifier(part)
    assert ca["training"]["steps_done"] == cb["training"]["steps_done"] == 4
    for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=name)
    # Resuming with another architecture is refused in one line.
    wider = [*base, "--base", "8"]  # the later --base wins
    result = runner.invoke(app, [*wider, "--out", str(part), "--steps", "6", "--resume"])
    assert_user_error(result, "another net")


def test_resolved_options_with_hypotheses_only_are_the_prior_samplers(toy):
    """A class hypothesis alone is sampled by the plain PC sampler, whatever the strategy: the
    recorded knobs are that sampler's, not DiffPIR's."""
    _, _, op = toy
    got = resolved_options("diffpir", {"steps": 7}, [op])
    assert "sigma_start" not in got and got["steps"] == 7
    assert set(got) == set(inspect.signature(solve_prior).parameters) - {"p"}
