"""The conformance kit itself: it passes a correct operator and catches each kind of bug."""

from __future__ import annotations

import pytest
import torch

from invdiff.testing import CHECKS, assert_conforms, check_operator
from tests._operator_helpers import (
    BatchMixing,
    DowncastsToFloat32,
    NoisyEverywhere,
    Scale,
    SquareExample,
    WrongAdjoint,
)


def failed(cls: type) -> set[str]:
    return {r.check for r in check_operator(cls) if r.status == "fail"}


def test_correct_operator_passes_every_check():
    results = check_operator(Scale)
    assert [r.check for r in results] == list(CHECKS)
    assert all(r.passed for r in results), [str(r) for r in results if not r.passed]
    assert_conforms(Scale)


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (WrongAdjoint, "adjoint_float64"),
        (WrongAdjoint, "likelihood_score"),
        (BatchMixing, "batch"),
        (DowncastsToFloat32, "dtype"),
        (NoisyEverywhere, "measure"),
        (SquareExample, "example"),
    ],
)
def test_kit_catches_bug(cls, check):
    assert check in failed(cls)


def test_float64_is_the_sensitive_adjoint_test():
    # The error is normalised by |Ax| |y| (Cauchy-Schwarz), so a 2e-4 slip in A^T shows up as
    # ~2e-4 / sqrt(n) ~ 3e-6 here: under float32's 1e-5, far over float64's 1e-10.
    results = {r.check: r for r in check_operator(WrongAdjoint)}
    assert results["adjoint_float32"].status == "pass"
    assert results["adjoint_float64"].value > 1e-7


def test_declared_adjoint_tolerance_is_honoured():
    class Approximate(WrongAdjoint):
        adjoint_rtol = 1e-3

    assert not {"adjoint_float32", "adjoint_float64"} & failed(Approximate)


def test_assert_conforms_names_the_failed_checks():
    with pytest.raises(AssertionError, match="adjoint_float64"):
        assert_conforms(WrongAdjoint)


def test_results_are_deterministic_and_leave_the_global_generator_alone():
    state = torch.get_rng_state()
    first = check_operator(Scale, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert first == check_operator(Scale, seed=3)


def test_an_exception_inside_a_check_is_reported_not_raised():
    class Exploding(Scale):
        def adjoint(self, y):
            raise RuntimeError("boom")

    results = {r.check: r for r in check_operator(Exploding)}
    assert results["adjoint_float64"].status == "fail"
    assert "boom" in results["adjoint_float64"].detail


def test_unknown_check_name_is_refused():
    with pytest.raises(ValueError, match="unknown check"):
        check_operator(Scale, checks=["adjointness"])
