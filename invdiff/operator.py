"""Deprecated alias of :mod:`invdiff.core.operator`, kept one release so plugins keep working."""

from __future__ import annotations

import warnings

from invdiff.core.operator import (  # noqa: F401  (re-exported)
    DEFAULT_NOISE_STD,
    NOISE_STD,
    Composition,
    LinearComposition,
    LinearOperator,
    Operator,
    Param,
    check_mask,
    real_inner,
)

warnings.warn(
    "invdiff.operator is deprecated and will be removed in the next release; "
    "import from invdiff.core.operator instead",
    DeprecationWarning,
    stacklevel=2,
)
