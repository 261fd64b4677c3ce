"""
A whole station over real sockets: a main board and two satellites, each
with a simulated EVerest, linked by rcp over 127.0.0.1 with mutual TLS
(L{rcp.station}), with short timings.

Start-up, charging sessions authorized on the main board, every tunnelled
command and variable, push_var, the failures that end a link (and bring the
station back to a common start point), and ``rcp demo`` end to end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

import rcp.agent.link
from rcp.agent.link import AgentLink
from rcp.controller.link import ControllerLink
from rcp.everest.interface import CommandError
from rcp.everest.sim.bus import SimModule
from rcp.rpc import RpcProtocol
from rcp.station import Station, StationOptions
from rcp.sync import SyncTimings
from rcp.tunnel.table import CHANNELS, REQUIRED

from .common import FULL_SESSION, ROOT, freePort

TIMINGS = SyncTimings(here_timeout=1, retry_interval=0.1, poll_timeout=3, poll_watchdog=3)

#: how long a condition may take to come true
PATIENCE = 10.0

#: the agent's requirements a SatelliteBoard leaves unconnected
ABSENT = frozenset(
    {
        "auth_token_provider",
        "dc_external_derate",
        "display_message",
        "iso15118_extensions",
        "ocpp_data_transfer",
        "uk_random_delay",
    }
)

# Sample arguments and the satellite's answers for each command of a
# channel the satellite connects (system.reset: see ExpectedDisconnectTests).
TOKEN = {"id_token": {"value": "DEADBEEF", "type": "ISO14443"}, "authorization_type": "RFID"}
PNC = {"pnc_enabled": True, "central_contract_validation_allowed": False}
LIMITS = {"uuid": "main", "valid_until": "2030-01-01T00:00:00.000Z", "limits_root_side": {}}
SYSTEM_TIME = "2026-11-25T12:00:00.000Z"


@dataclass(frozen=True)
class Sample:
    args: dict[str, Any]
    #: the result; for a dict, only these keys are compared
    result: Any


def samples(closedPort: int) -> dict[tuple[str, str], Sample]:
    nowhere = f"http://127.0.0.1:{closedPort}"
    return {
        ("evse_manager", "get_evse"): Sample(
            {}, {"id": 1, "connectors": [{"id": 1, "type": "cCCS2"}]}
        ),
        ("evse_manager", "enable_disable"): Sample(
            {
                "connector_id": 0,
                "cmd_source": {
                    "enable_source": "LocalAPI",
                    "enable_state": "Enable",
                    "enable_priority": 100,
                },
            },
            True,
        ),
        ("evse_manager", "authorize_response"): Sample(
            {"provided_token": TOKEN, "validation_result": {"authorization_status": "Accepted"}},
            None,
        ),
        ("evse_manager", "withdraw_authorization"): Sample({}, None),
        ("evse_manager", "reserve"): Sample({"reservation_id": 42}, True),
        ("evse_manager", "cancel_reservation"): Sample({}, None),
        # no transaction runs: the EvseManager refuses, over the link
        ("evse_manager", "pause_charging"): Sample({}, False),
        ("evse_manager", "resume_charging"): Sample({}, False),
        ("evse_manager", "stop_transaction"): Sample({"request": {"reason": "Remote"}}, False),
        ("evse_manager", "force_unlock"): Sample({"connector_id": 1}, True),
        ("evse_manager", "external_ready_to_start_charging"): Sample({}, True),
        ("evse_manager", "set_plug_and_charge_configuration"): Sample(
            {"plug_and_charge_configuration": PNC}, None
        ),
        ("evse_manager", "update_allowed_energy_transfer_modes"): Sample(
            {"allowed_energy_transfer_modes": ["AC_single_phase_core"]}, "Accepted"
        ),
        ("energy", "enforce_limits"): Sample({"value": LIMITS}, None),
        ("system", "update_firmware"): Sample(
            {"firmware_update_request": {"location": f"{nowhere}/fw.bin", "request_id": -1}},
            "Accepted",
        ),
        ("system", "allow_firmware_installation"): Sample({}, None),
        ("system", "upload_logs"): Sample(
            {"upload_logs_request": {"location": f"{nowhere}/logs/", "request_id": 3}},
            {"upload_logs_status": "Accepted"},
        ),
        ("system", "is_reset_allowed"): Sample({"type": "Soft"}, True),
        ("system", "set_system_time"): Sample({"timestamp": SYSTEM_TIME}, True),
        ("system", "get_boot_reason"): Sample({}, "PowerUp"),
    }


#: arguments for the commands of channels the satellite does not connect
ABSENT_ARGS: dict[str, Any] = {
    "derate": {"max_power_W": 1000.0},
    "request": {"id": 1},
    "certificate_response": {"status": "Accepted"},
    "value": 30,
}


@dataclass
class Before:
    """The station just before a failure."""

    mainBoots: int
    satelliteBoots: list[int]
    links: list[ControllerLink]
    agents: list[AgentLink]


def exitCode(link: ControllerLink) -> int | None:
    """The code a controller's process ended with, if it ended."""
    return None if link.ended is None else link.ended[0]


