"""
Version consistency at start-up (rcp_hello): the versions' wire form from
an untrusted peer, the comparison, and the exchange between a real agent
and a real controller link over loopback TCP: rcp on both ends (versions
learnt, the liveness limit applies), a C++-like agent without the method
(upstream's behaviour, said once), a mismatch that warns (and raises an
EVerest error on the main board) and one that refuses, on either side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from rcp.controller.link import ControllerLink
from rcp.health.versions import (
    Hello,
    Versions,
    VersionsError,
    compare,
    firmwareVersion,
    isMissingMethod,
)
from rcp.rpc import wire
from rcp.station import MainSide, SatelliteBoard, StationOptions
from rcp.sync import SyncTimings

from .test_tap import _waitFor

reactor: Any = _reactor

V1 = Versions(rcp="1.0.0", firmware="fw 7", board="x")


class WireFormTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        v = Versions("0.1.0", "1", "debian 12", "2026.02.0", "satellite-1", "PowerOn", 1.7e9)
        self.assertEqual(Versions.fromWire(v.toWire()), v)

    def test_refused(self) -> None:
        bad: object
        for bad in (None, 3, "1.0", [], {"wire": "1"}, {"rcp": 5}, {"rcp": ""}):
            self.assertRaises(VersionsError, Versions.fromWire, bad)

    def test_cutAndCleaned(self) -> None:
        v = Versions.fromWire({"rcp": "1\n2" + "x" * 5000, "started": float("nan"), "board": 7})
        self.assertEqual(v.rcp, "12" + "x" * 62)
        self.assertEqual((v.started, v.board), (0.0, ""))

    @given(
        st.one_of(
            st.dictionaries(
                st.text(max_size=12),
                st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.binary()),
            ),
            st.dictionaries(st.sampled_from(["rcp", "wire", "started"]), st.text()),
        )
    )
    def test_anyMap(self, value: dict[str, Any]) -> None:
        try:
            v = Versions.fromWire(value)
        except VersionsError:
            return
        self.assertTrue(v.rcp)
        self.assertLessEqual(len(v.rcp), 64)

    def test_compare(self) -> None:
        ours = Versions("1.0", "1", "fw 7")
        self.assertEqual(compare(ours, Versions("1.0", "1", "fw 8"), ["wire", "rcp"]), [])
        found = compare(ours, Versions("1.1", "2", "fw 8"), ["wire", "rcp", "firmware"])
        self.assertEqual([m.field for m in found], ["wire", "rcp", "firmware"])
        # a value the peer does not know is no mismatch, except the wire protocol
        self.assertEqual(compare(ours, Versions("1.0", "1", ""), ["firmware"]), [])
        self.assertEqual(len(compare(ours, Versions("1.0", ""), ["wire"])), 1)

    def test_firmwareFromOsRelease(self) -> None:
        path = Path(self.mktemp())
        path.write_text('ID=charger\nVERSION_ID="4.2"\nBUILD_ID=20261201\n')
        self.assertEqual(firmwareVersion(str(path)), "charger 4.2 (20261201)")
        self.assertEqual(firmwareVersion("/nonexistent"), "")

    def test_missingMethod(self) -> None:
        self.assertTrue(isMissingMethod(wire.noSuchFunction("rcp_hello", 1)))
        self.assertFalse(isMissingMethod({"error": "x"}))


class ExchangeTests(TestCase):
    """An agent (a simulated satellite board) and a controller link, on loopback."""

    timeout = 30

    def setUp(self) -> None:
        self.logged: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.ended: list[tuple[int, str]] = []

    async def link(
        self, agentHello: Hello | None, controllerHello: Hello | None
    ) -> tuple[SatelliteBoard, ControllerLink, MainSide]:
        timings = SyncTimings(here_timeout=2, retry_interval=0.2, poll_timeout=30, poll_watchdog=60)
        options = StationOptions(
            satellites=1, secure=False, timings=timings, holdTime=0.2, agentHello=agentHello
        )
        board = SatelliteBoard(reactor, "satellite-1", 1, None, options, lambda b, t: None)
        await board.boot()
        self.addCleanup(board.stop)
        main = MainSide(reactor, 1, ["DEADBEEF"])
        link = ControllerLink(
            main.controller,
            reactor,
            TCP4ClientEndpoint(reactor, "127.0.0.1", board.port),
            lambda code, reason: self.ended.append((code, reason)),
            timings,
            holdTime=0.2,
            hello=controllerHello,
        )
        self.addCleanup(link.halt)
        main.start()
        link.start()
        return board, link, main

    def said(self, text: str) -> int:
        return sum(text in line for line in self.logged)

    async def test_rcpOnBothEnds(self) -> None:
        ours = Versions("0.1.0", board="main", firmware="fw 7")
        board, link, _ = await self.link(
            Hello(Versions("0.1.0", board="satellite-1"), liveness=4),
            Hello(ours, liveness=3),
        )
        await _waitFor(lambda: link.synced)
        self.assertTrue(link.peerIsRcp)
        assert link.peerVersions is not None
        self.assertEqual(link.peerVersions.board, "satellite-1")
        self.assertEqual(link.pollTimeout, 3)
        self.assertEqual(board.link.peerVersions, ours)
        self.assertEqual(board.link._core.timings.poll_watchdog, 4)
        self.assertEqual(self.said("the agent (satellite-1) runs rcp 0.1.0"), 1)
        self.assertEqual(
            self.said("the controller (main) runs rcp 0.1.0, wire 1, firmware fw 7"), 1
        )

    async def test_agentWithoutTheMethod(self) -> None:
        """A C++ agent answers rpclib's 'could not find function': upstream's behaviour."""
        _, link, _ = await self.link(None, Hello(Versions("0.1.0"), liveness=3))
        await _waitFor(lambda: link.synced)
        self.assertFalse(link.peerIsRcp)
        self.assertIsNone(link.peerVersions)
        self.assertEqual(link.pollTimeout, 30)
        self.assertEqual(self.said("does not tell its versions (a C++ agent)"), 1)

    async def test_controllerWithoutTheMethod(self) -> None:
        """A C++ controller never says hello: the agent keeps upstream's watchdog."""
        board, link, _ = await self.link(Hello(Versions("0.1.0"), liveness=3), None)
        await _waitFor(lambda: link.synced)
        self.assertIsNone(board.link.peerVersions)
        self.assertEqual(board.link._core.timings.poll_watchdog, 60)
        self.assertEqual(self.said("did not tell its versions (a C++ controller)"), 1)

    async def test_mismatchWarns(self) -> None:
        _, link, main = await self.link(
            Hello(Versions("0.2.0")), Hello(Versions("0.1.0"), policy="warn")
        )
        errors: list[dict[str, Any]] = []
        main.bus.module("watcher", {}).subscribeAllErrors(errors.append)
        await _waitFor(lambda: link.synced)
        self.assertEqual([m.field for m in link.mismatches], ["rcp"])
        self.assertEqual(self.said("version mismatch with the agent: rcp 0.1.0 here, 0.2.0"), 1)
        # raised on the main board, so that the backend hears of it
        raised = [e for e in errors if e.get("sub_type") == "rcp/VersionMismatch"]
        self.assertEqual(len(raised), 1, errors)
        self.assertEqual(raised[0]["type"], "generic/VendorWarning")

    async def test_mismatchRefused(self) -> None:
        board, link, _ = await self.link(
            Hello(Versions("0.2.0")), Hello(Versions("0.1.0"), policy="refuse")
        )
        await _waitFor(lambda: self.said("not synchronising") > 0)
        await deferLater(reactor, 1.0)  # it tries again, and says so once
        self.assertFalse(link.synced)
        self.assertIsNone(board.link.everestReady)  # the agent never synchronised
        self.assertEqual(self.said("version mismatch with the agent"), 1)
        self.assertEqual(self.ended, [])

    async def test_agentRefuses(self) -> None:
        _, link, _ = await self.link(
            Hello(Versions("0.2.0"), policy="refuse"), Hello(Versions("0.1.0"))
        )
        await _waitFor(lambda: self.said("the agent refused the link") > 0)
        self.assertFalse(link.synced)
        self.assertGreaterEqual(self.said("(versions.policy: refuse: not synchronising)"), 1)
