"""The one-line summary of a synchronised link (rcp/summary.py, rcp/rtt.py)."""

from __future__ import annotations

import socket
from typing import cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rcp.rtt import tcpRoundTrip
from rcp.summary import LinkSummary, SummaryTimer, formatDuration, formatRtt


class FormatTests(SynchronousTestCase):
    def test_durations(self) -> None:
        self.assertEqual(formatDuration(0.4), "0 s")
        self.assertEqual(formatDuration(42), "42 s")
        self.assertEqual(formatDuration(600), "10 min")
        self.assertEqual(formatDuration(2 * 3600 + 5 * 60), "2 h 5 min")
        self.assertEqual(formatDuration(3 * 86400 + 4 * 3600), "3 d 4 h")

    def test_rtt(self) -> None:
        self.assertEqual(formatRtt(None), "unknown")
        self.assertEqual(formatRtt(0.00042), "0.4 ms")
        self.assertEqual(formatRtt(0.0123), "12 ms")


class LinkSummaryTests(SynchronousTestCase):
    def test_countsSinceTheLastSummary(self) -> None:
        clock = Clock()
        total = [5]  # events before the link synchronised do not count
        summary = LinkSummary(clock, "controller", "the agent at 10.0.0.2:4129", lambda: total[0])
        clock.advance(600)
        total[0] = 17
        self.assertEqual(
            summary.line(),
            "controller: link to the agent at 10.0.0.2:4129 synchronised for 10 min:"
            " RTT unknown, 12 event(s) forwarded in the last 10 min",
        )
        clock.advance(600)
        rtt = LinkSummary(clock, "agent", "x", lambda: 0, lambda: 0.002).fields()["rtt"]
        self.assertEqual(rtt, "2.0 ms")
        self.assertEqual(summary.fields()["events"], 0)
        self.assertEqual(summary.fields()["up"], "20 min")


class TimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        self.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.clock = Clock()

    def test_everyInterval(self) -> None:
        timer = SummaryTimer(self.clock, 600, self.log)
        timer.start(LinkSummary(self.clock, "agent", "p", lambda: 0))
        self.clock.advance(599)
        self.assertEqual(self.events, [])
        self.clock.advance(1)
        self.clock.advance(600)
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[0]["log_level"], LogLevel.info)
        self.assertIn("link to p synchronised for 10 min", formatEvent(self.events[0]))
        timer.stop()
        self.clock.advance(6000)
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroIsOff(self) -> None:
        timer = SummaryTimer(self.clock, 0, self.log)
        timer.start(LinkSummary(self.clock, "agent", "p", lambda: 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        timer.stop()


class RttTests(SynchronousTestCase):
    def test_loopbackTcp(self) -> None:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            with socket.create_connection(server.getsockname()) as client:

                class Transport:
                    def getHandle(self) -> socket.socket:
                        return client

                class Wrapper:  # like TLS over TCP: no socket of its own
                    transport = Transport()

                rtt = tcpRoundTrip(Wrapper())
        self.assertIsNotNone(rtt)
        assert rtt is not None
        self.assertLess(rtt, 1.0)
        self.assertIsNone(tcpRoundTrip(None))
        self.assertIsNone(tcpRoundTrip(object()))
