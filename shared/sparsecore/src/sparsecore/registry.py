"""The method registry: ``sparsecore.methods`` entry points plus in-process registrations.

A method package declares ``[project.entry-points."sparsecore.methods"] name = "pkg:Class"``;
`available_methods` loads every such entry point (a plugin that fails to import is logged
and skipped, so one broken package cannot hide the others) and adds the classes registered with
`register_method`.

Loading is lazy: `get_method` imports only the entry point it is asked for, and
`method_names` lists the names from the installed metadata without importing any plugin
(so ``get_method("rigl")`` does not import transformers through some other package).

The same entry-point group also holds *procedures* (`sparsecore.procedure.Procedure`: methods
that make rollouts, reasoning steps, actions or tokens sparse, not weights):
`available_procedures` / `get_procedure` find them; `available_methods` and `get_method` keep
returning only `PruningMethod` subclasses.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from sparsecore.method import PruningMethod
from sparsecore.procedure import Procedure

__all__ = [
    "available_methods",
    "available_procedures",
    "get_method",
    "get_procedure",
    "method_names",
    "register_method",
    "register_procedure",
]

_log = logging.getLogger(__name__)
_REGISTRY: dict[str, type[PruningMethod]] = {}
_PROCEDURES: dict[str, type[Procedure]] = {}


def register_method(cls: type[PruningMethod], name: str | None = None) -> type[PruningMethod]:
    """Register a method class in-process (entry points do this for installed packages)."""
    if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
        raise TypeError(f"register_method needs a PruningMethod subclass, got {cls!r}")
    _REGISTRY[(name or cls.name).lower()] = cls
    return cls


def _installed(kind: type) -> dict[str, type]:
    """The ``sparsecore.methods`` entry points whose class is a ``kind`` subclass (a plugin that
    fails to import is logged and skipped, so one broken package cannot hide the others).
    """
    found: dict[str, type] = {}
    for ep in entry_points(group="sparsecore.methods"):
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin must not break discovery of the others
            _log.warning("method plugin %r (%s) failed to load: %s", ep.name, ep.value, err)
            continue
        if isinstance(cls, type) and issubclass(cls, kind):
            found[ep.name.lower()] = cls
    return found


def _entry_point_class(name: str, what: str) -> type | None:
    """The class of the entry point called ``name`` (only that one is imported), or ``None``."""
    for ep in entry_points(group="sparsecore.methods"):
        if ep.name.lower() != name.lower():
            continue
        try:
            cls = ep.load()
        except Exception as err:
            raise ValueError(f"{what} {name!r} ({ep.value}) failed to import: {err}") from err
        if not isinstance(cls, type):
            raise ValueError(f"entry point {name!r} ({ep.value}) is not a class")
        return cls
    return None


def available_methods() -> dict[str, type[PruningMethod]]:
    """Every method: those registered in-process and the ``sparsecore.methods`` entry points."""
    found = {**_installed(PruningMethod), **_REGISTRY}
    return dict(sorted(found.items()))


def register_procedure(cls: type[Procedure], name: str | None = None) -> type[Procedure]:
    """Register a procedure class in-process (entry points do this for installed packages)."""
    if not (isinstance(cls, type) and issubclass(cls, Procedure)):
        raise TypeError(f"register_procedure needs a Procedure subclass, got {cls!r}")
    _PROCEDURES[(name or cls.name).lower()] = cls
    return cls


def available_procedures() -> dict[str, type[Procedure]]:
    """Every procedure: the in-process registrations and the ``sparsecore.methods`` entry points
    whose class is a `Procedure` (plugins that fail to import are logged and skipped).
    """
    found = {**_installed(Procedure), **_PROCEDURES}
    return dict(sorted(found.items()))


def get_procedure(name: str) -> type[Procedure]:
    """The procedure class registered as ``name`` (``ValueError`` listing the known ones)."""
    key = name.lower()
    if key in _PROCEDURES:
        return _PROCEDURES[key]
    cls = _entry_point_class(key, "procedure")
    if cls is None:
        raise ValueError(f"unknown procedure {name!r}; installed: {', '.join(method_names())}")
    if not issubclass(cls, Procedure):
        raise ValueError(f"entry point {name!r} ({cls.__module__}) is not a Procedure subclass")
    return cls


def method_names() -> list[str]:
    """Names of every registered method and procedure, sorted, without importing any plugin."""
    names = {ep.name.lower() for ep in entry_points(group="sparsecore.methods")}
    return sorted(names | set(_REGISTRY) | set(_PROCEDURES))


def get_method(name: str) -> type[PruningMethod]:
    """The method class registered as ``name`` (``ValueError`` listing the known ones).

    Only that method's entry point is imported.
    """
    key = name.lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key in _PROCEDURES:
        raise ValueError(f"{name!r} is a procedure: use sparsecore.registry.get_procedure")
    cls = _entry_point_class(key, "method")
    if cls is None:
        raise ValueError(f"unknown method {name!r}; installed: {', '.join(method_names())}")
    if issubclass(cls, PruningMethod):
        return cls
    if issubclass(cls, Procedure):
        raise ValueError(
            f"{name!r} is a procedure (it makes {', '.join(_sparsifies(cls))} sparse, not "
            "weights): use sparsecore.registry.get_procedure"
        )
    raise ValueError(f"entry point {name!r} ({cls.__module__}) is not a PruningMethod subclass")


def _sparsifies(cls: type) -> tuple[str, ...]:
    taxonomy = getattr(cls, "taxonomy", None)
    return taxonomy.sparsifies if taxonomy is not None else ("something",)
