"""Small helpers the simulated EVerest modules share."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from ..interface import rfc3339


def now(clock: IReactorTime) -> datetime:
    """The clock's time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.seconds(), UTC)


def timestamp(clock: IReactorTime) -> str:
    """The clock's time in EVerest's format (RFC 3339, milliseconds, Z)."""
    return rfc3339(now(clock))


def secondsUntil(clock: IReactorTime, moment: object) -> float:
    """
    How long from the clock's now until C{moment}, an RFC 3339 text; 0 when
    it is absent, unreadable or already past.
    """
    if not isinstance(moment, str) or not moment:
        return 0.0
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return max(0.0, parsed.timestamp() - clock.seconds())


def sleep(clock: IReactorTime, seconds: float) -> Deferred[None]:
    """A cancellable pause of C{seconds} on C{clock}."""
    return deferLater(clock, max(0.0, seconds), lambda: None)
