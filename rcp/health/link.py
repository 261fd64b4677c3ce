"""
The figures of one link, kept by the link itself and read by the status
endpoint: pure bookkeeping with an injected clock, no I/O.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime

from .versions import Versions

#: the states a link reports
CONNECTING: Final = "connecting"
SYNCHRONISING: Final = "synchronising"
SYNCHRONISED: Final = "synchronised"
ENDED: Final = "ended"

#: round-trip samples kept (the recent ones)
RTT_SAMPLES: Final = 256


def percentile(samples: list[float], fraction: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class LinkHealth:
    """
    One link's state and counters.

    @ivar name: what the link is to this process (the satellite's module id
        or board name on the main board; C{controller} on a satellite).
    """

    def __init__(self, clock: IReactorTime, name: str) -> None:
        self.clock = clock
        self.name = name
        self.state = CONNECTING
        self.since = clock.seconds()
        self.peerAddress = ""
        self.peerName = ""
        self.peerVersions: Versions | None = None
        self.peerIsRcp: bool | None = None
        self.mismatches: list[str] = []
        self.rtt: deque[float] = deque(maxlen=RTT_SAMPLES)
        self.lastPoll: float | None = None
        self.lastEvent: float | None = None
        self.events = 0
        self.coalesced = 0
        self.queueDepth = 0
        self.reconnects = 0
        self.connections = 0
        self.endReason = ""
        self._queue: Any = None

    def watchQueue(self, queue: Any) -> None:
        """Read events, coalesced and queue depth from an L{rcp.tunnel.events.EventQueue}."""
        self._queue = queue

    def enter(self, state: str, reason: str = "") -> None:
        if state != self.state:
            self.state, self.since = state, self.clock.seconds()
        if state == ENDED:
            self.endReason = reason

    def connected(self, address: str) -> None:
        self.connections += 1
        if self.connections > 1:
            self.reconnects += 1
        self.peerAddress = address
        self.enter(SYNCHRONISING)

    def polled(self, events: int) -> None:
        now = self.clock.seconds()
        self.lastPoll = now
        if events:
            self.events += events
            self.lastEvent = now

    def roundTrip(self, seconds: float) -> None:
        if seconds >= 0:
            self.rtt.append(seconds)

    def _peerUptime(self) -> float | None:
        versions = self.peerVersions
        if versions is None or not versions.started:
            return None
        # the peer's start, by the wall clocks of two boards: a hint, never negative
        return round(max(0.0, time.time() - versions.started), 1)

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain values (for JSON); times as seconds ago."""
        now = self.clock.seconds()
        samples = list(self.rtt)
        if self._queue is not None:
            self.events = self._queue.delivered
            self.coalesced = self._queue.coalesced
            self.queueDepth = len(self._queue)

        def ago(t: float | None) -> float | None:
            return None if t is None else round(now - t, 3)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "name": self.name,
            "state": self.state,
            "for_s": round(now - self.since, 3),
            "peer_address": self.peerAddress,
            "peer_name": self.peerName,
            "peer_is_rcp": self.peerIsRcp,
            "peer_versions": self.peerVersions.asDict() if self.peerVersions else None,
            "version_mismatches": list(self.mismatches),
            "peer_boot_reason": self.peerVersions.bootReason if self.peerVersions else "",
            "peer_uptime_s": self._peerUptime(),
            "rtt_p50_ms": ms(percentile(samples, 0.50)),
            "rtt_p99_ms": ms(percentile(samples, 0.99)),
            "rtt_samples": len(samples),
            "last_poll_s_ago": ago(self.lastPoll),
            "last_event_s_ago": ago(self.lastEvent),
            "events": self.events,
            "coalesced": self.coalesced,
            "queue_depth": self.queueDepth,
            "reconnects": self.reconnects,
            "end_reason": self.endReason,
        }