def _energy(value: Any) -> float:
    return float(value["energy_Wh_import"]["total"])


def _trials(call: IDelayedCall) -> bool:
    """Whether C{call} is trial's own (its timeouts)."""
    func = getattr(call, "func", None)
    return str(getattr(func, "__module__", "")).startswith("twisted.trial")


class StationTestCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.notes: list[str] = []
        self._baseline = set(reactor.getReaders()) | set(reactor.getWriters())

    def _note(self, board: str, text: str) -> None:
        self.notes.append(f"{time.monotonic():.3f} {board}: {text}")

    def makeStation(
        self, timings: SyncTimings = TIMINGS, satellites: int = 2, **options: Any
    ) -> Station:
        """A station that is not started yet; it stops when the test ends."""
        station = Station(
            reactor,
            StationOptions(
                satellites=satellites,
                timings=timings,
                holdTime=0.2,
                bootTime=0.1,
                meterInterval=0.1,
                **options,
            ),
            pki=Path(self.mktemp()),
            note=self._note,
        )
        self.addCleanup(self._stop, station)
        return station

    async def startStation(self, timings: SyncTimings = TIMINGS) -> Station:
        station = self.makeStation(timings)
        await station.start()
        self.assertReady(station)
        await self.settled(station)
        return station

    async def settled(self, station: Station) -> None:
        """
        What the main board's modules started at global ready is done: Auth
        asks every satellite for its EVSE then, and a command cut by a failure
        would be logged as one. A command of ours on each link comes back
        after those.
        """
        for index, satellite in enumerate(station.satellites):
            evse = await station.main.consumer.call(index, "get_evse")
            self.assertEqual(evse["id"], satellite.evseId)

    async def _stop(self, station: Station) -> None:
        """Stop every board, then wait until their timers and sockets are gone."""
        station.stop()
        deadline = time.monotonic() + 5
        while self._leftovers() and time.monotonic() < deadline:
            await deferLater(reactor, 0.01)
        # whatever is left, trial's janitor reports (and the test fails)

    def _leftovers(self) -> list[object]:
        calls: list[object] = [
            c for c in reactor.getDelayedCalls() if c.active() and not _trials(c)
        ]
        selectables = set(reactor.getReaders()) | set(reactor.getWriters())
        # the reactor's own (its wakers), as trial's janitor leaves them
        internal = set(getattr(reactor, "_internalReaders", ()))
        return calls + [s for s in selectables - internal if s not in self._baseline]

    async def until(self, what: str, check: Callable[[], bool], patience: float = PATIENCE) -> None:
        """Wait until C{check()} is true; fail after C{patience} seconds."""
        deadline = time.monotonic() + patience
        while not check():
            if time.monotonic() > deadline:
                self.fail(f"not within {patience:g} s: {what}\n" + "\n".join(self.notes[-30:]))
            await deferLater(reactor, 0.01)

    # -- the station's state ------------------------------------------------

    def isReady(self, station: Station) -> bool:
        """Every link synchronised, every EVerest of the station ready."""
        main = station.main
        return (
            not main.restarting
            and main.bus.globallyReady
            and all(link.synced for link in main.links)
            and all(
                not s.resetting and s.bus.globallyReady and s.link.everestReady is not None
                for s in station.satellites
            )
        )

    def assertReady(self, station: Station) -> None:
        main = station.main
        self.assertFalse(main.restarting)
        self.assertTrue(main.bus.globallyReady)
        self.assertEqual(len(main.links), len(station.satellites))
        for link in main.links:
            self.assertTrue(link.synced)
            self.assertIsNone(link.ended)
        for satellite in station.satellites:
            self.assertFalse(satellite.resetting)
            # a satellite's EVerest is ready only once its link is synchronised
            self.assertTrue(satellite.bus.globallyReady)
            self.assertIsNotNone(satellite.link.everestReady)

    def before(self, station: Station) -> Before:
        return Before(
            station.main.boots,
            [s.boots for s in station.satellites],
            list(station.main.links),
            [s.link for s in station.satellites],
        )

    async def resynced(self, station: Station, before: Before) -> None:
        """The station went back to a common start point and is ready again."""
        main = station.main
        await self.until("the main board restarted", lambda: main.boots > before.mainBoots)
        await self.until(
            "every satellite rebooted",
            lambda: all(
                s.boots > boots
                for s, boots in zip(station.satellites, before.satelliteBoots, strict=True)
            ),
        )
        await self.until("every link synchronised again", lambda: self.isReady(station))
        self.assertReady(station)
        await self.settled(station)
        # one restart of the main board was enough
        self.assertEqual(main.boots, before.mainBoots + 1)
        for satellite, agent in zip(station.satellites, before.agents, strict=True):
            self.assertIsNot(satellite.link, agent)
            self.assertTrue(agent.halted)
        for link in before.links:
            self.assertTrue(link.halted)
            self.assertNotIn(link, main.links)


