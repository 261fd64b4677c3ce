"""
Text from a peer, fit for one log line.

A peer may send anything as a string (an error text, a method name, a JSON
document of 500 KB); what is logged of it is cut to a sane length and shown
with its escapes, so one line stays one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.logger import ILogObserver
from zope.interface import implementer

#: how much of a peer's string a log line shows by default
LIMIT = 200


def cut(text: object, limit: int = LIMIT) -> str:
    """
    C{text} (any value; not a string: its C{repr}) as at most about
    C{limit} characters on one line, saying how much was left out.
    """
    whole = text if isinstance(text, str) else repr(text)
    shown = _oneLine(whole[:limit])[:limit]
    if len(whole) <= limit and len(shown) == len(_oneLine(whole)):
        return shown
    return f"{shown}... ({len(whole)} characters)"


def _oneLine(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


#: an event field longer than this in the log output is cut
FIELD_LIMIT = 1000


class _Shown:
    """A long value as the log shows it: cut, in every format."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return self.text


def _cutValue(value: object, limit: int) -> object:
    if isinstance(value, str):
        return value if len(value) <= limit else cut(value, limit)
    if isinstance(value, bytes | bytearray | list | tuple | dict | set | frozenset):
        shown = repr(value)
        return value if len(shown) <= limit else _Shown(cut(shown, limit))
    return value


def cutEvent(event: Mapping[str, Any], limit: int = FIELD_LIMIT) -> dict[str, Any]:
    """
    A copy of the log event C{event} with every long field value cut, so
    that nothing any call site was given reaches the log at full length.
    The C{log_*} fields of the logging system are kept as they are.
    """
    return {
        key: value if key.startswith("log_") else _cutValue(value, limit)
        for key, value in event.items()
    }


@implementer(ILogObserver)
class CuttingObserver:
    """Passes events on to C{observer} with long field values cut."""

    def __init__(self, observer: ILogObserver, limit: int = FIELD_LIMIT) -> None:
        self.observer = observer
        self.limit = limit

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.observer(cutEvent(event, self.limit))
