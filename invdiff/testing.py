"""Conformance kit for forward operators: public, so plugin authors run the same checks we do.

``check_operator(OpClass)`` builds small instances through ``OpClass.example(generator)`` and
returns one ``CheckResult`` per check; ``assert_conforms(OpClass)`` raises ``AssertionError``
listing every failure, for use inside pytest. Each check draws its data from its own
``torch.Generator`` seeded from ``seed``; nothing touches the global random state.

The adjoint check is the dot-product test of PyLops' ``dottest`` and of deepinv's
``adjointness_test``, written as a relative error that does not depend on the scale of A:

    |<A x, y> - <x, A^T y>| / (||A x|| ||y||) <= rtol,

with rtol = 1e-5 in float32 and 1e-10 in float64 unless the class declares ``adjoint_rtol``
(an operator that is only approximately adjoint). Complex measurements use the real inner
product Re(vdot(u, v)), under which a real-to-complex linear map has a real adjoint.

The checks themselves live in the private :mod:`invdiff._conformance`; every public name is
importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from invdiff._conformance import (  # the checks themselves; public through this module
    ADJOINT_RTOL,
    CHECK_NOISE_STD,
    CHECKS,
    COMPLEX_OF,
    EXACT_RTOL,
    Z_LIMIT,
    CheckFailed,
    Skip,
    check_adjoint,
    check_batch,
    check_cuda,
    check_device,
    check_dtype,
    check_example,
    check_input_validation,
    check_likelihood_score,
    check_measure,
    check_project,
    check_pseudo_inverse,
    check_time_conditional,
    relative_gap,
)
from invdiff.core.operator import Operator

__all__ = [
    "ADJOINT_RTOL",
    "CHECKS",
    "CHECK_NOISE_STD",
    "COMPLEX_OF",
    "CheckFailed",
    "CheckResult",
    "EXACT_RTOL",
    "Skip",
    "Z_LIMIT",
    "assert_conforms",
    "check_adjoint",
    "check_batch",
    "check_cuda",
    "check_device",
    "check_dtype",
    "check_example",
    "check_input_validation",
    "check_likelihood_score",
    "check_measure",
    "check_operator",
    "check_project",
    "check_pseudo_inverse",
    "check_time_conditional",
    "operator_class",
    "relative_gap",
]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` is 'pass', 'fail' or 'skip'."""

    operator: str
    check: str
    status: str
    value: float | None = None
    tolerance: float | None = None
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Return True unless the check failed (a skip is not a failure)."""
        return self.status != "fail"

    def __str__(self) -> str:
        num = "" if self.value is None else f" {self.value:.3g}"
        tol = "" if self.tolerance is None else f" (tol {self.tolerance:.3g})"
        return f"{self.operator}: {self.check} {self.status}{num}{tol} {self.detail}".rstrip()


def operator_class(target: Any) -> type[Operator]:
    """Return the operator class of ``target``: a class, a registry entry or an instance."""
    cls = getattr(target, "cls", target)
    cls = cls if isinstance(cls, type) else type(cls)
    if not issubclass(cls, Operator):
        raise TypeError(f"expected an Operator subclass or registry entry, got {target!r}")
    return cls


def check_operator(
    target: Any, *, seed: int = 0, checks: Iterable[str] | None = None
) -> list[CheckResult]:
    """Run the conformance checks on an operator class (or registry entry); return the results.

    ``checks`` picks a subset of ``CHECKS`` by name. An exception inside a check is reported as
    that check's failure, so one broken method does not hide the other results.
    """
    cls = operator_class(target)
    names = list(CHECKS) if checks is None else list(checks)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; choose from {list(CHECKS)}")
    results = []
    for i, name in enumerate(names):
        g = torch.Generator().manual_seed(seed * 1009 + i)
        results.append(_run(cls, name, g))
    return results


def _run(cls: type[Operator], name: str, g: torch.Generator) -> CheckResult:
    op_name = cls.name or cls.__name__
    try:
        value, tol, detail = CHECKS[name](cls, g)
    except Skip as why:
        return CheckResult(op_name, name, "skip", detail=str(why))
    except CheckFailed as err:
        return CheckResult(op_name, name, "fail", err.value, err.tolerance, str(err))
    except Exception as err:  # report, do not crash: the author wants every result at once
        return CheckResult(op_name, name, "fail", detail=f"{type(err).__name__}: {err}")
    return CheckResult(op_name, name, "pass", value, tol, detail)


def assert_conforms(target: Any, *, seed: int = 0, checks: Iterable[str] | None = None) -> None:
    """Raise AssertionError listing every failed check; use inside a plugin's own tests."""
    failed = [r for r in check_operator(target, seed=seed, checks=checks) if not r.passed]
    if failed:
        raise AssertionError("operator does not conform:\n" + "\n".join(map(str, failed)))
