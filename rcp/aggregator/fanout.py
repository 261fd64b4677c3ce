"""Call every board at once, each call with its own deadline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure


@dataclass(frozen=True)
class Answer:
    """
    One board's answer.

    @ivar value: the result, when C{ok}.
    @ivar error: what went wrong, in one line, when not C{ok} (a timeout too).
    """

    ok: bool
    value: Any = None
    error: str = ""


def _answer(outcome: Any) -> Answer:
    if isinstance(outcome, Failure):
        return Answer(False, error=outcome.getErrorMessage()[:200] or repr(outcome.value)[:200])
    return Answer(True, outcome)


def callOne(clock: IReactorTime, call: Callable[[], Any], timeout: float) -> Deferred[Answer]:
    """C{call()} with a deadline of C{timeout} seconds; never fails."""
    d: Deferred[Any] = maybeDeferred(call)
    d.addTimeout(timeout, clock)
    return d.addBoth(_answer)


def fanOut(
    clock: IReactorTime, calls: Mapping[str, Callable[[], Any]], timeout: float
) -> Deferred[dict[str, Answer]]:
    """
    Start every call at once; fires with every board's L{Answer} when the
    last one answered or its deadline passed.
    """
    names = list(calls)
    pending = [callOne(clock, calls[name], timeout) for name in names]
    d: Deferred[Any] = DeferredList(pending)
    return d.addCallback(lambda results: {n: r for n, (_, r) in zip(names, results, strict=True)})
