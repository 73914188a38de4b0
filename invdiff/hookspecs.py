"""Hook specifications: the whole contract between invdiff and its plugins.

A plugin is a module (or any object) exposed through the entry-point group ``invdiff``; it
implements some of the hooks below with ``@hookimpl``. Every hook receives a ``register``
callback, so a plugin never touches invdiff's internals. Later hooks (``register_samplers``, ...)
follow the same pattern. Each hook is documented in docs/plugins.md and tested in
tests/test_plugins.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("invdiff")
hookimpl = pluggy.HookimplMarker("invdiff")


@hookspec
def register_operators(register: Callable[[type], None]) -> None:
    """Register forward-operator classes: call ``register(OperatorSubclass)`` once per class.

    The class must subclass ``invdiff.core.operator.Operator``, set a unique lower-case ``name``,
    declare its constructor keywords in ``params`` and implement ``example(generator)``.
    """