class StartTests(StationTestCase):
    async def test_everyLinkSynchronised(self) -> None:
        """
        The satellites' EVerests wait for their links; the main board is
        ready once every link is synchronised.
        """
        station = self.makeStation()
        main = station.main
        # (satellite, agent link synchronised when its EVerest went ready)
        readyAt: list[tuple[str, bool]] = []

        def watch(probe: SimModule, name: str, agent: AgentLink) -> None:
            probe.signalReady().addCallback(
                lambda _: readyAt.append((name, agent.everestReady is not None))
            )

        for satellite in station.satellites:
            await satellite.boot()
            self.assertFalse(satellite.bus.globallyReady)
            self.assertIsNone(satellite.link.everestReady)
            # one more module on the satellite, ready at once: it sees global ready
            watch(satellite.bus.module("test_probe"), satellite.name, satellite.link)
        main.boot()
        self.assertFalse(main.bus.globallyReady)
        linksAtReady: list[list[bool]] = []
        main.whenReady().addCallback(
            lambda _: linksAtReady.append([link.synced for link in main.links])
        )
        await self.until("the main board ready", lambda: bool(linksAtReady))
        self.assertEqual(linksAtReady, [[True, True]])
        await self.until("both satellites ready", lambda: len(readyAt) == 2)
        self.assertEqual(sorted(readyAt), [("satellite-1", True), ("satellite-2", True)])
        await self.until("the station ready", lambda: self.isReady(station))
        self.assertReady(station)
        self.assertEqual(main.boots, 1)
        self.assertEqual([s.boots for s in station.satellites], [1, 1])
        self.assertEqual([s.bootReason for s in station.satellites], ["PowerUp", "PowerUp"])
        await self.settled(station)
        for satellite in station.satellites:
            # mutual TLS: the agent knows the main board by its certificate
            session = satellite.link._session
            assert session is not None
            self.assertEqual(session.peerIdentity, "main")


