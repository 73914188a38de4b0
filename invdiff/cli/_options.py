"""Operator options of ``invdiff solve``: the ``--operator NAME --param value ...`` groups of the
command line, and the one conversion of an operator parameter to the type its ``Param`` declares
(from a command-line word or from a file's ``operator_params``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invdiff.errors import InvdiffError

if TYPE_CHECKING:
    from invdiff.core.operator import Param


@dataclass
class OperatorSpec:
    """One ``--operator NAME --param value ...`` group of the command line."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_extra(args: list[str], registry) -> tuple[list[OperatorSpec], list[Path]]:
    """Split the free command-line words into operator groups and input files."""
    specs: list[OperatorSpec] = []
    inputs: list[Path] = []
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--"):
            inputs.append(Path(word))
            i += 1
            continue
        key, _, inline = word[2:].partition("=")
        if key == "operator":
            value, i = _value(args, i, inline, "--operator")
            registry.lookup(value)  # unknown name -> one-line error with suggestions
            specs.append(OperatorSpec(value))
            continue
        if not specs:
            raise InvdiffError(
                f"unknown option --{key}; operator parameters go after --operator NAME"
            )
        spec = specs[-1]
        params = {p.name: p for p in registry[spec.name].params}
        name = key.replace("-", "_")
        if name.startswith("no_") and name[3:] in params and params[name[3:]].type is bool:
            spec.params[name[3:]] = False
            i += 1
            continue
        if name not in params:
            known = ", ".join(p.option for p in params.values())
            raise InvdiffError(f"operator {spec.name!r} has no option --{key}; it takes {known}")
        param = params[name]
        if param.type is bool and not inline:
            spec.params[name] = True
            i += 1
            continue
        value, i = _value(args, i, inline, param.option)
        spec.params[name] = param_value(spec.name, param, value)
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:  # one measurement per name: /measurements/<name>
            raise InvdiffError(
                f"--operator {name} is given twice; measurements are stored and read by operator "
                "name, so give each operator once"
            )
    return specs, inputs


def _value(args: list[str], i: int, inline: str, option: str) -> tuple[str, int]:
    if inline:
        return inline, i + 1
    if i + 1 >= len(args):
        raise InvdiffError(f"{option} needs a value")
    return args[i + 1], i + 2


def param_value(operator: str, param: Param, value: Any, source: Path | str | None = None) -> Any:
    """Return ``value`` as ``param`` of ``operator`` declares it, or raise a one-line error.

    A command-line word (``source`` None) is parsed (``--views 23``); a value of the
    ``operator_params`` of the file ``source`` (JSON) must already have the type (an int serves
    for a float) and is never parsed from text. Either must be one of ``param.choices``, if any.
    """
    want, noise = param.type, param.name == "noise_std"  # every operator's, never negative
    if source is None:
        where, what = f"{param.option} of {operator}", f"takes a {want.__name__}"
        try:
            converted = want(value)
        except ValueError:
            raise InvdiffError(f"{where} {what}, got {value!r}") from None
    else:
        where, what = f"operator_params of {source}: {param.name}", f"must be a {want.__name__}"
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if not ok or isinstance(value, bool) and want is not bool:
            raise InvdiffError(f"{where} {what}, got {value!r}")
        converted = want(value)
    if want is int and not -(2**63) <= converted < 2**63:
        raise InvdiffError(f"{where} must be a 64-bit integer, got {value!r}")
    if want is float and not (math.isfinite(converted) and (converted >= 0 or not noise)):
        must = "a finite number >= 0" if noise else "a finite number"
        raise InvdiffError(f"{where} must be {must}, got {value!r}")
    if param.choices and converted not in param.choices:
        raise InvdiffError(f"{where} must be one of {', '.join(param.choices)}, got {value!r}")
    return converted


def file_params(entry, params: dict, source: Path | str) -> dict:
    """Return a file's ``operator_params`` converted to the operator's declared types; one-line
    errors for unknown names or values of the wrong type."""
    declared = {p.name: p for p in entry.params}
    out = {}
    for name, value in params.items():
        if name not in declared:
            known = ", ".join(declared)
            raise InvdiffError(
                f"operator_params of {source} name {name!r}, which {entry.name} does not take "
                f"({known})"
            )
        out[name] = param_value(entry.name, declared[name], value, source)
    return out


def operator_help(registry) -> str:
    """Return the end of ``invdiff solve --help``: each registered operator with its options,
    their types (or choices) and defaults; paragraphs, as typer keeps their line breaks."""
    lines = [
        "Operators: --operator NAME, then its options (`invdiff operators list` also shows the "
        "plugin and package of each):"
    ]
    for entry in registry.values():
        lines.append(f"{entry.name}: " + ", ".join(_param_help(p) for p in entry.params))
    return "\n\n".join(lines)


def _param_help(param: Param) -> str:
    if param.type is bool:
        on, off = param.option, "--no-" + param.option[2:]
        return f"{on}/{off} (default {on if param.default else off})"
    kind = "|".join(param.choices) if param.choices else param.type.__name__.upper()
    default = "''" if param.default == "" else param.default
    return f"{param.option} {kind} (default {default})"
