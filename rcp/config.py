"""
Typed YAML configuration: frozen dataclasses are the schema.

A config file is read into the dataclass that describes it, field by field,
with checks; anything wrong raises one L{ConfigError} that names the file,
the key path and the problem, e.g.::

    /etc/rcp/agent.yaml: rpc.call_timeout: expected a number, got a string ('30s')

Settings are declared with L{setting}, which carries the help text and an
optional check.  Supported field types: C{str}, C{int}, C{float}, C{bool},
C{Literal[...]}, C{X | None}, C{list[X]} and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

Check = Callable[[Any], None]


class ConfigError(Exception):
    """
    A configuration is unusable.

    @ivar source: the file name, or an option such as C{--listen}.
    @ivar path: the dotted key path, empty for the document as a whole.
    @ivar problem: what is wrong.
    """

    def __init__(self, problem: str, path: str = "", source: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path
        self.source = source

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.path, self.problem) if part)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    check: Check | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """
    Declare one setting of a config dataclass.

    @param check: called with the converted value; raises L{ValueError}
        with a message when the value is not acceptable.
    """
    metadata = {"help": help, "check": check}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


#: the longest time any duration setting may have: a day, in seconds
MAX_SECONDS = 86400.0


def _shown(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def positive(value: float) -> None:
    """A duration in seconds: greater than 0, at most L{MAX_SECONDS}."""
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {value}")
    if value > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS:g} (a day), got {_shown(value)}")


def between(low: float, high: float) -> Check:
    """A number from C{low} to C{high}, both included."""

    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be from {_shown(low)} to {_shown(high)}, got {_shown(value)}")

    return check


def atLeast(low: float, high: float) -> Check:
    """At least C{low}; C{high} is the sanity bound every number has."""

    def check(value: float) -> None:
        if value < low:
            raise ValueError(f"must be at least {_shown(low)}, got {_shown(value)}")
        if value > high:
            raise ValueError(f"must be at most {_shown(high)}, got {_shown(value)}")

    return check


def _describe(value: object) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a mapping",
        type(None): "nothing (null)",
    }
    name = names.get(type(value), type(value).__name__)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        return f"{name} ({shown})"
    return name


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _convert(hint: Any, value: object, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        rest = [o for o in options if o is not type(None)]
        if len(rest) == 1:
            return _convert(rest[0], value, path)
        raise TypeError(f"unsupported setting type {hint}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices or type(value) is bool:
            raise ConfigError(
                f"expected one of {', '.join(map(str, choices))}, got {_describe(value)}", path
            )
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if type(value) is not list:
            raise ConfigError(f"expected a list, got {_describe(value)}", path)
        return [_convert(item, v, _join(path, i)) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return fromMapping(typing.cast(type[Any], hint), value, path)
    if hint is bool:
        if type(value) is not bool:
            raise ConfigError(f"expected true or false, got {_describe(value)}", path)
        return value
    if hint is int:
        if type(value) is not int:
            raise ConfigError(f"expected an integer, got {_describe(value)}", path)
        return value
    if hint is float:
        if type(value) not in (int, float):
            raise ConfigError(f"expected a number, got {_describe(value)}", path)
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise ConfigError(f"expected a finite number, got {number}", path)
        return number
    if hint is str:
        if type(value) is not str:
            raise ConfigError(f"expected a string, got {_describe(value)}", path)
        return value
    raise TypeError(f"unsupported setting type {hint}")


def fromMapping(cls: type[T], data: object, path: str = "") -> T:
    """
    Build the config dataclass C{cls} from parsed YAML.

    @raise ConfigError: with the key path of the first problem (no source).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {_describe(data)}", path)
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            suggestion = f"did you mean {hint[0]}? " if hint else ""
            raise ConfigError(
                f"unknown setting ({suggestion}known here: {', '.join(sorted(fields))})",
                _join(path, key),
            )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        keyPath = _join(path, name)
        if name in data:
            value = _convert(hints[name], data[name], keyPath)
            check = field.metadata.get("check")
            if check is not None and value is not None:
                try:
                    check(value)
                except ValueError as e:
                    raise ConfigError(str(e), keyPath) from None
            values[name] = value
        elif dataclasses.is_dataclass(hints[name]):
            # an absent section still gets its checks
            values[name] = fromMapping(hints[name], {}, keyPath)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError("missing (this setting is required)", keyPath)
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(e.problem, _join(path, e.path) if e.path else path) from None
    return instance


def setPath(data: dict[str, Any], path: str, value: object) -> None:
    """Set C{a.b.c} in a nested dict, creating mappings on the way."""
    *parents, last = path.split(".")
    for key in parents:
        child = data.get(key)
        if not isinstance(child, dict):
            child = data[key] = {}
        data = child
    data[last] = value


def readYaml(filename: str) -> object:
    """
    Parse a YAML file.

    @raise ConfigError: the file cannot be read or is not valid YAML.
    """
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror}", source=filename) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", source=filename) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML: {e.problem}", where, filename) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source=filename) from None


def load(
    cls: type[T],
    filename: str | None,
    overrides: Mapping[str, tuple[str, object]] | None = None,
) -> T:
    """
    Read C{filename} (or nothing: all defaults) into C{cls}, then apply
    command-line overrides.

    @param overrides: dotted key path -> (option name, value); a problem
        with an overridden value names the option, not the file.
    @raise ConfigError: with source and key path set.
    """
    raw = readYaml(filename) if filename is not None else {}
    if raw is None:
        raw = {}
    source = filename or "defaults"
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of settings, got {_describe(raw)}", source=source)
    for path, (_, value) in (overrides or {}).items():
        setPath(raw, path, value)
    try:
        return fromMapping(cls, raw)
    except ConfigError as e:
        for path, (option, _) in (overrides or {}).items():
            if e.path == path:
                raise ConfigError(e.problem, source=option) from None
        raise ConfigError(e.problem, e.path, source) from None


def describe(cls: type[Any], path: str = "") -> list[tuple[str, str, str]]:
    """Every setting of C{cls}: (key path, default, help), for docs and --help."""
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        keyPath = _join(path, field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            rows.extend(describe(hints[field.name], keyPath))
            continue
        if field.default is not dataclasses.MISSING:
            default = "null" if field.default is None else str(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = str(field.default_factory())
        else:
            default = "(required)"
        rows.append((keyPath, default, field.metadata.get("help", "")))
    return rows