class ChargingTests(StationTestCase):
    async def test_sessionOnEachSatellite(self) -> None:
        """
        A card read at a satellite is authorized by the main board's Auth; the
        session, pause and resume, a remote stop and an error all cross the
        link.
        """
        station = await self.startStation()
        consumer = station.main.consumer
        for index, satellite in enumerate(station.satellites):
            evse = satellite.evse

            def events(index: int = index) -> list[str]:
                return consumer.events(index)

            def energy(index: int = index) -> list[float]:
                return [_energy(v) for v in consumer.values(index, "powermeter")]

            # the car arrives, the driver shows a card the main board accepts
            self.assertTrue(evse.plugIn())
            await self.until("AuthRequired", lambda: "AuthRequired" in events())
            card = station.options.acceptedTokens[index]
            evse.swipeCard(card)
            await self.until("TransactionStarted", lambda: "TransactionStarted" in events())
            [started] = [
                e for e in consumer.sessionEvents(index) if e["event"] == "TransactionStarted"
            ]
            self.assertEqual(started["transaction_started"]["id_tag"]["id_token"]["value"], card)
            # the token was meant for this satellite's port: the controller said so
            self.assertEqual(
                started["transaction_started"]["id_tag"]["connectors"], [satellite.evseId]
            )
            self.assertEqual(evse.state, "Charging")
            await self.until("rising meter values", lambda: len(set(energy())) >= 3)
            readings = energy()
            self.assertEqual(readings, sorted(readings))
            self.assertTrue(consumer.values(index, "telemetry"))

            # pause and resume from the main board
            self.assertIs(await consumer.pause(index), True)
            await self.until("ChargingPausedEVSE", lambda: "ChargingPausedEVSE" in events())
            self.assertEqual(evse.state, "ChargingPausedEVSE")
            self.assertIs(await consumer.resume(index), True)
            await self.until("charging again", lambda: events()[-1] == "ChargingStarted")
            self.assertEqual(evse.state, "Charging")

            # a remote stop, then the car leaves
            self.assertIs(await consumer.remoteStop(index), True)
            await self.until("TransactionFinished", lambda: "TransactionFinished" in events())
            [finished] = [
                e for e in consumer.sessionEvents(index) if e["event"] == "TransactionFinished"
            ]
            self.assertEqual(finished["transaction_finished"]["reason"], "Remote")
            self.assertTrue(evse.unplug())
            await self.until("SessionFinished", lambda: events()[-1] == "SessionFinished")
            self.assertEqual(
                events(),
                FULL_SESSION,
            )

            # an error with a sub_type, raised and cleared on the satellite
            raised = evse.injectError("MREC4OverCurrentFailure", "L2", "over current")

            def seen(raised: dict[str, Any] = raised, index: int = index) -> list[str]:
                return [
                    e["state"]
                    for e in consumer.errors()
                    if (e["type"], e["sub_type"], e["origin"])
                    == (raised["type"], raised["sub_type"], raised["origin"])
                ]

            await self.until("the error at the main board", lambda: seen() == ["Active"])
            self.assertTrue(evse.clearInjected("MREC4OverCurrentFailure", "L2"))
            await self.until(
                "the clear at the main board", lambda: seen() == ["Active", "ClearedByModule"]
            )
            self.assertEqual(raised["type"], "evse_manager/MREC4OverCurrentFailure")
            self.assertEqual(
                raised["origin"],
                {
                    "module_id": "connector_1",
                    "implementation_id": "evse",
                    "mapping": {"evse": satellite.evseId},
                },
            )
            self.assertEqual(station.main.links[index].tunnel.activeErrors, [])
        self.assertReady(station)


