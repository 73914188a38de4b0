"""Discover plugins and build the operator registry; no module-level state.

``make_plugin_manager()`` returns a fresh pluggy manager with every entry point of the group
``invdiff`` loaded (built-in operators included: they are ordinary entry points).
``build_registry(pm)`` asks every plugin to register its operators and returns an immutable
``Registry``. The CLI builds one of each per process; tests build their own.
"""

from __future__ import annotations

import difflib
import keyword
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any

import pluggy

from invdiff import hookspecs
from invdiff.core.operator import Operator, Param
from invdiff.errors import InvdiffError

ENTRY_POINT_GROUP = "invdiff"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAM_TYPES = (int, float, str, bool)
_RESERVED = {"image_shape", "noise_std"}


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: its name in the manager, distribution and version."""

    name: str
    package: str
    version: str


@dataclass(frozen=True)
class OperatorEntry:
    """One registered operator: its class, who registered it, and its parameters."""

    name: str
    cls: type[Operator]
    plugin: str
    package: str
    version: str

    @property
    def linear(self) -> bool:
        return bool(self.cls.linear)

    @property
    def params(self) -> tuple[Param, ...]:
        return self.cls.all_params()

    def create(self, image_shape: tuple[int, int, int], **params: Any) -> Operator:
        """Build the operator for ``image_shape``; unknown keywords raise InvdiffError."""
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InvdiffError(
                f"operator {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(known))}"
            )
        return self.cls(image_shape, **params)


class Registry(Mapping[str, OperatorEntry]):
    """Read-only mapping from operator name to ``OperatorEntry``."""

    def __init__(self, entries: Iterable[OperatorEntry]):
        table: dict[str, OperatorEntry] = {}
        for entry in entries:
            if entry.name in table:
                first = table[entry.name]
                raise InvdiffError(
                    f"operator {entry.name!r} is registered twice: by plugin {first.plugin!r} "
                    f"({first.package}) and by plugin {entry.plugin!r} ({entry.package}); "
                    "uninstall one or rename its operator"
                )
            table[entry.name] = entry
        self._table = MappingProxyType(dict(sorted(table.items())))

    def __getitem__(self, name: str) -> OperatorEntry:
        return self._table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, name: str) -> OperatorEntry:
        """Return the entry for ``name`` or raise InvdiffError listing close and known names."""
        if name in self._table:
            return self._table[name]
        close = difflib.get_close_matches(name, list(self._table), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InvdiffError(
            f"unknown operator {name!r}; {hint}known: {', '.join(self._table) or '(none)'}"
        )

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._table)})"


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers each plugin's distribution and version."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, PluginInfo] = {}

    def register_plugin(
        self, plugin: object, name: str, package: str = "-", version: str = "-"
    ) -> None:
        """Register ``plugin`` under ``name`` and remember where it came from."""
        self.register(plugin, name=name)
        self.distributions[name] = PluginInfo(name, package, version)


def _info(pm: pluggy.PluginManager, name: str) -> PluginInfo:
    known = getattr(pm, "distributions", {})
    return known.get(name, PluginInfo(name, "-", "-"))


def make_plugin_manager(
    *, entry_points: bool = True, plugins: Iterable[tuple[str, object]] = ()
) -> PluginManager:
    """Return a fresh manager with the ``invdiff`` entry points and any extra ``(name, plugin)``.

    Entry points load one by one; one that fails to import is skipped with a warning naming it.
    """
    pm = PluginManager()
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(pm, ep)
    for name, plugin in plugins:
        pm.register_plugin(plugin, name)
    return pm


def _load_entry_point(pm: PluginManager, ep: metadata.EntryPoint) -> None:
    package = ep.dist.name if ep.dist is not None else "-"
    version = ep.dist.version if ep.dist is not None else "-"
    try:
        plugin = ep.load()
        if pm.is_registered(plugin):
            raise ValueError(f"module {ep.value} is already registered")
        pm.register_plugin(plugin, ep.name, package, version)
    except (Exception, SystemExit) as err:  # a broken plugin must not take the others down
        warnings.warn(
            f"invdiff plugin {ep.name!r} ({ep.value}, from {package}) failed to load and is "
            f"skipped: {type(err).__name__}: {err}",
            RuntimeWarning,
            stacklevel=3,
        )


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every ``register_operators`` implementation and return the immutable registry."""
    entries: list[OperatorEntry] = []
    for impl in pm.hook.register_operators.get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        info = _info(pm, impl.plugin_name)
        mine: list[OperatorEntry] = []

        def register(cls: type, _info: PluginInfo = info, _mine: list = mine) -> None:
            validate_operator_class(cls, _info.name)
            _mine.append(OperatorEntry(cls.name, cls, _info.name, _info.package, _info.version))

        try:
            impl.function(register=register)
        except Exception as err:  # a broken plugin is skipped; the others keep working
            warnings.warn(
                f"invdiff plugin {info.name!r} (from {info.package}) failed in register_operators "
                f"and is skipped: {type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        entries.extend(mine)
    return Registry(entries)


def validate_operator_class(cls: Any, plugin: str) -> None:
    """Raise InvdiffError naming ``plugin`` unless ``cls`` honours the operator contract."""
    where = f"plugin {plugin!r} registered {cls!r}"
    if not (isinstance(cls, type) and issubclass(cls, Operator)):
        raise InvdiffError(f"{where}, which is not a subclass of invdiff.core.operator.Operator")
    if not isinstance(cls.name, str) or not _NAME.match(cls.name):
        raise InvdiffError(f"{where} with name {cls.name!r}; use lower_snake_case like 'ct_sparse'")
    seen: set[str] = set()
    for p in cls.params:
        ok = (
            isinstance(p, Param)
            and p.name.isidentifier()
            and not keyword.iskeyword(p.name)
            and p.type in _PARAM_TYPES
            and p.name not in _RESERVED | seen
        )
        if not ok:
            raise InvdiffError(
                f"{where} with a bad parameter {p!r}: each must be a Param with a unique "
                f"identifier name (not {sorted(_RESERVED)}) and type int, float, str or bool"
            )
        seen.add(p.name)
