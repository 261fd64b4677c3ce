"""
The one-line summary a synchronised link logs now and then (setting
C{link.summary_interval}): the peer, the round-trip time, and the events
forwarded since the last summary.

L{LinkSummary} is pure: it counts and formats, with an injected clock and
two sources (a running total of events, the current round-trip time).
L{SummaryTimer} calls it at the interval and hands the line to a logger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: the summary's log format; its fields come from L{LinkSummary.fields}
FORMAT = (
    "{side}: link to {peer} synchronised for {up}: RTT {rtt},"
    " {events} event(s) forwarded in the last {period}"
)


def formatDuration(seconds: float) -> str:
    """C{42 s}, C{10 min}, C{2 h 5 min}, C{3 d 4 h}."""
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def formatRtt(seconds: float | None) -> str:
    """C{0.4 ms}, C{12 ms}; C{unknown} when the connection cannot tell."""
    if seconds is None:
        return "unknown"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


class LinkSummary:
    """
    @param side: C{"agent"} or C{"controller"}, first in the line.
    @param peer: who is at the other end (address, board name).
    @param totalEvents: the events forwarded since the link started, a
        running total; the summary reports the difference.
    @param roundTrip: the current round-trip time in seconds, or L{None}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        side: str,
        peer: str,
        totalEvents: Callable[[], int],
        roundTrip: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.side = side
        self.peer = peer
        self._totalEvents = totalEvents
        self._roundTrip = roundTrip
        self._synced = self._last = clock.seconds()
        self._base = totalEvents()

    def fields(self) -> dict[str, Any]:
        """The fields of one summary, for L{FORMAT}; starts the next period."""
        now = self.clock.seconds()
        total = self._totalEvents()
        fields = {
            "side": self.side,
            "peer": self.peer,
            "up": formatDuration(now - self._synced),
            "rtt": formatRtt(self._roundTrip()),
            "events": total - self._base,
            "period": formatDuration(now - self._last),
        }
        self._last, self._base = now, total
        return fields

    def line(self) -> str:
        """One summary as text (starts the next period, as L{fields} does)."""
        return FORMAT.format(**self.fields())


class SummaryTimer:
    """Logs a L{LinkSummary} every C{interval} seconds at info level (0: never)."""

    def __init__(self, clock: IReactorTime, interval: float, log: Logger) -> None:
        self.clock = clock
        self.interval = interval
        self.log = log
        self._loop: LoopingCall | None = None

    def start(self, summary: LinkSummary) -> None:
        self.stop()
        if self.interval <= 0:
            return
        loop = self._loop = LoopingCall(lambda: self.log.info(FORMAT, **summary.fields()))
        loop.clock = self.clock
        loop.start(self.interval, now=False)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