class TunnelTests(StationTestCase):
    async def test_everyCommand(self) -> None:
        """
        Every command of the table, called by a module on the main board,
        reaches satellite-1 over the link: its modules answer, or the agent
        gives the table's "absent" answer for what the board does not connect.
        """
        station = await self.startStation()
        satellite = station.satellites[0]
        self.assertEqual(
            {c.name for c in CHANNELS if not satellite.link.everest.connections(c.name)}, ABSENT
        )
        probe = station.main.bus.module(
            "test_probe",
            {
                **{c.name: [("satellite_1", c.name)] for c in CHANNELS},
                "satellite": [("satellite_1", "satellite")],
            },
        )
        systemVars: list[tuple[str, Any]] = []

        def recorder(var: str) -> Callable[[Any], None]:
            return lambda value: systemVars.append((var, value))

        for var in ("firmware_update_status", "log_status"):
            probe.subscribeVar("system", var, recorder(var))
        flows: list[Any] = []
        probe.subscribeVar("energy", "energy_flow_request", flows.append)

        table = samples(freePort())
        called = set()
        for channel in CHANNELS:
            for command in channel.commands:
                key = (channel.name, command.name)
                if key == ("system", "reset"):
                    continue  # the board resets: ExpectedDisconnectTests
                if channel.name in ABSENT:
                    self.assertIsNot(command.absent, REQUIRED)
                    args = {arg.name: ABSENT_ARGS[arg.name] for arg in command.args}
                    expected = command.absent
                else:
                    sample = table[key]
                    args, expected = sample.args, sample.result
                result = await probe.call(channel.name, command.name, args)
                if isinstance(expected, dict) and isinstance(result, dict):
                    result = {k: result.get(k) for k in expected}
                self.assertEqual(result, expected, f"{channel.name}.{command.name}")
                called.add(key)
        self.assertEqual(set(table) - called, set())

        # what the satellite's modules did
        evse, system = satellite.evse, satellite.system
        self.assertEqual(evse.plugAndChargeConfiguration, PNC)
        self.assertEqual(evse.allowedEnergyTransferModes, ["AC_single_phase_core"])
        self.assertEqual(evse.enforcedLimits, LIMITS)
        self.assertIsNone(evse.reservationId)
        self.assertEqual(system.systemTime, SYSTEM_TIME)
        consumer = station.main.consumer
        await self.until(
            "the reservation's events",
            lambda: {"ReservationStart", "ReservationEnd"} <= set(consumer.events(0)),
        )
        # variables back: enforced limits, the energy node, system statuses
        await self.until("enforced_limits", lambda: consumer.latest(0, "enforced_limits") == LIMITS)
        await self.until("energy_flow_request", lambda: bool(flows))
        self.assertEqual(flows[-1]["uuid"], "connector_1")
        await self.until(
            "firmware and log statuses",
            lambda: (
                {
                    ("firmware_update_status", "Downloading"),
                    ("log_status", "Uploading"),
                }
                <= {(var, next(iter(v.values()))) for var, v in systemVars}
            ),
        )

        # the controller's own interface
        self.assertIs(await probe.call("satellite", "is_connected", {}), True)
        self.assertEqual(
            await probe.call("satellite", "get_local_endpoint_address", {}), "127.0.0.1"
        )
        self.assertEqual(
            await probe.call("satellite", "get_remote_endpoint_address", {}), "127.0.0.1"
        )

    async def test_evseVars(self) -> None:
        """What each satellite's EvseManager publishes when it goes ready reaches the main board."""
        station = await self.startStation()
        consumer = station.main.consumer
        for index, satellite in enumerate(station.satellites):
            evse = satellite.evse
            expected = {
                "evse_id": f"DE*RCP*E{satellite.name.upper()}",
                "hw_capabilities": evse.hardwareCapabilities(),
                "supported_energy_transfer_modes": ["AC_three_phase_core"],
                "waiting_for_external_ready": False,
                "limits": evse.limits(),
                "ready": True,
            }
            for var, value in expected.items():

                def arrived(index: int = index, var: str = var) -> bool:
                    return consumer.latest(index, var) is not None

                await self.until(f"{satellite.name} {var}", arrived)
                self.assertEqual(consumer.values(index, var), [value], f"{satellite.name} {var}")
        # the satellite's get_evse answers with its own EVSE id: Auth learnt it
        await self.until(
            "Auth knows each EVSE",
            lambda: [v.evseId for v in station.main.auth.evses] == [1, 2],
        )

    async def test_pushVar(self) -> None:
        """Token statuses of the main board's Auth reach every satellite's agent."""
        station = await self.startStation()
        statuses: dict[str, list[Any]] = {}
        for satellite in station.satellites:
            seen: list[Any] = []
            statuses[satellite.name] = seen
            listener = satellite.bus.module(
                "test_listener", {"auth": [("satellite_agent", "auth")]}
            )
            listener.subscribeVar("auth", "token_validation_status", seen.append)
        # an unknown card at satellite-2's reader
        station.satellites[1].evse.swipeCard("BADC0FFE")
        for name, received in statuses.items():

            def both(received: list[Any] = received) -> bool:
                return len(received) == 2

            await self.until(f"statuses at {name}", both)
            self.assertEqual([s["status"] for s in received], ["Processing", "Rejected"], name)
            for status in received:
                self.assertEqual(status["token"]["id_token"]["value"], "BADC0FFE")
                self.assertEqual(status["token"]["connectors"], [2])


