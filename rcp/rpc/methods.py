"""The methods one side of an RPC link offers, with the argument count each takes."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

#: A method implementation: called with the positional params of a request;
#: returns a value, a Deferred or a coroutine.
Handler = Callable[..., Any | Deferred[Any] | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """
    One callable method.

    @ivar minArgs: the least number of params it takes.
    @ivar maxArgs: the most, or L{None} for any number.
    """

    name: str
    handler: Handler
    minArgs: int
    maxArgs: int | None

    def accepts(self, argc: int) -> bool:
        return self.minArgs <= argc and (self.maxArgs is None or argc <= self.maxArgs)


def _arity(handler: Handler) -> tuple[int, int | None]:
    low = 0
    high: int | None = 0
    for p in inspect.signature(handler).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is p.empty:
                low += 1
            if high is not None:
                high += 1
        elif p.kind is p.VAR_POSITIONAL:
            high = None
    return low, high


class MethodRegistry:
    """
    A mutable table of methods: a server may offer more methods once a
    session has started (the agent does after ``i_am_here``).
    """

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self._methods: dict[str, Method] = {}
        for name, handler in (handlers or {}).items():
            self.register(name, handler)

    def register(
        self, name: str, handler: Handler, argc: int | tuple[int, int | None] | None = None
    ) -> None:
        """
        Offer C{handler} as C{name}.

        @param argc: how many params it takes, exactly (an int) or as a
            (least, most) range; read from the handler's signature if
            omitted.
        """
        low: int
        high: int | None
        if isinstance(argc, int):
            low, high = argc, argc
        elif argc is None:
            low, high = _arity(handler)
        else:
            low, high = argc
        self._methods[name] = Method(name, handler, low, high)

    def unregister(self, name: str) -> None:
        self._methods.pop(name, None)

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)
