"""Method options from the command line: `--set name=value` and `--config FILE`.

`method_options` turns `["drop_fraction=0.5", "pattern=2:4"]` and/or a JSON or TOML file
of field values into keyword arguments of a method's config dataclass, checked against its fields
and converted to each field's annotated type (`int`, `float`, `bool`, `str`, tuples,
`None`, patterns). The config's own `__post_init__` then validates the values, so an
out-of-range option fails with the field's name before anything runs.

`config_dict` is the inverse, JSON-friendly (patterns as their string form, which
`sparsecore.patterns.parse_pattern` reads back).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparsecore.method import MethodConfig
from sparsecore.patterns import Pattern

__all__ = ["config_dict", "convert_option", "method_options"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file {str(path)!r}")
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold an object of field values")
    return data


def _convert(text: str, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(text, option, name)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{name}: cannot read {text!r} ({'; '.join(errors)})")
    if hint is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None
    if hint is str or (isinstance(hint, type) and issubclass(hint, Pattern)):
        return text.strip()
    if origin is tuple:
        items = [t for t in text.split(",") if t.strip()]
        item_hint = args[0] if args else str
        return tuple(_convert(t, item_hint, name) for t in items)
    if hint is Any:
        return text
    raise ValueError(f"{name}: cannot set a field of type {hint} from the command line")


def convert_option(config_class: type[MethodConfig], name: str, value: Any) -> Any:
    """`value` for field `name` of `config_class`: strings converted to the field's type.

    Raises:
        ValueError: `name` is not a field (the fields are listed) or `value` does not parse.
    """
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    if name not in fields:
        known = ", ".join(sorted(fields))
        raise ValueError(f"unknown option {name!r} for {config_class.__name__}; fields: {known}")
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    hints = typing.get_type_hints(config_class)
    return _convert(value, hints.get(name, Any), name)


def method_options(
    config_class: type[MethodConfig],
    sets: Sequence[str] = (),
    config_file: str | Path | None = None,
) -> dict[str, Any]:
    """Config keyword arguments from a file and `name=value` strings (`sets` win).

    Args:
        config_class: The method's config dataclass.
        sets: `"name=value"` strings (`--set`).
        config_file: A JSON or TOML file of field values (`--config`), or `None`.

    Returns:
        Field values, converted; validate by building the config with them.

    Raises:
        ValueError: A malformed `--set`, an unknown field or a value that does not parse.
    """
    raw: dict[str, Any] = {} if config_file is None else _read_file(config_file)
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set expects name=value, got {item!r}")
        raw[name.strip()] = value
    return {name: convert_option(config_class, name, value) for name, value in raw.items()}


def config_dict(config: MethodConfig) -> dict[str, Any]:
    """The config's fields as JSON-friendly values (patterns as strings, tuples as lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Pattern):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = {str(k): str(v) if isinstance(v, Pattern) else v for k, v in value.items()}
        out[f.name] = value
    return out