class FailureTests(StationTestCase):
    async def test_agentRestarts(self) -> None:
        """
        A satellite that resets under a running controller ends it (code 1):
        the main board restarts and every board starts again.
        """
        station = await self.startStation()
        before = self.before(station)
        station.satellites[0].reset("test: the agent restarts")
        await self.resynced(station, before)
        self.assertEqual(exitCode(before.links[0]), 1)
        self.assertEqual(station.satellites[0].bootReason, "ApplicationReset")
        self.assertEqual(before.agents[1].resetReason, "link lost")

    async def test_controllerRestarts(self) -> None:
        """
        A main board that restarts meets agents that saw a controller
        already: they answer i_am_here with true and reset.
        """
        # Hold the agents' reset back long enough for the new controller to
        # reach them (the agent resets 250 ms after losing its controller).
        self.patch(rcp.agent.link, "RESET_DELAY", 1.0)
        log = EventLoggingObserver()
        globalLogPublisher.addObserver(log)
        self.addCleanup(globalLogPublisher.removeObserver, log)
        station = await self.startStation()
        before = self.before(station)
        station.main.restart("test: the controller restarts")
        await self.resynced(station, before)
        for agent in before.agents:
            answers = [
                e["seen"]
                for e in log
                if e.get("log_source") is agent
                and str(e.get("log_format", "")).startswith("agent: i_am_here from")
            ]
            # false to the first controller, true to the restarted one
            self.assertEqual(answers[0], False)
            self.assertIn(True, answers[1:])
            self.assertEqual(agent.resetReason, "link lost")
        for link in before.links:
            self.assertIsNone(link.ended)  # halted with the board, not ended

    async def test_linkCutMidCall(self) -> None:
        """
        A command in flight when the link breaks fails at the main board
        (it does not hang), and the station starts again.
        """
        station = await self.startStation()
        satellite = station.satellites[0]
        held: list[Deferred[bool]] = []

        def hold(args: dict[str, Any]) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            held.append(d)
            return d

        satellite.evse.module.provideCommand("evse", "pause_charging", hold)
        before = self.before(station)
        call = station.main.consumer.pause(0)
        await self.until("pause_charging at the satellite", lambda: bool(held))
        self.assertFalse(call.called)
        for proto in list(satellite.link._connections):
            proto.abort()
        await self.until("the call failed", lambda: call.called)
        try:
            await call
        except CommandError as e:
            self.assertIn(e.kind, ("HandlerException", "Shutdown"))
        else:
            self.fail("pause_charging succeeded over a broken link")
        await self.resynced(station, before)
        self.assertEqual(exitCode(before.links[0]), 1)

    async def test_pollOverdue(self) -> None:
        """An agent that stops answering polls ends the controller (code 1)."""
        timings = SyncTimings(here_timeout=1, retry_interval=0.1, poll_timeout=1, poll_watchdog=3)
        station = await self.startStation(timings)
        satellite = station.satellites[0]

        def never() -> Deferred[str]:
            return Deferred()

        self.patch(satellite.link.queue, "retrieve", never)
        before = self.before(station)
        await self.resynced(station, before)
        self.assertEqual(before.links[0].ended, (1, "no answer to a poll within 1 s"))

    async def test_pollWatchdog(self) -> None:
        """A controller that stops polling: the agent resets its board."""
        timings = SyncTimings(here_timeout=1, retry_interval=0.1, poll_timeout=3, poll_watchdog=1.5)
        station = await self.startStation(timings)
        link = station.main.links[0]
        self.patch(link, "_poll", lambda: None)
        before = self.before(station)
        await self.resynced(station, before)
        self.assertEqual(before.agents[0].resetReason, "no poll for 1.5 s")
        self.assertEqual(exitCode(link), 1)

    async def test_queueOverflow(self) -> None:
        """More events than the agent may queue reset the satellite."""
        station = self.makeStation()
        station.satellites[0].queueLimit = 20
        await station.start()
        await self.settled(station)
        before = self.before(station)
        module = station.satellites[0].evse.module
        for n in range(50):  # in one reactor turn: no poll drains them meanwhile
            module.publishVar("evse", "session_event", {"event": "Flood", "n": n})
        await self.resynced(station, before)
        agent = before.agents[0]
        self.assertTrue(agent.queue.overflowed)
        self.assertEqual(agent.resetReason, "event queue overflow")
        self.assertEqual(exitCode(before.links[0]), 1)
        self.assertEqual(station.satellites[0].queueLimit, 20)

    async def test_exit(self) -> None:
        """A controller that stops says exit: the agent resets its board."""
        station = await self.startStation()
        before = self.before(station)
        link = station.main.links[0]
        await link.stop()
        satellite = station.satellites[0]
        await self.until("satellite-1 rebooted", lambda: satellite.boots > before.satelliteBoots[0])
        self.assertEqual(before.agents[0].resetReason, "controller exit")
        self.assertEqual(satellite.bootReason, "ApplicationReset")
        # stopping on purpose does not end the process with an exit code
        self.assertIsNone(link.ended)
        self.assertFalse(link.synced)
        self.assertEqual(station.main.boots, before.mainBoots)
        # the other link is untouched
        self.assertTrue(station.main.links[1].synced)
        self.assertIs(station.satellites[1].link, before.agents[1])
        self.assertIsNone(before.agents[1].resetReason)


