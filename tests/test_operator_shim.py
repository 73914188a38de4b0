"""The deprecated `invdiff.operator` alias: the public names still import, and importing warns."""

from __future__ import annotations

import importlib
import sys

import pytest

from invdiff.core import operator as core


def test_old_operator_path_reexports_the_public_names_and_warns(monkeypatch):
    monkeypatch.delitem(sys.modules, "invdiff.operator", raising=False)  # import it afresh
    with pytest.warns(DeprecationWarning, match=r"invdiff\.core\.operator"):
        old = importlib.import_module("invdiff.operator")
    for name in ("Operator", "LinearOperator", "Param", "DEFAULT_NOISE_STD", "real_inner"):
        assert getattr(old, name) is getattr(core, name)
