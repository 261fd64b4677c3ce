"""
Values from a peer, whatever their type: decoded with bounds, and shown in
log lines and error texts at a sane length.

Everything a peer sends (RPC results and arguments, MQTT payloads) may be
of any type, any size and any depth.  Code that decodes such a value uses
L{loadsJson}, which fails with one exception type, L{PeerValueError}, for
anything unusable; code that puts such a value into a log line or an error
text uses L{cut}, L{brief} or L{errorText}, which never raise and never
make a line longer than a few hundred characters.
"""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any, Final, NoReturn

__all__ = [
    "MAX_DEPTH",
    "MAX_TEXT",
    "PeerValueError",
    "brief",
    "checkDepth",
    "cut",
    "errorText",
    "loadsJson",
]

#: the deepest nesting of arrays and objects a peer's JSON may have (EVerest
#: types nest a handful of levels)
MAX_DEPTH: Final = 100
#: the longest JSON text a peer may send, in characters (or bytes)
MAX_TEXT: Final = 16 * 1024 * 1024
#: how much of a peer's value a log line shows
LIMIT: Final = 200


class PeerValueError(ValueError):
    """A value from a peer cannot be used; the text says why, briefly."""


def _refuseConstant(name: str) -> NoReturn:
    raise PeerValueError(f"{name} is not JSON")


def _finiteFloat(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e400: a float out of range, which no JSON writer can write back
        raise PeerValueError(f"number {cut(text, 40)} is out of range")
    return value


def loadsJson(text: object, *, maxDepth: int = MAX_DEPTH, maxSize: int = MAX_TEXT) -> Any:
    """
    The value of a peer's JSON text (a C{str}, or UTF-8 C{bytes}).

    Refused: anything not a text, texts longer than C{maxSize}, invalid
    UTF-8, anything that is not strict JSON (C{NaN}, C{Infinity}, numbers
    out of a double's range, integers of more digits than Python converts),
    and values nested deeper than C{maxDepth}.

    @raise PeerValueError: for all of these, and for nothing else.
    """
    if not isinstance(text, str | bytes | bytearray):
        raise PeerValueError(f"expected a JSON text, got {typeName(text)}")
    if len(text) > maxSize:
        raise PeerValueError(f"a JSON text of {len(text)} bytes, more than {maxSize}")
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        value = json.loads(text, parse_constant=_refuseConstant, parse_float=_finiteFloat)
    except PeerValueError:
        raise
    except RecursionError:
        raise PeerValueError(f"JSON nested deeper than {maxDepth} levels") from None
    except (ValueError, TypeError, OverflowError, MemoryError) as e:
        # JSONDecodeError, UnicodeDecodeError and int's digit limit are
        # ValueErrors
        raise PeerValueError(f"not JSON: {errorText(e)}") from None
    if text.count("[") + text.count("{") > maxDepth:  # else it cannot be too deep
        checkDepth(value, maxDepth)
    return value


def checkDepth(value: object, maxDepth: int = MAX_DEPTH) -> None:
    """
    Make sure C{value} (decoded JSON or msgpack: lists, tuples, dicts and
    scalars) nests no deeper than C{maxDepth}, without recursion.

    @raise PeerValueError: it does.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= maxDepth:
            raise PeerValueError(f"a value nested deeper than {maxDepth} levels")
        for child in children:
            if isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))


_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxstring = LIMIT
_repr.maxother = LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 12


def cut(text: str, limit: int = LIMIT) -> str:
    """C{text} at most C{limit} characters long (plus a note of how much was cut)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def brief(value: object, limit: int = LIMIT) -> str:
    """A short, shallow repr of C{value}, of any type and depth; never raises."""
    try:
        return cut(_repr.repr(value), limit)
    except Exception:
        return f"<{typeName(value)}>"


def errorText(error: object, limit: int = LIMIT) -> str:
    """What an exception says (its type when it says nothing), cut; never raises."""
    try:
        text = str(error)
    except Exception:
        text = ""
    return cut(text, limit) if text else type(error).__name__


def typeName(value: object) -> str:
    """The kind of a decoded value, as a peer's protocol names it."""
    names = {
        list: "an array",
        tuple: "an array",
        dict: "a map",
        str: "a string",
        bytes: "binary",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        type(None): "nil",
    }
    return names.get(type(value), type(value).__name__)