class ExpectedDisconnectTests(StationTestCase):
    async def test_systemReset(self) -> None:
        """
        A reset requested from the main board: the controller ends with code
        0, not 1, and the station starts again.
        """
        station = await self.startStation()
        before = self.before(station)
        result = await station.main.engineer.call(
            "system", "reset", {"type": "Soft", "scheduled": False}, 0
        )
        self.assertIsNone(result)
        await self.resynced(station, before)
        ended = before.links[0].ended
        assert ended is not None
        self.assertEqual(ended[0], 0)
        self.assertIn("reset requested", ended[1])
        self.assertEqual(station.satellites[0].bootReason, "RemoteReset")
        # the other satellite lost its controller when the main board restarted
        self.assertEqual(before.agents[1].resetReason, "link lost")

    async def test_firmwareUpdateAccepted(self) -> None:
        """After an accepted firmware update, losing the satellite ends with code 0."""
        station = await self.startStation()
        before = self.before(station)
        request = {"location": f"http://127.0.0.1:{freePort()}/fw.bin", "request_id": -1}
        result = await station.main.engineer.call(
            "system", "update_firmware", {"firmware_update_request": request}, 0
        )
        self.assertEqual(result, "Accepted")
        station.satellites[0].reset("test: the satellite reboots into its new firmware")
        await self.resynced(station, before)
        ended = before.links[0].ended
        assert ended is not None
        self.assertEqual(ended[0], 0)
        self.assertIn("firmware update accepted", ended[1])


