"""The plugin system: discovery, validation, isolation, the CLI, the docs and an installed plugin.

Every test builds its own plugin manager; none touches a module-level one (there is none).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from invdiff import hookspecs, plugins
from invdiff.cli import app
from invdiff.core.operator import Param
from invdiff.errors import InvdiffError
from invdiff.plugins import build_registry, make_plugin_manager
from tests._operator_helpers import Scale, WrongAdjoint, plugin, registry_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
BUILTINS = {"masking", "grayscale", "ct_sparse", "mri"}


def hookspec_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "invdiff_spec")
    ]


# one test per hook: test_hook_<hookname> ------------------------------------------------------


def test_hook_register_operators():
    registry = registry_of(mine=plugin(Scale))
    entry = registry["scale"]
    assert (entry.cls, entry.plugin, entry.linear) == (Scale, "mine", True)
    assert [p.name for p in entry.params] == ["noise_std"]


# discovery and isolation ----------------------------------------------------------------------


def test_builtins_register_through_entry_points_like_any_plugin():
    registry = build_registry(make_plugin_manager())
    assert BUILTINS <= set(registry)
    for name in BUILTINS:
        assert registry[name].package == "invdiff"
        assert registry[name].cls.__module__ == f"invdiff_operators.{name}"


def test_managers_are_independent():
    with_extra = registry_of(mine=plugin(Scale))
    assert "scale" in with_extra
    assert "scale" not in build_registry(make_plugin_manager())


def test_registry_is_read_only():
    registry = registry_of(mine=plugin(Scale))
    with pytest.raises(TypeError):
        registry["other"] = registry["scale"]  # type: ignore[index]


def test_duplicate_name_names_both_plugins():
    class Twin(Scale):
        pass

    with pytest.raises(InvdiffError, match="'first'.*'second'"):
        registry_of(first=plugin(Scale), second=plugin(Twin))


def test_plugin_that_fails_to_import_warns_and_the_rest_keep_working(monkeypatch):
    real = metadata.entry_points
    broken = metadata.EntryPoint("broken_one", "invdiff_no_such_module", "invdiff")

    def entry_points(**kw):
        return [*real(**kw), broken]

    monkeypatch.setattr(plugins.metadata, "entry_points", entry_points)
    with pytest.warns(RuntimeWarning, match="broken_one"):
        pm = make_plugin_manager()
    assert BUILTINS <= set(build_registry(pm))


@pytest.mark.parametrize(
    ("cls_attrs", "message"),
    [
        ({"name": "Bad-Name"}, "lower_snake_case"),
        ({"params": (Param("noise_std", float, 0.1, "clash"),)}, "bad parameter"),
        ({"params": (Param("size", list, [], "list"),)}, "bad parameter"),
    ],
)
def test_registration_is_validated_and_names_the_plugin(cls_attrs, message):
    """A plugin breaking the contract is reported by name and skipped; the rest keep working."""
    bad = type("Bad", (Scale,), cls_attrs)
    with pytest.warns(RuntimeWarning, match=f"'sloppy'.*{message}"):
        registry = registry_of(sloppy=plugin(bad), fine=plugin(Scale))
    assert "scale" in registry and registry["scale"].plugin == "fine"


def test_registering_a_non_operator_is_refused():
    with pytest.warns(RuntimeWarning, match="not a subclass"):
        registry_of(sloppy=plugin(dict))


def test_a_plugin_whose_hook_raises_is_skipped_and_builtins_keep_working():
    class Raising:
        @hookspecs.hookimpl
        def register_operators(self, register):
            register(Scale)  # registered, then the hook fails: nothing of it is kept
            raise RuntimeError("boom")

    pm = make_plugin_manager(plugins=[("raising", Raising())])
    with pytest.warns(RuntimeWarning, match="'raising'.*RuntimeError: boom"):
        registry = build_registry(pm)
    assert BUILTINS <= set(registry) and "scale" not in registry


def test_unknown_operator_suggests_a_close_name():
    with pytest.raises(InvdiffError, match="did you mean 'mri'"):
        build_registry(make_plugin_manager()).lookup("mir")


# CLI ------------------------------------------------------------------------------------------


def test_cli_list_shows_every_operator_and_its_parameters():
    result = CliRunner().invoke(app, ["operators", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in BUILTINS:
        assert name in result.stdout
    assert "--views=23" in result.stdout and "--acceleration=4" in result.stdout


def test_cli_check_passes_a_builtin():
    result = CliRunner().invoke(app, ["operators", "check", "masking"])
    assert result.exit_code == 0, result.output
    assert "adjoint_float64" in result.stdout and "all checks passed" in result.stdout


def test_cli_check_unknown_name_is_a_one_line_error():
    result = CliRunner().invoke(app, ["operators", "check", "nope"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: unknown operator 'nope'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_cli_check_exits_1_on_a_failing_operator(monkeypatch):
    real = metadata.entry_points
    helper = metadata.EntryPoint("helpers", "tests._operator_helpers", "invdiff")
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda **kw: [*real(**kw), helper])
    result = CliRunner().invoke(app, ["operators", "check", WrongAdjoint.name])
    assert result.exit_code == 1
    assert "adjoint_float64" in result.stderr


# docs -----------------------------------------------------------------------------------------


def test_every_hookspec_is_tested_and_documented():
    text = DOCS.read_text()
    tests = {name for name, _ in inspect.getmembers(sys.modules[__name__], inspect.isfunction)}
    for hook in hookspec_names():
        assert f"test_hook_{hook}" in tests, f"add test_hook_{hook} to tests/test_plugins.py"
        assert f"### `{hook}`" in text, f"document {hook} under '### `{hook}`' in docs/plugins.md"


def test_plugin_docs_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert blocks, "docs/plugins.md has no python example"
    namespace = {"__name__": "docs_plugins_example"}
    exec(compile("\n".join(blocks), str(DOCS), "exec"), namespace)


# an installed third-party plugin --------------------------------------------------------------


def _pip_install_blur(tmp_path: Path) -> Path:
    """Install plugins/invdiff-blur into a private folder; skip when pip cannot build offline."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "plugins" / "invdiff-blur", source)  # keep build/ out of the repo
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    cmd += ["--no-build-isolation", "--target", str(target), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"pip could not build the plugin offline: {done.stderr.strip()[-300:]}")
    return target


def test_installed_plugin_is_listed_and_conforms(tmp_path):
    target = _pip_install_blur(tmp_path)
    env = dict(os.environ, COLUMNS="200", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))

    def invdiff(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "invdiff", "operators", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)

    listed = invdiff("list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "│ blur " in line)
    assert "invdiff-blur" in row and "0.1.0" in row and "--sigma=1.5" in row
    checked = invdiff("check", "blur")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "blur: all checks passed" in checked.stdout
