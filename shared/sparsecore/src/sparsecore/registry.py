"""The method registry: ``sparsecore.methods`` entry points plus in-process registrations.

A method package declares ``[project.entry-points."sparsecore.methods"] name = "pkg:Class"``;
`available_methods` loads every such entry point (a plugin that fails to import is logged
and skipped, so one broken package cannot hide the others) and adds the classes registered with
`register_method`.

Loading is lazy: `get_method` imports only the entry point it is asked for, and
`method_names` lists the names from the installed metadata without importing any plugin
(so ``get_method("rigl")`` does not import transformers through some other package).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from sparsecore.method import PruningMethod

__all__ = ["available_methods", "get_method", "method_names", "register_method"]

_log = logging.getLogger(__name__)
_REGISTRY: dict[str, type[PruningMethod]] = {}


def register_method(cls: type[PruningMethod], name: str | None = None) -> type[PruningMethod]:
    """Register a method class in-process (entry points do this for installed packages)."""
    if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
        raise TypeError(f"register_method needs a PruningMethod subclass, got {cls!r}")
    _REGISTRY[(name or cls.name).lower()] = cls
    return cls


def available_methods() -> dict[str, type[PruningMethod]]:
    """Every method: those registered in-process and the ``sparsecore.methods`` entry points."""
    found: dict[str, type[PruningMethod]] = {}
    for ep in entry_points(group="sparsecore.methods"):
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin must not break discovery of the others
            _log.warning("method plugin %r (%s) failed to load: %s", ep.name, ep.value, err)
            continue
        if isinstance(cls, type) and issubclass(cls, PruningMethod):
            found[ep.name.lower()] = cls
    found.update(_REGISTRY)
    return dict(sorted(found.items()))


def method_names() -> list[str]:
    """Names of every registered method, sorted, without importing any plugin."""
    names = {ep.name.lower() for ep in entry_points(group="sparsecore.methods")}
    return sorted(names | set(_REGISTRY))


def get_method(name: str) -> type[PruningMethod]:
    """The method class registered as ``name`` (``ValueError`` listing the known ones).

    Only that method's entry point is imported.
    """
    key = name.lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    for ep in entry_points(group="sparsecore.methods"):
        if ep.name.lower() != key:
            continue
        try:
            cls = ep.load()
        except Exception as err:
            raise ValueError(f"method {name!r} ({ep.value}) failed to import: {err}") from err
        if isinstance(cls, type) and issubclass(cls, PruningMethod):
            return cls
        raise ValueError(f"entry point {name!r} ({ep.value}) is not a PruningMethod subclass")
    raise ValueError(f"unknown method {name!r}; installed: {', '.join(method_names())}")