class StopTests(StationTestCase):
    """
    Station.stop() at awkward moments: nothing of the station is left
    behind, and no board comes back up afterwards.
    """

    async def stopped(self, station: Station) -> None:
        station.stop()
        await self.until("nothing left of the station", lambda: not self._leftovers(), 3)

    async def test_duringRestart(self) -> None:
        """Stopped while a satellite resets and the main board restarts."""
        station = await self.startStation()
        station.satellites[0].reset("test: the agent restarts")
        await self.until("the main board restarting", lambda: station.main.restarting)
        # satellite-1 and the main board are yet to boot; satellite-2 will
        # reset once it sees the main board gone
        await self.stopped(station)
        self.assertEqual(station.main.boots, 1)
        self.assertEqual([s.boots for s in station.satellites], [1, 1])

    async def test_agentAboutToReset(self) -> None:
        """Stopped after an agent decided to reset its board, before it did."""
        station = await self.startStation()
        agent = station.satellites[1].link
        station.main.restart("test: the controller restarts")
        await self.until("satellite-2 decided to reset", lambda: agent.resetReason is not None)
        self.assertFalse(station.satellites[1].resetting)
        await self.stopped(station)
        self.assertEqual([s.boots for s in station.satellites], [1, 1])

    async def test_lateConnection(self) -> None:
        """
        A controller that stops with its connection attempts in flight drops
        the connections that complete afterwards.
        """
        station = self.makeStation()
        closed: list[BaseException] = []

        def watching(agent: AgentLink) -> Callable[[], RpcProtocol | None]:
            build = agent.buildProtocol

            def buildProtocol() -> RpcProtocol | None:
                proto = build()
                if proto is not None:
                    proto.whenDisconnected().addCallback(closed.append)
                return proto

            return buildProtocol

        for satellite in station.satellites:
            await satellite.boot()
            self.patch(satellite.link, "buildProtocol", watching(satellite.link))
        station.main.boot()
        station.main.stop()  # the process dies; its connection attempts go on
        await self.until("both connections made and dropped", lambda: len(closed) == 2, 3)
        for satellite in station.satellites:
            self.assertIsNone(satellite.link._session)

    async def test_whileGreeting(self) -> None:
        """Stopped while the controllers wait for an answer to i_am_here."""
        station = self.makeStation()
        greeted: list[AgentLink] = []

        def silent(agent: AgentLink) -> Callable[..., Deferred[bool]]:
            def here(*args: Any) -> Deferred[bool]:
                greeted.append(agent)
                return Deferred()

            return here

        for satellite in station.satellites:
            await satellite.boot()
            self.patch(satellite.link, "_here", silent(satellite.link))
        station.main.boot()
        await self.until("i_am_here at both agents", lambda: len(set(greeted)) == 2)
        await self.stopped(station)


class DemoTests(TestCase):
    def test_demo(self) -> None:
        """``rcp demo`` with two satellites observes every step."""
        self._demo(2)

    def test_demoSixteenSatellites(self) -> None:
        """One main board serves 16 satellites: every step observed on every board."""
        output = self._demo(16)
        for i in range(1, 17):
            self.assertIn(f"charging session on satellite-{i}:", output)

    def _demo(self, satellites: int) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        done = subprocess.run(
            [sys.executable, "-m", "rcp.cli", "demo", "--satellites", str(satellites)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, output)
        match = re.search(r"(\d+) of (\d+) steps observed", done.stdout)
        assert match is not None, output
        passed, total = int(match[1]), int(match[2])
        self.assertEqual(passed, total, output)
        self.assertGreaterEqual(total, 7)
        self.assertEqual(done.stdout.count("   [ok] "), total, output)
        self.assertNotIn("FAILED", done.stdout)
        return done.stdout
