"""
The simulated EVerest modules (L{rcp.everest.sim.modules}) on a L{SimBus}
driven by a L{Clock}, and their real transfers (HTTP, FTP, files) against
local servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet import reactor as _globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.ftp import FTP, FTPFactory, FTPShell, IFTPShell
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.static import File
from zope.interface import implementer

from rcp.everest.interface import CommandError
from rcp.everest.sim.bus import SimBus
from rcp.everest.sim.modules import (
    AuthSim,
    EvseManagerSim,
    Record,
    StationConsumer,
    SystemSim,
    TransferError,
    Transfers,
    checkFileName,
    verifySignature,
)
from rcp.everest.sim.transfer import redactURL, uploadTarget


class _Reactor(IReactorTCP, IReactorTime):
    """What these tests use of the global reactor (for the type checker)."""


reactor = cast(_Reactor, _globalReactor)

#: 2026-01-01T00:00:00Z, where every clock starts
START = 1767225600.0
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ERROR_KEYS = {
    "type",
    "sub_type",
    "message",
    "description",
    "origin",
    "severity",
    "timestamp",
    "uuid",
    "state",
    "vendor_id",
}


def newClock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


def settle(clock: Clock) -> None:
    """Deliver everything due now (SimBus delivers in later reactor turns)."""
    for _ in range(1000):
        if not any(call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()):
            return
        clock.advance(0)
    raise AssertionError("the bus never settles")


def run(clock: Clock, seconds: float, step: float = 0.125) -> None:
    """Let C{seconds} pass in small steps, delivering as it goes."""
    settle(clock)
    end = clock.seconds() + seconds
    while clock.seconds() < end:
        clock.advance(min(step, end - clock.seconds()))
        settle(clock)


def token(value: str, connectors: list[int] | None = None) -> dict[str, Any]:
    provided: dict[str, Any] = {
        "id_token": {"value": value, "type": "ISO14443"},
        "authorization_type": "RFID",
    }
    if connectors is not None:
        provided["connectors"] = connectors
    return provided


def accepted(value: str = "CARD") -> dict[str, Any]:
    return {
        "provided_token": token(value),
        "validation_result": {"authorization_status": "Accepted"},
    }


def source(state: str, name: str = "CSMS", priority: int = 5000) -> dict[str, Any]:
    return {
        "connector_id": 0,
        "cmd_source": {"enable_source": name, "enable_state": state, "enable_priority": priority},
    }


# -- EvseManagerSim -------------------------------------------------------------


class EvseBoard:
    """A satellite's EVerest: one simulated EVSE and a station watching it."""

    def __init__(self, clock: Clock, mapping: dict[str, int] | None = None, **options: Any):
        self.clock = clock
        self.bus = SimBus(clock, "satellite")
        self.evse = EvseManagerSim(self.bus.module("evse", mapping=mapping), clock, **options)
        module = self.bus.module(
            "station",
            connections={
                "evse_manager": [("evse", "evse")],
                "energy": [("evse", "energy_grid")],
                "tokens": [("evse", "token_provider")],
            },
        )
        self.station = StationConsumer(module, clock)
        self.flows: list[dict[str, Any]] = []
        self.tokens: list[dict[str, Any]] = []
        module.subscribeVar("energy", "energy_flow_request", self.flows.append)
        module.subscribeVar("tokens", "provided_token", self.tokens.append)
        self.evse.start()
        self.station.start()
        settle(clock)

    def call(self, command: str, args: dict[str, Any] | None = None) -> Any:
        d = self.station.call(0, command, args)
        settle(self.clock)
        return d

    def energy(self, command: str, args: dict[str, Any]) -> Deferred[Any]:
        d = self.station.module.call("energy", command, args)
        settle(self.clock)
        return d

    def events(self) -> list[str]:
        return self.station.events(0)

    def event(self, name: str) -> dict[str, Any]:
        [found] = [e for e in self.station.sessionEvents(0) if e["event"] == name]
        return found

    def charge(self, value: str = "CARD") -> None:
        self.evse.plugIn()
        settle(self.clock)
        self.call("authorize_response", accepted(value))


class EvseManagerSimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = newClock()
        self.board = EvseBoard(self.clock, mapping={"evse": 2})

    def result(self, command: str, args: dict[str, Any] | None = None) -> Any:
        return self.successResultOf(self.board.call(command, args))

    def test_readyPublishesWhatConsumersNeed(self) -> None:
        """
        At global ready the EVSE publishes evse_id, hw_capabilities, limits,
        ready true and its energy transfer modes.
        """
        station = self.board.station
        self.assertEqual(station.values(0, "evse_id"), ["DE*RCP*E2"])
        self.assertEqual(station.values(0, "ready"), [True])
        [caps] = station.values(0, "hw_capabilities")
        self.assertEqual(caps["max_current_A_import"], 32.0)
        self.assertEqual(caps["max_phase_count_import"], 3)
        self.assertIn("connector_type", caps)
        [limits] = station.values(0, "limits")
        self.assertEqual(
            limits, {"uuid": "evse", "max_current": 15.942, "nr_of_phases_available": 3}
        )
        self.assertEqual(
            station.values(0, "supported_energy_transfer_modes"), [["AC_three_phase_core"]]
        )
        self.assertEqual(station.values(0, "waiting_for_external_ready"), [False])

    def test_getEvse(self) -> None:
        """get_evse gives the mapped EVSE id and one CCS2 connector."""
        self.assertEqual(
            self.result("get_evse"), {"id": 2, "connectors": [{"id": 1, "type": "cCCS2"}]}
        )

    def test_evseIdDefaults(self) -> None:
        """Without a mapping the EVSE is number 1; an explicit id wins."""
        board = EvseBoard(newClock())
        self.assertEqual(self.successResultOf(board.call("get_evse"))["id"], 1)
        board = EvseBoard(newClock(), mapping={"evse": 2}, evseId=5, connectorType="cType2")
        self.assertEqual(
            self.successResultOf(board.call("get_evse")),
            {"id": 5, "connectors": [{"id": 1, "type": "cType2"}]},
        )

    def test_badMeterInterval(self) -> None:
        bus = SimBus(self.clock)
        self.assertRaises(ValueError, EvseManagerSim, bus.module("e"), self.clock, meterInterval=0)

    def test_startTwice(self) -> None:
        self.assertRaises(RuntimeError, self.board.evse.start)

    def test_plugIn(self) -> None:
        """
        Plugging in starts a session (SessionStarted, reason EVConnected,
        with a meter value) that waits for authorization (AuthRequired);
        every event has the session's uuid, the clock's time, the event and
        connector 1.
        """
        self.clock.advance(0.25)
        self.assertTrue(self.board.evse.plugIn())
        settle(self.clock)
        self.assertEqual(self.board.events(), ["SessionStarted", "AuthRequired"])
        started, required = self.board.station.sessionEvents(0)
        self.assertEqual(started["session_started"]["reason"], "EVConnected")
        self.assertEqual(started["session_started"]["meter_value"]["energy_Wh_import"]["total"], 0)
        self.assertNotIn("reservation_id", started["session_started"])
        for event in (started, required):
            self.assertEqual(event["timestamp"], "2026-01-01T00:00:00.250Z")
            self.assertEqual(event["connector_id"], 1)
        self.assertEqual(started["uuid"], required["uuid"])
        self.assertEqual(set(required), {"uuid", "timestamp", "event", "connector_id"})
        self.assertEqual(self.board.evse.state, "WaitingForAuthorization")

    def test_plugInTwice(self) -> None:
        self.assertTrue(self.board.evse.plugIn())
        self.assertFalse(self.board.evse.plugIn())

    def test_authorizeStartsCharging(self) -> None:
        """
        An accepted authorization of a waiting session: Authorized,
        TransactionStarted with the token and a meter value,
        PrepareCharging, ChargingStarted.
        """
        self.board.evse.plugIn()
        settle(self.clock)
        self.assertIsNone(self.result("authorize_response", accepted("CARD-1")))
        self.assertEqual(
            self.board.events(),
            [
                "SessionStarted",
                "AuthRequired",
                "Authorized",
                "TransactionStarted",
                "PrepareCharging",
                "ChargingStarted",
            ],
        )
        started = self.board.event("TransactionStarted")["transaction_started"]
        self.assertEqual(started["id_tag"], token("CARD-1"))
        self.assertIn("meter_value", started)
        self.assertIn("meter_value", self.board.event("Authorized")["authorization_event"])
        charging = self.board.event("ChargingStarted")["charging_state_changed_event"]
        self.assertEqual(charging["meter_value"]["power_W"]["total"], 11000.0)
        uuids = {e["uuid"] for e in self.board.station.sessionEvents(0)}
        self.assertEqual(len(uuids), 1)
        self.assertEqual(self.board.evse.state, "Charging")

    def test_authorizationNotUsed(self) -> None:
        """
        An authorization that is not Accepted, or that no session waits
        for, changes nothing (and is still answered with null).
        """
        self.assertIsNone(self.result("authorize_response", accepted()))
        self.board.evse.plugIn()
        settle(self.clock)
        invalid = {
            "provided_token": token("X"),
            "validation_result": {"authorization_status": "Invalid"},
        }
        self.assertIsNone(self.result("authorize_response", invalid))
        self.assertIsNone(self.result("authorize_response", {}))
        self.assertEqual(self.board.events(), ["SessionStarted", "AuthRequired"])
        self.result("authorize_response", accepted())
        self.result("authorize_response", accepted())  # a second one: no session waits
        self.assertEqual(self.board.events().count("TransactionStarted"), 1)

    def test_meterWhileCharging(self) -> None:
        """
        While charging, every meter interval brings a powermeter reading
        with a growing register, and a telemetry reading; energy flow
        requests come every interval, charging or not.
        """
        station = self.board.station
        run(self.clock, 2)
        self.assertEqual(station.values(0, "powermeter"), [])
        self.assertEqual(station.values(0, "telemetry"), [])
        self.assertEqual(len(self.board.flows), 2)
        self.board.charge()
        run(self.clock, 3)
        readings = station.values(0, "powermeter")
        self.assertEqual(len(readings), 3)
        totals = [r["energy_Wh_import"]["total"] for r in readings]
        self.assertEqual(totals, sorted(totals))
        self.assertAlmostEqual(totals[-1], 11000 * 3 / 3600, places=2)
        reading = readings[-1]
        self.assertTrue(TIMESTAMP.match(reading["timestamp"]))
        self.assertEqual(reading["power_W"]["total"], 11000.0)
        self.assertAlmostEqual(reading["current_A"]["L1"], 11000 / 690, places=2)
        self.assertEqual(reading["voltage_V"]["L2"], 230.0)
        telemetry = station.values(0, "telemetry")
        self.assertEqual(len(telemetry), 3)
        self.assertEqual(
            set(telemetry[0]),
            {
                "evse_temperature_C",
                "fan_rpm",
                "supply_voltage_12V",
                "supply_voltage_minus_12V",
                "relais_on",
            },
        )
        self.assertTrue(telemetry[0]["relais_on"])
        self.assertGreater(telemetry[0]["fan_rpm"], 0)
        self.assertEqual(len(self.board.flows), 5)

    def test_meterInterval(self) -> None:
        """The meter interval is a parameter."""
        board = EvseBoard(self.clock, meterInterval=0.5)
        board.charge()
        run(self.clock, 2)
        self.assertEqual(len(board.station.values(0, "powermeter")), 4)

    def test_energyFlowRequest(self) -> None:
        """The request has the required keys of energy#/EnergyFlowRequest."""
        run(self.clock, 1)
        [flow] = self.board.flows
        self.assertEqual(flow["children"], [])
        self.assertEqual(flow["node_type"], "Evse")
        self.assertEqual(flow["uuid"], "evse")
        self.assertEqual(flow["schedule_setpoints"], [])
        [entry] = flow["schedule_import"]
        self.assertEqual(entry["limits_to_root"]["ac_max_current_A"]["value"], 32.0)
        self.assertEqual(entry["timestamp"], "2026-01-01T00:00:01.000Z")
        self.assertEqual(len(flow["schedule_export"]), 1)

    def test_unplugWhileCharging(self) -> None:
        """
        Unplugging during a transaction: TransactionFinished (reason
        EVDisconnected), then SessionFinished; the meter stops.
        """
        self.board.charge()
        run(self.clock, 2)
        self.assertTrue(self.board.evse.unplug())
        settle(self.clock)
        self.assertEqual(self.board.events()[-2:], ["TransactionFinished", "SessionFinished"])
        finished = self.board.event("TransactionFinished")["transaction_finished"]
        self.assertEqual(finished["reason"], "EVDisconnected")
        self.assertNotIn("id_tag", finished)
        self.assertAlmostEqual(
            finished["meter_value"]["energy_Wh_import"]["total"], 11000 * 2 / 3600, places=2
        )
        self.assertIn("meter_value", self.board.event("SessionFinished")["session_finished"])
        readings = len(self.board.station.values(0, "powermeter"))
        run(self.clock, 3)
        self.assertEqual(len(self.board.station.values(0, "powermeter")), readings)
        self.assertEqual(self.board.evse.state, "Idle")

    def test_unplugWithoutTransaction(self) -> None:
        """Without a transaction unplugging only ends the session."""
        self.assertFalse(self.board.evse.unplug())
        self.board.evse.plugIn()
        self.assertTrue(self.board.evse.unplug())
        settle(self.clock)
        self.assertEqual(self.board.events(), ["SessionStarted", "AuthRequired", "SessionFinished"])
        self.assertTrue(self.board.evse.plugIn())

    def test_swipeCard(self) -> None:
        """A card is published as provided_token of token_provider."""
        self.board.evse.swipeCard("04A1B2C3")
        self.board.evse.swipeCard("X", connectors=[2])
        settle(self.clock)
        self.assertEqual(self.board.tokens, [token("04A1B2C3"), token("X", [2])])

    def test_enforceLimits(self) -> None:
        """
        enforce_limits answers null, is republished as enforced_limits,
        caps the power and changes the published limits.
        """
        self.board.charge()
        value = {
            "uuid": "evse",
            "valid_for": 60,
            "limits_root_side": {"total_power_W": {"value": 4000.0, "source": "EnergyManager"}},
            "schedule": [],
        }
        self.assertIsNone(
            self.successResultOf(self.board.energy("enforce_limits", {"value": value}))
        )
        self.assertEqual(self.board.station.values(0, "enforced_limits"), [value])
        self.assertEqual(self.board.station.latest(0, "limits")["max_current"], 5.797)
        run(self.clock, 1)
        reading = self.board.station.latest(0, "powermeter")
        self.assertEqual(reading["power_W"]["total"], 4000.0)
        # plain numbers, as older EVerest writes them, and a current limit
        value = {
            "uuid": "evse",
            "valid_for": 60,
            "limits_root_side": {"ac_max_current_A": 10, "ac_max_phase_count": 1},
            "schedule": [],
        }
        self.board.energy("enforce_limits", {"value": value})
        self.assertEqual(self.board.evse.powerCapW(), 2300.0)
        # a malformed value is answered and ignored
        self.assertIsNone(self.successResultOf(self.board.energy("enforce_limits", {})))
        self.assertEqual(self.board.evse.powerCapW(), 2300.0)

    def test_energyFollowsLimits(self) -> None:
        """The register counts each stretch at the power of its time."""
        self.board.charge()
        run(self.clock, 1)
        value = {
            "uuid": "e",
            "valid_for": 60,
            "limits_root_side": {"total_power_W": 3600.0},
            "schedule": [],
        }
        self.board.energy("enforce_limits", {"value": value})
        run(self.clock, 1)
        self.assertAlmostEqual(self.board.evse.energyWh, 11000 / 3600 + 1, places=3)

    def test_pauseResume(self) -> None:
        """
        pause_charging: True, ChargingPausedEVSE with its reasons, no energy;
        resume_charging: True, ChargingStarted; each False out of place.
        """
        self.assertFalse(self.result("pause_charging"))
        self.assertFalse(self.result("resume_charging"))
        self.board.charge()
        self.assertTrue(self.result("pause_charging"))
        self.assertFalse(self.result("pause_charging"))
        paused = self.board.event("ChargingPausedEVSE")
        self.assertEqual(paused["charging_paused_evse"], {"reasons": ["UserPause"]})
        energy = self.board.evse.energyWh
        run(self.clock, 3)
        self.assertEqual(self.board.evse.energyWh, energy)
        self.assertEqual(self.board.station.values(0, "powermeter"), [])
        self.assertTrue(self.result("resume_charging"))
        self.assertFalse(self.result("resume_charging"))
        self.assertEqual(self.board.events()[-2:], ["ChargingPausedEVSE", "ChargingStarted"])
        run(self.clock, 1)
        self.assertGreater(self.board.evse.energyWh, energy)

    def test_stopTransaction(self) -> None:
        """
        stop_transaction: True, StoppingCharging then TransactionFinished
        with the request's reason and id_tag; the car stays plugged in until
        it leaves (SessionFinished only).
        """
        self.assertFalse(self.result("stop_transaction", {"request": {"reason": "Remote"}}))
        self.board.charge()
        request = {"reason": "Local", "id_tag": token("CARD")}
        self.assertTrue(self.result("stop_transaction", {"request": request}))
        self.assertEqual(self.board.events()[-2:], ["StoppingCharging", "TransactionFinished"])
        finished = self.board.event("TransactionFinished")["transaction_finished"]
        self.assertEqual(finished["reason"], "Local")
        self.assertEqual(finished["id_tag"], token("CARD"))
        self.assertFalse(self.result("stop_transaction", {"request": {"reason": "Remote"}}))
        self.assertEqual(self.board.evse.state, "Finished")
        self.board.evse.unplug()
        settle(self.clock)
        self.assertEqual(self.board.events()[-1], "SessionFinished")
        self.assertEqual(self.board.events().count("TransactionFinished"), 1)

    def test_stopWhilePaused(self) -> None:
        self.board.charge()
        self.result("pause_charging")
        self.assertTrue(self.result("stop_transaction", {"request": {"reason": "Remote"}}))
        self.assertEqual(
            self.board.event("TransactionFinished")["transaction_finished"]["reason"], "Remote"
        )

    def test_reserve(self) -> None:
        """
        reserve: True and ReservationStart; a second one is refused;
        cancel_reservation: null and ReservationEnd.
        """
        self.assertTrue(self.result("reserve", {"reservation_id": 7}))
        self.assertFalse(self.result("reserve", {"reservation_id": 8}))
        self.assertFalse(self.result("reserve", {"reservation_id": "x"}))
        self.assertIsNone(self.result("cancel_reservation"))
        self.assertIsNone(self.result("cancel_reservation"))
        self.assertEqual(self.board.events(), ["ReservationStart", "ReservationEnd"])
        self.assertIsNone(self.board.evse.reservationId)

    def test_reservationUsedBySession(self) -> None:
        """The reservation's id goes into the session and the transaction."""
        self.result("reserve", {"reservation_id": 7})
        self.board.charge()
        self.assertEqual(self.board.event("SessionStarted")["session_started"]["reservation_id"], 7)
        self.assertEqual(
            self.board.event("TransactionStarted")["transaction_started"]["reservation_id"], 7
        )
        self.assertIsNone(self.board.evse.reservationId)

    def test_reserveRefusedWhileCharging(self) -> None:
        self.board.charge()
        self.assertFalse(self.result("reserve", {"reservation_id": 1}))
        self.assertNotIn("ReservationStart", self.board.events())

    def test_enableDisable(self) -> None:
        """
        enable_disable publishes Disabled/Enabled with the source; a
        disabled EVSE refuses sessions and reservations.
        """
        self.assertTrue(self.result("enable_disable", source("Disable")))
        self.assertEqual(self.board.events(), ["Disabled"])
        self.assertEqual(self.board.event("Disabled")["source"]["enable_source"], "CSMS")
        self.assertFalse(self.board.evse.plugIn())
        self.assertFalse(self.result("reserve", {"reservation_id": 1}))
        self.assertTrue(self.result("enable_disable", source("Disable")))
        self.assertEqual(self.board.events(), ["Disabled"])  # no change, no event
        self.assertTrue(self.result("enable_disable", source("Enable")))
        self.assertEqual(self.board.events(), ["Disabled", "Enabled"])
        self.assertTrue(self.board.evse.plugIn())

    def test_enablePriorities(self) -> None:
        """
        The claim with the lowest priority number wins; Unassigned withdraws
        a source's claim.
        """
        self.assertTrue(self.result("enable_disable", source("Disable", "ServiceTechnician", 10)))
        self.assertFalse(self.result("enable_disable", source("Enable", "CSMS", 5000)))
        self.assertFalse(self.board.evse.enabled)
        self.assertTrue(self.result("enable_disable", source("Unassigned", "ServiceTechnician")))
        self.assertTrue(self.board.evse.enabled)
        self.assertEqual(self.board.events(), ["Disabled", "Enabled"])

    def test_enableDisableMalformed(self) -> None:
        self.assertFalse(self.result("enable_disable", {"connector_id": 0}))
        self.assertFalse(self.result("enable_disable", source("Maybe")))
        bad = source("Disable")
        bad["cmd_source"]["enable_priority"] = "high"
        self.assertFalse(self.result("enable_disable", bad))
        self.assertTrue(self.board.evse.enabled)

    def test_otherCommands(self) -> None:
        """The remaining commands answer with their interface's types."""
        self.assertTrue(self.result("force_unlock", {"connector_id": 1}))
        self.assertFalse(self.result("force_unlock", {"connector_id": 3}))
        self.assertTrue(self.result("external_ready_to_start_charging"))
        configuration = {"pnc_enabled": True, "central_contract_validation_allowed": False}
        self.assertIsNone(
            self.result(
                "set_plug_and_charge_configuration",
                {"plug_and_charge_configuration": configuration},
            )
        )
        self.assertEqual(self.board.evse.plugAndChargeConfiguration, configuration)
        self.assertEqual(
            self.result(
                "update_allowed_energy_transfer_modes",
                {"allowed_energy_transfer_modes": ["AC_single_phase_core"]},
            ),
            "Accepted",
        )
        self.assertEqual(self.board.evse.allowedEnergyTransferModes, ["AC_single_phase_core"])

    def test_withdrawAuthorization(self) -> None:
        """withdraw_authorization is answered; a running transaction goes on."""
        self.assertIsNone(self.result("withdraw_authorization"))
        self.board.charge()
        self.assertIsNone(self.result("withdraw_authorization"))
        self.assertEqual(self.board.evse.state, "Charging")

    def test_injectError(self) -> None:
        """
        injectError raises a complete error on impl evse, stamped by the
        clock; clearInjected clears that very object.
        """
        self.clock.advance(1.5)
        raised = self.board.evse.injectError("MREC4OverCurrentFailure", message="too much")
        settle(self.clock)
        [error] = self.board.station.errors()
        self.assertEqual(set(error), ERROR_KEYS)
        self.assertEqual(error, raised | {"state": "Active"})
        self.assertEqual(error["type"], "evse_manager/MREC4OverCurrentFailure")
        self.assertEqual(error["message"], "too much")
        self.assertEqual(error["timestamp"], "2026-01-01T00:00:01.500Z")
        self.assertEqual(
            error["origin"],
            {"module_id": "evse", "implementation_id": "evse", "mapping": {"evse": 2}},
        )
        self.assertTrue(self.board.evse.clearInjected("MREC4OverCurrentFailure"))
        self.assertFalse(self.board.evse.clearInjected("MREC4OverCurrentFailure"))
        settle(self.clock)
        clearedError = self.board.station.errors()[1]
        self.assertEqual(clearedError, raised | {"state": "ClearedByModule"})

    def test_injectErrorSubTypes(self) -> None:
        """Errors are told apart by type and sub type; a full type is kept."""
        self.board.evse.injectError("evse_board_support/VendorError", "relay")
        self.board.evse.injectError("evse_board_support/VendorError", "fan")
        self.assertTrue(self.board.evse.clearInjected("evse_board_support/VendorError", "fan"))
        self.assertEqual(
            list(self.board.evse.activeErrors), [("evse_board_support/VendorError", "relay")]
        )

    def test_stopBeforeReady(self) -> None:
        """Stopped before global ready, the EVSE never starts its meter."""
        clock = newClock()
        bus = SimBus(clock)
        evse = EvseManagerSim(bus.module("evse"), clock)
        late = bus.module("late")
        evse.start()
        evse.stop()
        late.signalReady()
        run(clock, 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """After stop() nothing is published on the clock any more."""
        self.board.charge()
        self.board.evse.stop()
        self.board.evse.stop()
        run(self.clock, 3)
        self.assertEqual(self.board.flows, [])
        self.assertEqual(self.board.station.values(0, "powermeter"), [])


# -- SystemSim --------------------------------------------------------------------


class FakeTransfers:
    """Transfers under the test's control."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fetched: list[str] = []
        self.uploads: list[tuple[str, str, bytes]] = []
        self.failures = 0
        self.held: list[Deferred[None]] = []
        self.cancelled: list[Deferred[None]] = []
        self.hold = False

    def fetch(self, url: str) -> Deferred[bytes]:
        self.fetched.append(url)
        if url in self.files:
            return succeed(self.files[url])
        return fail(TransferError(f"404 {url}"))

    def upload(self, url: str, fileName: str, data: bytes) -> Deferred[None]:
        if self.hold:
            d: Deferred[None] = Deferred(self.cancelled.append)
            self.held.append(d)
            return d
        if self.failures:
            self.failures -= 1
            return fail(TransferError("refused"))
        self.uploads.append((url, fileName, data))
        return succeed(None)


def _certificate(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firmware signer")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_CERT = _certificate(EC_KEY)
FIRMWARE = b"\x7fELF simulated firmware image" * 10
FIRMWARE_SIGNATURE = base64.b64encode(EC_KEY.sign(FIRMWARE, ec.ECDSA(hashes.SHA256()))).decode()
FIRMWARE_URL = "http://firmware.example/image.bin"


def signedRequest(requestId: int = 12, **extra: Any) -> dict[str, Any]:
    return {
        "location": FIRMWARE_URL,
        "request_id": requestId,
        "signing_certificate": EC_CERT,
        "signature": FIRMWARE_SIGNATURE,
        **extra,
    }


class SystemBoard:
    """A board's EVerest with a simulated System module and a station."""

    def __init__(
        self, clock: IReactorTime, transfers: FakeTransfers | None = None, **options: Any
    ) -> None:
        self.clock = clock
        self.bus = SimBus(clock, "board")
        self.resets: list[str] = []
        if transfers is not None:
            options.setdefault("fetch", transfers.fetch)
            options.setdefault("upload", transfers.upload)
        self.system = SystemSim(
            self.bus.module("system", config=options.pop("config", {})),
            clock,
            onReset=self.resets.append,
            **options,
        )
        module = self.bus.module("station", connections={"system": [("system", "main")]})
        self.station = StationConsumer(module, clock)
        self.system.start()
        self.station.start()

    def firmware(self) -> list[tuple[float, str, int]]:
        return [
            (r.time - START, r.value["firmware_update_status"], r.value["request_id"])
            for r in self.station.records
            if r.name == "firmware_update_status"
        ]

    def logs(self) -> list[tuple[float, str, int]]:
        return [
            (r.time - START, r.value["log_status"], r.value["request_id"])
            for r in self.station.records
            if r.name == "log_status"
        ]


class SystemSimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = newClock()
        self.transfers = FakeTransfers()
        self.transfers.files[FIRMWARE_URL] = FIRMWARE
        self.board = SystemBoard(self.clock, self.transfers)
        settle(self.clock)

    def call(self, command: str, args: dict[str, Any] | None = None) -> Any:
        d = self.board.station.callSystem(command, args)
        settle(self.clock)
        return self.successResultOf(d)

    def update(self, request: dict[str, Any]) -> Any:
        return self.call("update_firmware", {"firmware_update_request": request})

    def uploadLogs(self, request: dict[str, Any]) -> Any:
        return self.call("upload_logs", {"upload_logs_request": request})

    def test_startTwice(self) -> None:
        self.assertRaises(RuntimeError, self.board.system.start)

    def test_standardUpdate(self) -> None:
        """
        request_id -1: Accepted; Downloading, Downloaded, Installing,
        Installed a step apart; no reset, but the next boot is a firmware
        update.
        """
        self.assertEqual(self.update({"location": FIRMWARE_URL, "request_id": -1}), "Accepted")
        run(self.clock, 5)
        self.assertEqual(
            self.board.firmware(),
            [
                (0.0, "Downloading", -1),
                (1.0, "Downloaded", -1),
                (2.0, "Installing", -1),
                (3.0, "Installed", -1),
            ],
        )
        self.assertEqual(self.board.system.installedFirmware, FIRMWARE)
        self.assertEqual(self.board.system.nextBootReason, "FirmwareUpdate")
        self.assertEqual(self.board.resets, [])
        self.assertFalse(self.board.system.busy)

    def test_standardUpdateWithoutRequestId(self) -> None:
        """A request without request_id is a standard one."""
        self.assertEqual(self.update({"location": FIRMWARE_URL}), "Accepted")
        run(self.clock, 5)
        self.assertEqual(self.board.firmware()[-1], (3.0, "Installed", -1))

    def test_standardDownloadFails(self) -> None:
        """An unreachable location: Downloading, DownloadFailed, retries times."""
        request = {"location": "ftp://nowhere/fw", "retries": 2, "retry_interval_s": 5}
        self.assertEqual(self.update(request), "Accepted")
        run(self.clock, 20)
        self.assertEqual(
            self.board.firmware(),
            [
                (0.0, "Downloading", -1),
                (1.0, "DownloadFailed", -1),
                (6.0, "Downloading", -1),
                (7.0, "DownloadFailed", -1),
            ],
        )
        self.assertEqual(self.transfers.fetched, ["ftp://nowhere/fw"] * 2)
        self.assertIsNone(self.board.system.nextBootReason)

    def test_standardUpdateRunning(self) -> None:
        """A second standard update while one runs is Rejected."""
        self.update({"location": FIRMWARE_URL})
        self.assertEqual(self.update({"location": FIRMWARE_URL}), "Rejected")
        run(self.clock, 5)
        self.assertEqual(self.board.firmware().count((3.0, "Installed", -1)), 1)
        self.assertEqual(self.update({"location": FIRMWARE_URL}), "Accepted")

    def test_standardUpdateLater(self) -> None:
        """A retrieve time in the future waits, without DownloadScheduled."""
        request = {"location": FIRMWARE_URL, "retrieve_timestamp": "2026-01-01T00:00:10.000Z"}
        self.assertEqual(self.update(request), "Accepted")
        run(self.clock, 9.5)
        self.assertEqual(self.board.firmware(), [])
        run(self.clock, 5)
        self.assertEqual(self.board.firmware()[0], (10.0, "Downloading", -1))

    def test_signedUpdate(self) -> None:
        """
        A signed update: Downloading, Downloaded, SignatureVerified,
        Installing, Installed with the request's id, then a Hard reset
        after the reset delay; the next boot is a firmware update.
        """
        self.assertEqual(self.update(signedRequest()), "Accepted")
        run(self.clock, 4.25)
        self.assertEqual(
            self.board.firmware(),
            [
                (1.0, "Downloading", 12),
                (3.0, "Downloaded", 12),
                (3.0, "SignatureVerified", 12),
                (3.0, "Installing", 12),
                (4.0, "Installed", 12),
            ],
        )
        self.assertEqual(self.board.resets, [])
        run(self.clock, 0.25)
        self.assertEqual(self.board.resets, ["Hard"])
        self.assertEqual(self.board.system.nextBootReason, "FirmwareUpdate")
        self.assertEqual(self.board.system.installedFirmware, FIRMWARE)

    def test_signedUpdateNeedsSignature(self) -> None:
        """Without certificate or signature a signed update is Rejected."""
        self.assertEqual(self.update(signedRequest(signature="")), "Rejected")
        request = signedRequest()
        del request["signing_certificate"]
        self.assertEqual(self.update(request), "Rejected")
        run(self.clock, 5)
        self.assertEqual(self.board.firmware(), [])

    def test_invalidSignature(self) -> None:
        """A signature that does not hold: InvalidSignature, no installation."""
        other = base64.b64encode(EC_KEY.sign(b"other", ec.ECDSA(hashes.SHA256()))).decode()
        self.assertEqual(self.update(signedRequest(signature=other)), "Accepted")
        run(self.clock, 10)
        self.assertEqual(
            [status for _, status, _ in self.board.firmware()],
            ["Downloading", "Downloaded", "InvalidSignature"],
        )
        self.assertEqual(self.board.resets, [])
        self.assertIsNone(self.board.system.installedFirmware)

    def test_signedDownloadFails(self) -> None:
        request = signedRequest(location="http://nowhere/fw", retries=2, retry_interval_s=1)
        self.assertEqual(self.update(request), "Accepted")
        run(self.clock, 20)
        self.assertEqual(
            self.board.firmware(),
            [
                (1.0, "Downloading", 12),
                (3.0, "DownloadFailed", 12),
                (5.0, "Downloading", 12),
                (7.0, "DownloadFailed", 12),
            ],
        )

    def test_signedUpdateScheduled(self) -> None:
        """
        Future retrieve and install times: DownloadScheduled at once,
        InstallScheduled once verified; each step at its time.
        """
        request = signedRequest(
            retrieve_timestamp="2026-01-01T00:00:10Z", install_timestamp="2026-01-01T00:01:00Z"
        )
        self.assertEqual(self.update(request), "Accepted")
        run(self.clock, 70)
        self.assertEqual(
            self.board.firmware(),
            [
                (0.0, "DownloadScheduled", 12),
                (11.0, "Downloading", 12),
                (13.0, "Downloaded", 12),
                (13.0, "SignatureVerified", 12),
                (13.0, "InstallScheduled", 12),
                (60.0, "Installing", 12),
                (61.0, "Installed", 12),
            ],
        )
        self.assertEqual(self.board.resets, ["Hard"])

    def test_signedUpdateReplacesDownload(self) -> None:
        """
        A signed update during a download interrupts it: AcceptedCanceled,
        and only the new request goes on.
        """
        self.assertEqual(self.update(signedRequest(1)), "Accepted")
        run(self.clock, 1.5)
        self.assertEqual(self.update(signedRequest(2)), "AcceptedCanceled")
        run(self.clock, 10)
        self.assertEqual(
            [(status, rid) for _, status, rid in self.board.firmware()],
            [
                ("Downloading", 1),
                ("Downloading", 2),
                ("Downloaded", 2),
                ("SignatureVerified", 2),
                ("Installing", 2),
                ("Installed", 2),
            ],
        )

    def test_signedUpdateWhileInstallScheduled(self) -> None:
        """
        A scheduled installation is not a running one (core sets its flag
        only when installing begins): a new signed update is Accepted, and
        its own schedule replaces the waiting one (core has one timer).
        """
        request = signedRequest(1, install_timestamp="2026-01-01T00:00:30Z")
        self.assertEqual(self.update(request), "Accepted")
        run(self.clock, 5)
        self.assertEqual(self.board.firmware()[-1], (3.0, "InstallScheduled", 1))
        second = signedRequest(2, install_timestamp="2026-01-01T00:01:00Z")
        self.assertEqual(self.update(second), "Accepted")
        run(self.clock, 70)
        self.assertEqual(
            self.board.firmware()[4:],
            [
                (6.0, "Downloading", 2),
                (8.0, "Downloaded", 2),
                (8.0, "SignatureVerified", 2),
                (8.0, "InstallScheduled", 2),
                (60.0, "Installing", 2),
                (61.0, "Installed", 2),
            ],
        )
        self.assertEqual(self.board.resets, ["Hard"])

    def test_signedUpdateDuringInstallation(self) -> None:
        """
        A signed update while an installation runs is Rejected, yet
        downloads; its own installation then fails.
        """
        self.assertEqual(self.update(signedRequest(1)), "Accepted")
        run(self.clock, 3.5)
        self.assertEqual(self.board.firmware()[-1], (3.0, "Installing", 1))
        self.assertEqual(self.update(signedRequest(2)), "Rejected")
        run(self.clock, 10)
        statuses = [(status, rid) for _, status, rid in self.board.firmware()]
        self.assertEqual(
            statuses[4:],
            [
                ("Installed", 1),
                ("Downloading", 2),
                ("Downloaded", 2),
                ("SignatureVerified", 2),
                ("InstallationFailed", 2),
            ],
        )

    def test_malformedFirmwareRequest(self) -> None:
        self.assertEqual(self.call("update_firmware", {}), "Rejected")
        self.assertEqual(self.update({"request_id": 3}), "Rejected")
        self.assertEqual(self.update({"location": FIRMWARE_URL, "request_id": "3"}), "Rejected")

    def test_allowFirmwareInstallation(self) -> None:
        self.assertIsNone(self.call("allow_firmware_installation"))

    def test_uploadLogs(self) -> None:
        """
        upload_logs answers Accepted and the file's name at once; Uploading,
        then after a step the upload and Uploaded with the request id.
        """
        self.clock.advance(0.5)
        response = self.uploadLogs({"location": "ftp://logs.example/up/", "request_id": 4})
        self.assertEqual(set(response), {"upload_logs_status", "file_name"})
        self.assertEqual(response["upload_logs_status"], "Accepted")
        self.assertRegex(
            response["file_name"], r"^diagnostics-2026-01-01T00:00:00\.500Z[a-z0-9]{6}$"
        )
        run(self.clock, 3)
        self.assertEqual(self.board.logs(), [(0.5, "Uploading", 4), (1.5, "Uploaded", 4)])
        [(location, name, data)] = self.transfers.uploads
        self.assertEqual((location, name), ("ftp://logs.example/up/", response["file_name"]))
        content = json.loads(data)
        self.assertEqual(content["diagnostics"]["module"], "system")
        self.assertTrue(content["diagnostics"]["journal"])
        self.assertEqual(self.board.system.lastUpload, (location, name, data))

    def test_uploadLogsRetries(self) -> None:
        """
        A failing upload: Uploading, UploadFailure, retries times,
        retry_interval_s apart; no request id means -1.
        """
        self.transfers.failures = 5
        request = {"location": "http://logs/", "retries": 3, "retry_interval_s": 2}
        self.assertEqual(self.uploadLogs(request)["upload_logs_status"], "Accepted")
        run(self.clock, 20)
        self.assertEqual(
            self.board.logs(),
            [
                (0.0, "Uploading", -1),
                (1.0, "UploadFailure", -1),
                (3.0, "Uploading", -1),
                (4.0, "UploadFailure", -1),
                (6.0, "Uploading", -1),
                (7.0, "UploadFailure", -1),
            ],
        )

    def test_uploadLogsRetrySucceeds(self) -> None:
        self.transfers.failures = 1
        self.uploadLogs({"location": "http://logs/", "retries": 3, "request_id": 9})
        run(self.clock, 10)
        self.assertEqual(
            [status for _, status, _ in self.board.logs()],
            ["Uploading", "UploadFailure", "Uploading", "Uploaded"],
        )

    def test_uploadLogsReplacesUpload(self) -> None:
        """
        upload_logs during an upload interrupts it: the old request gets
        AcceptedCanceled, the answer is AcceptedCanceled.
        """
        self.transfers.hold = True
        self.uploadLogs({"location": "http://logs/", "request_id": 1})
        run(self.clock, 2)
        [held] = self.transfers.held
        self.transfers.hold = False
        response = self.uploadLogs({"location": "http://logs/", "request_id": 2})
        self.assertEqual(response["upload_logs_status"], "AcceptedCanceled")
        self.assertEqual(self.transfers.cancelled, [held])
        run(self.clock, 3)
        self.assertEqual(
            [(status, rid) for _, status, rid in self.board.logs()],
            [("Uploading", 1), ("AcceptedCanceled", 1), ("Uploading", 2), ("Uploaded", 2)],
        )

    def test_malformedLogRequest(self) -> None:
        self.assertEqual(self.uploadLogs({}), {"upload_logs_status": "Rejected"})
        response = self.uploadLogs({"location": "http://logs/", "request_id": "x"})
        self.assertEqual(response["upload_logs_status"], "Accepted")
        run(self.clock, 2)
        self.assertEqual(self.board.logs()[-1][2], -1)

    def test_logFileNames(self) -> None:
        """
        Generated file names never contain a path: whatever the request,
        the name is C{diagnostics-<time><6 random characters>}.
        """
        hostile: list[dict[str, Any]] = [
            {"location": "ftp://h/../../etc/", "type": "../../etc/passwd"},
            {"location": "http://h/a/..", "type": "/", "request_id": 1},
            {"location": "../../x/", "oldest_timestamp": "../.."},
        ]
        names = set()
        for request in hostile * 10:
            name = self.uploadLogs(request)["file_name"]
            self.assertNotIn("/", name)
            self.assertNotIn("..", name)
            self.assertNotIn("\\", name)
            self.assertRegex(name, r"^diagnostics-[0-9T:.Z-]+[a-z0-9]{6}$")
            self.assertEqual(checkFileName(name), name)
            names.add(name)
        self.assertEqual(len(names), 30)

    def test_reset(self) -> None:
        """
        is_reset_allowed is true; reset answers null and calls onReset with
        its type after the reset delay; the next boot is a remote reset.
        """
        self.assertIs(self.call("is_reset_allowed", {"type": "Soft"}), True)
        self.assertIsNone(self.call("reset", {"type": "Soft", "scheduled": False}))
        self.assertEqual(self.board.resets, [])
        self.assertTrue(self.board.system.busy)
        self.assertEqual(self.board.system.nextBootReason, "RemoteReset")
        run(self.clock, 0.5)
        self.assertEqual(self.board.resets, ["Soft"])
        self.assertFalse(self.board.system.busy)

    def test_resetOnce(self) -> None:
        """A reset while one is pending does not restart the board twice."""
        self.call("reset", {"type": "Hard", "scheduled": False})
        self.call("reset", {"type": "Soft", "scheduled": True})
        run(self.clock, 2)
        self.assertEqual(self.board.resets, ["Hard"])

    def test_resetDelay(self) -> None:
        """The reset delay is a parameter, else the ResetDelay configuration."""
        board = SystemBoard(self.clock, FakeTransfers(), config={"ResetDelay": 3})
        self.assertEqual(board.system.resetDelay, 3.0)
        board = SystemBoard(self.clock, FakeTransfers(), resetDelay=0)
        self.assertEqual(board.system.resetDelay, 0.0)
        settle(self.clock)
        d = board.station.reset("Hard")
        settle(self.clock)
        self.successResultOf(d)
        self.assertEqual(board.resets, ["Hard"])

    def test_onResetFails(self) -> None:
        """A failing onReset is logged."""

        def boom(kind: str) -> None:
            raise ValueError(kind)

        self.board.system.onReset = boom
        self.call("reset", {"type": "Soft", "scheduled": False})
        run(self.clock, 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_noOnReset(self) -> None:
        board = SystemBoard(self.clock, FakeTransfers())
        board.system.onReset = None
        settle(self.clock)
        board.station.reset()
        run(self.clock, 1)
        self.assertFalse(board.system.busy)

    def test_setSystemTime(self) -> None:
        self.assertIs(self.call("set_system_time", {"timestamp": "2026-02-03T04:05:06Z"}), True)
        self.assertEqual(self.board.system.systemTime, "2026-02-03T04:05:06Z")

    def test_bootReason(self) -> None:
        """
        get_boot_reason answers the configured reason once (the real module
        deletes it from its store), then PowerUp.
        """
        self.assertEqual(self.call("get_boot_reason"), "PowerUp")
        board = SystemBoard(self.clock, FakeTransfers(), bootReason="FirmwareUpdate")
        settle(self.clock)
        first = board.station.callSystem("get_boot_reason")
        settle(self.clock)
        second = board.station.callSystem("get_boot_reason")
        settle(self.clock)
        self.assertEqual(self.successResultOf(first), "FirmwareUpdate")
        self.assertEqual(self.successResultOf(second), "PowerUp")

    def test_retriesFromConfiguration(self) -> None:
        """Without retries in the request, DefaultRetries applies."""
        transfers = FakeTransfers()
        transfers.failures = 5
        board = SystemBoard(
            self.clock,
            transfers,
            config={"DefaultRetries": 2, "DefaultRetryInterval": 4},
            stepDelay=0.5,
        )
        settle(self.clock)
        board.station.uploadLogs("http://logs/", 3)
        run(self.clock, 10)
        start = self.clock.seconds() - 10 - START
        self.assertEqual(
            [(t - start, s) for t, s, _ in board.logs()],
            [
                (0.0, "Uploading"),
                (0.5, "UploadFailure"),
                (4.5, "Uploading"),
                (5.0, "UploadFailure"),
            ],
        )

    def test_stop(self) -> None:
        """stop() abandons every job and the pending reset."""
        self.transfers.hold = True
        self.update(signedRequest(1))
        self.update({"location": FIRMWARE_URL})
        self.uploadLogs({"location": "http://logs/"})
        self.call("reset", {"type": "Soft", "scheduled": False})
        self.board.system.stop()
        run(self.clock, 20)
        self.assertEqual(self.board.resets, [])
        self.assertFalse(self.board.system.busy)
        self.assertEqual(
            [status for _, status, _ in self.board.firmware()], ["Downloading"]
        )  # the standard one's first line came at once

    def test_journal(self) -> None:
        """The journal keeps the last 200 lines."""
        for n in range(250):
            self.board.system._note(f"line {n}")
        self.assertEqual(len(self.board.system.journal), 200)
        self.assertTrue(self.board.system.journal[-1].endswith("line 249"))

    def test_defaultTransfers(self) -> None:
        """Without injected functions the system transfers for real."""
        board = SystemBoard(self.clock)
        self.assertIsInstance(board.system._fetch.__self__, Transfers)  # type: ignore[attr-defined]
        self.assertIsInstance(board.system._upload.__self__, Transfers)  # type: ignore[attr-defined]


class FileNameTests(SynchronousTestCase):
    def test_checkFileName(self) -> None:
        name = "diagnostics-2026-01-01T00:00:00.000Zab12cd"
        self.assertEqual(checkFileName(name), name)
        for bad in ("", ".", "..", "../x", "a/b", "a\\b", "x..y", "a\x00b", "a\x7fb"):
            self.assertRaises(ValueError, checkFileName, bad)

    def test_uploadTarget(self) -> None:
        """As curl -T: a directory location gets the (escaped) name appended."""
        self.assertEqual(uploadTarget("ftp://h/logs/", "a b:c"), "ftp://h/logs/a%20b%3Ac")
        self.assertEqual(uploadTarget("http://h/put/here.json", "a"), "http://h/put/here.json")
        self.assertRaises(ValueError, uploadTarget, "ftp://h/", "../a")


class VerifySignatureTests(SynchronousTestCase):
    def test_ecdsa(self) -> None:
        self.assertTrue(verifySignature(FIRMWARE, FIRMWARE_SIGNATURE, EC_CERT))
        self.assertFalse(verifySignature(FIRMWARE + b"!", FIRMWARE_SIGNATURE, EC_CERT))

    def test_rsa(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature = base64.b64encode(key.sign(FIRMWARE, padding.PKCS1v15(), hashes.SHA256()))
        # base64 as OCPP carries it, possibly with line breaks
        text = signature.decode()
        wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
        self.assertTrue(verifySignature(FIRMWARE, wrapped, _certificate(key)))
        self.assertFalse(verifySignature(FIRMWARE, wrapped, EC_CERT))

    def test_garbage(self) -> None:
        self.assertFalse(verifySignature(FIRMWARE, "not base64!", EC_CERT))
        self.assertFalse(verifySignature(FIRMWARE, FIRMWARE_SIGNATURE, "not a certificate"))


# -- AuthSim -----------------------------------------------------------------------


class MainBoard:
    """
    A main board's EVerest: two EVSEs (ids 7 and 9), the simulated Auth
    and a station that also watches the token validation status.
    """

    def __init__(self, clock: Clock, accepted: list[str] | None = None, **options: Any) -> None:
        self.clock = clock
        self.bus = SimBus(clock, "main")
        self.evses = [
            EvseManagerSim(self.bus.module(f"evse{n}", mapping={"evse": n}), clock) for n in (7, 9)
        ]
        evseConnections = [("evse7", "evse"), ("evse9", "evse")]
        self.auth = AuthSim(
            self.bus.module(
                "auth",
                connections={
                    "token_provider": [("evse7", "token_provider"), ("evse9", "token_provider")],
                    "evse_manager": evseConnections,
                },
                config=options.pop("config", {}),
            ),
            clock,
            accepted,
            **options,
        )
        module = self.bus.module(
            "station",
            connections={"evse_manager": evseConnections, "auth": [("auth", "main")]},
        )
        self.station = StationConsumer(module, clock)
        self.statuses: list[tuple[str, str]] = []
        module.subscribeVar(
            "auth",
            "token_validation_status",
            lambda v: self.statuses.append((v["token"]["id_token"]["value"], v["status"])),
        )
        for evse in self.evses:
            evse.start()
        self.auth.start()
        self.station.start()
        settle(clock)

    def plugIn(self, index: int) -> None:
        self.evses[index].plugIn()
        settle(self.clock)

    def swipe(self, index: int, value: str, connectors: list[int] | None = None) -> None:
        self.evses[index].swipeCard(value, connectors)
        settle(self.clock)

    def auth_(self, command: str, args: dict[str, Any]) -> Any:
        d = self.station.module.call("auth", command, args)
        settle(self.clock)
        return d


class AuthSimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = newClock()
        self.board = MainBoard(self.clock, ["GOOD", "ALSO-GOOD"])

    def authCall(self, command: str, args: dict[str, Any]) -> Any:
        return self.successResultOf(self.board.auth_(command, args))

    def test_evseIds(self) -> None:
        """At global ready Auth learns each EVSE's id with get_evse."""
        self.assertEqual([view.evseId for view in self.board.auth.evses], [7, 9])

    def test_startTwice(self) -> None:
        self.assertRaises(RuntimeError, self.board.auth.start)

    def test_accepted(self) -> None:
        """
        An accepted token: Processing then Accepted, and the waiting EVSE
        gets authorize_response and starts its transaction with the token.
        """
        self.board.plugIn(0)
        self.board.swipe(0, "GOOD")
        self.assertEqual(self.board.statuses, [("GOOD", "Processing"), ("GOOD", "Accepted")])
        self.assertIn("TransactionStarted", self.board.station.events(0))
        started = [
            e for e in self.board.station.sessionEvents(0) if e["event"] == "TransactionStarted"
        ]
        self.assertEqual(started[0]["transaction_started"]["id_tag"], token("GOOD"))
        self.assertEqual(self.board.station.events(1), [])

    def test_rejected(self) -> None:
        """
        An unknown token: Processing then Rejected; the EVSE hears Invalid
        and goes on waiting.
        """
        self.board.plugIn(0)
        self.board.swipe(0, "BAD")
        self.assertEqual(self.board.statuses, [("BAD", "Processing"), ("BAD", "Rejected")])
        self.assertEqual(self.board.station.events(0), ["SessionStarted", "AuthRequired"])
        self.assertTrue(self.board.auth.evses[0].waiting)
        self.board.swipe(0, "GOOD")
        self.assertIn("TransactionStarted", self.board.station.events(0))

    def test_rejectedWithoutSession(self) -> None:
        self.board.swipe(0, "BAD")
        self.assertEqual(self.board.statuses, [("BAD", "Processing"), ("BAD", "Rejected")])
        self.assertEqual(self.board.auth.pending, [])

    def test_firstWaitingEvse(self) -> None:
        """Without connectors, the first EVSE that waits gets the token."""
        self.board.plugIn(1)
        self.board.swipe(0, "GOOD")
        self.assertEqual(self.board.station.events(0), [])
        self.assertIn("TransactionStarted", self.board.station.events(1))
        self.board.plugIn(0)
        self.board.swipe(1, "ALSO-GOOD")
        self.assertIn("TransactionStarted", self.board.station.events(0))

    def test_connectors(self) -> None:
        """A token's connectors (EVSE ids) choose among the waiting EVSEs."""
        self.board.plugIn(0)
        self.board.plugIn(1)
        self.board.swipe(0, "GOOD", connectors=[9])
        self.assertNotIn("TransactionStarted", self.board.station.events(0))
        self.assertIn("TransactionStarted", self.board.station.events(1))

    def test_tokenBeforeCar(self) -> None:
        """
        An accepted token with no car waiting waits for the next plug-in,
        up to the connection timeout.
        """
        self.board.swipe(0, "GOOD")
        self.assertEqual(len(self.board.auth.pending), 1)
        run(self.clock, 5)
        self.board.plugIn(1)
        self.assertIn("TransactionStarted", self.board.station.events(1))
        self.assertEqual(self.board.auth.pending, [])
        run(self.clock, 10)
        self.assertEqual(self.board.statuses[-1], ("GOOD", "Accepted"))

    def test_pendingForConnector(self) -> None:
        """A waiting token with connectors only goes to those EVSEs."""
        self.board.swipe(0, "GOOD", connectors=[9])
        self.board.plugIn(0)
        self.assertNotIn("TransactionStarted", self.board.station.events(0))
        self.board.plugIn(1)
        self.assertIn("TransactionStarted", self.board.station.events(1))

    def test_connectionTimeout(self) -> None:
        """A token no car came for times out: TimedOut."""
        self.board.swipe(0, "GOOD")
        run(self.clock, 10)
        self.assertEqual(self.board.statuses[-1], ("GOOD", "TimedOut"))
        self.assertEqual(self.board.auth.pending, [])
        self.board.plugIn(0)
        self.assertNotIn("TransactionStarted", self.board.station.events(0))

    def test_setConnectionTimeout(self) -> None:
        self.assertIsNone(self.authCall("set_connection_timeout", {"connection_timeout": 30}))
        self.assertIsNone(self.authCall("set_connection_timeout", {"connection_timeout": "x"}))
        self.assertEqual(self.board.auth.connectionTimeout, 30.0)
        self.board.swipe(0, "GOOD")
        run(self.clock, 20)
        self.assertEqual(len(self.board.auth.pending), 1)
        run(self.clock, 10)
        self.assertEqual(self.board.auth.pending, [])

    def test_usedToStop(self) -> None:
        """
        The token of a running transaction stops it: Processing, UsedToStop,
        stop_transaction with reason Local and the token.
        """
        self.board.plugIn(0)
        self.board.swipe(0, "GOOD")
        self.board.statuses.clear()
        self.board.swipe(0, "GOOD")
        self.assertEqual(self.board.statuses, [("GOOD", "Processing"), ("GOOD", "UsedToStop")])
        [finished] = [
            e for e in self.board.station.sessionEvents(0) if e["event"] == "TransactionFinished"
        ]
        self.assertEqual(finished["transaction_finished"]["reason"], "Local")
        self.assertEqual(finished["transaction_finished"]["id_tag"], token("GOOD"))

    def test_sessionTracking(self) -> None:
        """Auth follows each EVSE's session from its events."""
        view = self.board.auth.evses[0]
        self.board.plugIn(0)
        self.assertTrue(view.waiting and view.session)
        self.board.swipe(0, "GOOD")
        self.assertFalse(view.waiting)
        self.assertEqual(view.transactionToken, token("GOOD"))
        self.board.evses[0].unplug()
        settle(self.clock)
        self.assertFalse(view.session)
        self.assertIsNone(view.transactionToken)

    def test_masterPass(self) -> None:
        """A master pass token stops any transaction (MasterPass), starts none."""
        self.assertIsNone(
            self.authCall("set_master_pass_group_id", {"master_pass_group_id": "POLICE"})
        )
        self.board.plugIn(1)
        self.board.swipe(1, "GOOD")
        master = token("OFFICER")
        master["parent_id_token"] = {"value": "POLICE", "type": "Central"}
        self.board.evses[0].module.publishVar("token_provider", "provided_token", master)
        settle(self.clock)
        self.assertEqual(self.board.statuses[-1], ("OFFICER", "UsedToStop"))
        [finished] = [
            e for e in self.board.station.sessionEvents(1) if e["event"] == "TransactionFinished"
        ]
        self.assertEqual(finished["transaction_finished"]["reason"], "MasterPass")

    def test_withdrawPending(self) -> None:
        """withdraw_authorization of a waiting token: Accepted, Withdrawn."""
        self.board.swipe(0, "GOOD")
        result = self.authCall(
            "withdraw_authorization",
            {"request": {"id_token": {"value": "GOOD", "type": "ISO14443"}}},
        )
        self.assertEqual(result, "Accepted")
        self.assertEqual(self.board.statuses[-1], ("GOOD", "Withdrawn"))
        self.assertEqual(self.board.auth.pending, [])

    def test_withdrawPlaced(self) -> None:
        """An authorization placed on an EVSE is withdrawn there."""
        self.board.plugIn(0)
        view = self.board.auth.evses[0]
        view.authorized = token("GOOD")  # placed, transaction not started yet
        self.assertEqual(
            self.authCall("withdraw_authorization", {"request": {"evse_id": 7}}), "Accepted"
        )
        self.assertIsNone(view.authorized)

    def test_withdrawNothing(self) -> None:
        self.assertEqual(
            self.authCall("withdraw_authorization", {"request": {"evse_id": 3}}), "EvseNotFound"
        )
        self.assertEqual(
            self.authCall("withdraw_authorization", {"request": {}}), "AuthorizationNotFound"
        )
        self.assertEqual(self.authCall("withdraw_authorization", {}), "AuthorizationNotFound")

    def test_malformedToken(self) -> None:
        self.board.evses[0].module.publishVar("token_provider", "provided_token", {"id": 1})
        self.board.evses[0].module.publishVar("token_provider", "provided_token", None)
        settle(self.clock)
        self.assertEqual(self.board.statuses, [])

    def test_acceptedTokensFromConfiguration(self) -> None:
        """Without a list, the accepted_tokens configuration names them."""
        board = MainBoard(self.clock, None, config={"accepted_tokens": "A, B"})
        self.assertEqual(board.auth.acceptedTokens, {"A", "B"})
        board = MainBoard(self.clock, None, config={"accepted_tokens": ["C"]})
        self.assertEqual(board.auth.acceptedTokens, {"C"})
        board = MainBoard(self.clock, None)
        self.assertEqual(board.auth.acceptedTokens, set())

    def test_stop(self) -> None:
        self.board.swipe(0, "GOOD")
        self.board.auth.stop()
        run(self.clock, 20)
        self.assertEqual(self.board.statuses[-1], ("GOOD", "Accepted"))

    def test_failedCallIsLogged(self) -> None:
        """An EVSE that does not answer authorize_response is logged, in one line."""
        logged = EventLoggingObserver()
        globalLogPublisher.addObserver(logged)
        self.addCleanup(globalLogPublisher.removeObserver, logged)
        self.board.plugIn(0)
        self.board.bus._commands.pop(("evse7", "evse", "authorize_response"))
        self.board.swipe(0, "GOOD")
        self.assertEqual(self.flushLoggedErrors(), [])
        failed = [formatEvent(e) for e in logged if "a command failed" in formatEvent(e)]
        self.assertEqual(len(failed), 1)
        self.assertIn("authorize_response", failed[0])


# -- StationConsumer ----------------------------------------------------------------


class StationConsumerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = newClock()
        self.bus = SimBus(self.clock, "main")
        self.evses = [
            EvseManagerSim(self.bus.module(f"evse{n}", mapping={"evse": n}), self.clock)
            for n in (1, 2)
        ]
        self.transfers = FakeTransfers()
        self.system = SystemSim(
            self.bus.module("system"),
            self.clock,
            fetch=self.transfers.fetch,
            upload=self.transfers.upload,
        )
        self.station = StationConsumer(
            self.bus.module(
                "station",
                connections={
                    "evse_manager": [("evse1", "evse"), ("evse2", "evse")],
                    "system": [("system", "main")],
                },
            ),
            self.clock,
        )
        self.seen: list[Record] = []
        self.station.observe(self.seen.append)
        for evse in self.evses:
            evse.start()
        self.system.start()
        self.station.start()
        settle(self.clock)

    def charge(self, index: int) -> None:
        self.evses[index].plugIn()
        settle(self.clock)
        self.station.call(index, "authorize_response", accepted())
        settle(self.clock)

    def result(self, d: Deferred[Any]) -> Any:
        settle(self.clock)
        return self.successResultOf(d)

    def test_startTwice(self) -> None:
        self.assertRaises(RuntimeError, self.station.start)

    def test_recordsPerEvse(self) -> None:
        """Everything each EVSE publishes is recorded under its index, with the time."""
        self.charge(1)
        run(self.clock, 2)
        self.assertEqual(self.station.evseCount, 2)
        self.assertEqual(self.station.events(0), [])
        self.assertEqual(self.station.events(1)[-1], "ChargingStarted")
        self.assertEqual(len(self.station.values(1, "powermeter")), 2)
        self.assertEqual(self.station.latest(0, "evse_id"), "DE*RCP*E1")
        self.assertEqual(self.station.latest(1, "evse_id"), "DE*RCP*E2")
        self.assertIsNone(self.station.latest(0, "powermeter"))
        times = [r.time for r in self.station.records]
        self.assertEqual(times, sorted(times))
        self.assertEqual(self.seen, self.station.records)

    def test_pauseResumeRemoteStop(self) -> None:
        """The helpers call the EVSE's commands and give their results."""
        self.charge(0)
        self.assertTrue(self.result(self.station.pause(0)))
        self.assertTrue(self.result(self.station.resume(0)))
        self.assertFalse(self.result(self.station.resume(0)))
        self.assertTrue(self.result(self.station.remoteStop(0)))
        self.assertFalse(self.result(self.station.remoteStop(0)))
        self.assertEqual(
            self.station.events(0)[-4:],
            ["ChargingPausedEVSE", "ChargingStarted", "StoppingCharging", "TransactionFinished"],
        )
        finished = [e for e in self.station.sessionEvents(0) if e["event"] == "TransactionFinished"]
        self.assertEqual(finished[0]["transaction_finished"]["reason"], "Remote")
        self.assertEqual(self.station.events(1), [])

    def test_setAvailable(self) -> None:
        self.assertTrue(self.result(self.station.setAvailable(1, False)))
        self.assertEqual(self.station.events(1), ["Disabled"])
        self.assertTrue(self.result(self.station.setAvailable(1, True)))
        self.assertEqual(self.station.events(1), ["Disabled", "Enabled"])

    def test_systemHelpers(self) -> None:
        """Firmware, logs and reset through the helpers; statuses recorded."""
        self.transfers.files["http://fw/1"] = b"fw"
        self.assertEqual(self.result(self.station.updateFirmware("http://fw/1")), "Accepted")
        response = self.result(self.station.uploadLogs("ftp://logs/", 5, retries=1))
        self.assertEqual(response["upload_logs_status"], "Accepted")
        run(self.clock, 5)
        self.assertEqual(
            [
                v["firmware_update_status"]
                for v in self.station.values(None, "firmware_update_status")
            ],
            ["Downloading", "Downloaded", "Installing", "Installed"],
        )
        self.assertEqual(
            self.station.values(None, "log_status"),
            [
                {"log_status": "Uploading", "request_id": 5},
                {"log_status": "Uploaded", "request_id": 5},
            ],
        )
        self.assertIsNone(self.result(self.station.reset("Hard", True)))

    def test_errors(self) -> None:
        """Errors of every module are recorded, raise and clear."""
        self.evses[1].injectError("Inoperative")
        self.evses[1].clearInjected("Inoperative")
        settle(self.clock)
        self.assertEqual(
            [(e["type"], e["state"]) for e in self.station.errors()],
            [
                ("evse_manager/Inoperative", "Active"),
                ("evse_manager/Inoperative", "ClearedByModule"),
            ],
        )
        self.assertEqual(self.station.records[-1].source, "error")

    def test_observerFails(self) -> None:
        """A failing observer is logged and does not stop the others."""

        def boom(record: Record) -> None:
            raise ValueError(record.name)

        self.station.observe(boom)
        self.evses[0].swipeCard("x")
        self.evses[0].injectError("Inoperative")
        settle(self.clock)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(self.seen), len(self.station.records))

    def test_withoutSystem(self) -> None:
        """A station with no system connection records EVSEs only."""
        bus = SimBus(self.clock, "other")
        evse = EvseManagerSim(bus.module("evse"), self.clock)
        station = StationConsumer(
            bus.module("station", connections={"evse_manager": [("evse", "evse")]}), self.clock
        )
        evse.start()
        station.start()
        settle(self.clock)
        self.assertEqual(station.latest(0, "ready"), True)
        self.failureResultOf(station.reset(), CommandError)


# -- real transfers -------------------------------------------------------------------


class _PutDirectory(Resource):
    """Stores each PUT body under its last path segment, in a directory."""

    isLeaf = True

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def render_PUT(self, request: Request) -> bytes:
        segments = [s.decode() for s in request.postpath or []]
        if not segments or any(s in ("", ".", "..") or "/" in s for s in segments):
            request.setResponseCode(400)
            return b"bad name"
        if segments[0] == "forbidden":
            request.setResponseCode(403)
            return b"no"
        assert request.content is not None
        self.root.joinpath(*segments).write_bytes(request.content.read())
        request.setResponseCode(201)
        return b""


class _Hang(Resource):
    """Never answers, or (under C{/partial}) never finishes its answer."""

    isLeaf = True

    def render_GET(self, request: Request) -> int:
        if request.postpath == [b"partial"]:
            request.write(b"the beginning")
        return NOT_DONE_YET


@implementer(IRealm)
class _WritableAnonymousRealm:
    """Anonymous users get a writable shell on one directory."""

    def __init__(self, root: Path) -> None:
        self.root = FilePath(str(root))

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        for interface in interfaces:
            if interface is IFTPShell:
                return IFTPShell, FTPShell(self.root), lambda: None
        raise NotImplementedError(interfaces)


class _LoopbackFTP(FTP):
    """An FTP server whose passive data ports listen on 127.0.0.1 only."""

    def listenFactory(self, port: int, factory: Any, interface: str = "") -> Any:  # type: ignore[override]
        return reactor.listenTCP(port, factory, interface=interface or "127.0.0.1")


class RealTransferTests(TestCase):
    """L{Transfers} and L{SystemSim}'s defaults against servers on 127.0.0.1."""

    timeout = 30

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.served = self.dir / "served"
        self.received = self.dir / "received"
        self.ftpRoot = self.dir / "ftp"
        for d in (self.served, self.received, self.ftpRoot):
            d.mkdir(parents=True)
        (self.served / "image.bin").write_bytes(FIRMWARE)
        root = Resource()
        root.putChild(b"fw", File(str(self.served)))
        root.putChild(b"upload", _PutDirectory(self.received))
        root.putChild(b"hang", _Hang())
        self.http = self.listen(Site(root))
        factory = FTPFactory(
            Portal(_WritableAnonymousRealm(self.ftpRoot), [AllowAnonymousAccess()])
        )
        factory.protocol = _LoopbackFTP
        self.ftp = self.listen(factory)
        self.transfers = Transfers(reactor, connectTimeout=5, timeout=20)

    def listen(self, factory: Any) -> int:
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return cast(IPv4Address, port.getHost()).port

    def httpURL(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}/{path}"

    def ftpURL(self, path: str) -> str:
        return f"ftp://127.0.0.1:{self.ftp}/{path}"

    async def test_fetchHTTP(self) -> None:
        self.assertEqual(await self.transfers.fetch(self.httpURL("fw/image.bin")), FIRMWARE)

    async def test_fetchHTTPMissing(self) -> None:
        with self.assertRaises(TransferError):
            await self.transfers.fetch(self.httpURL("fw/nothing.bin"))

    async def test_fetchTooLarge(self) -> None:
        small = Transfers(reactor, maxFetchBytes=10)
        with self.assertRaises(TransferError):
            await small.fetch(self.httpURL("fw/image.bin"))
        with self.assertRaises(TransferError):
            await small.fetch((self.served / "image.bin").as_uri())

    async def test_fetchFile(self) -> None:
        path = self.served / "image.bin"
        self.assertEqual(await self.transfers.fetch(path.as_uri()), FIRMWARE)
        with self.assertRaises(FileNotFoundError):
            await self.transfers.fetch((self.served / "missing").as_uri())
        with self.assertRaises(TransferError):
            await self.transfers.fetch("file://elsewhere/etc/passwd")

    async def test_fetchFTP(self) -> None:
        (self.ftpRoot / "fw.bin").write_bytes(FIRMWARE)
        self.assertEqual(await self.transfers.fetch(self.ftpURL("fw.bin")), FIRMWARE)
        with self.assertRaises(TransferError) as caught:
            await self.transfers.fetch(self.ftpURL("missing.bin"))
        self.assertIn("550", str(caught.exception))

    async def test_passwordsStayOutOfErrors(self) -> None:
        """A refused transfer's error names the URL without its password."""
        with self.assertRaises(TransferError) as caught:
            await self.transfers.upload(
                f"ftp://anonymous:s3cret@127.0.0.1:{self.ftp}/no/such/", "x.json", b"x"
            )
        self.assertNotIn("s3cret", str(caught.exception))
        self.assertIn("anonymous:***@127.0.0.1", str(caught.exception))
        self.assertEqual(redactURL("http://h/x"), "http://h/x")
        self.assertEqual(redactURL("ftp://u@h/x"), "ftp://u@h/x")
        self.assertEqual(redactURL("http://[::1"), "<unreadable URL>")

    async def test_timeout(self) -> None:
        """A transfer that takes too long is abandoned."""
        impatient = Transfers(reactor, timeout=0.2)
        with self.assertRaises(defer.TimeoutError):
            await impatient.fetch(self.httpURL("hang"))
        with self.assertRaises(defer.TimeoutError):
            await impatient.fetch(self.httpURL("hang/partial"))

    async def test_ftpURLs(self) -> None:
        """An ftp URL needs a host and, to fetch, a file name."""
        with self.assertRaises(TransferError):
            await self.transfers.fetch(self.ftpURL("dir/"))
        with self.assertRaises(TransferError):
            await self.transfers.upload("ftp:///dir/", "x.json", b"x")

    async def test_unsupportedScheme(self) -> None:
        with self.assertRaises(TransferError):
            await self.transfers.fetch("gopher://127.0.0.1/x")
        with self.assertRaises(TransferError):
            await self.transfers.upload("gopher://127.0.0.1/", "log", b"x")

    async def test_uploadHTTP(self) -> None:
        """PUT to a directory URL appends the name; to a file URL, uses it."""
        await self.transfers.upload(self.httpURL("upload/"), "diag-1.json", b"one")
        await self.transfers.upload(self.httpURL("upload/named.json"), "diag-2.json", b"two")
        self.assertEqual((self.received / "diag-1.json").read_bytes(), b"one")
        self.assertEqual((self.received / "named.json").read_bytes(), b"two")

    async def test_uploadHTTPRefused(self) -> None:
        with self.assertRaises(TransferError):
            await self.transfers.upload(self.httpURL("upload/forbidden/"), "x.json", b"x")

    async def test_uploadFTP(self) -> None:
        """STOR into the anonymous directory, and into a subdirectory."""
        (self.ftpRoot / "logs").mkdir()
        await self.transfers.upload(self.ftpURL(""), "diag-1.json", b"one")
        await self.transfers.upload(self.ftpURL("logs/"), "diag-2.json", b"two" * 10000)
        self.assertEqual((self.ftpRoot / "diag-1.json").read_bytes(), b"one")
        self.assertEqual((self.ftpRoot / "logs" / "diag-2.json").read_bytes(), b"two" * 10000)

    async def test_uploadFTPFails(self) -> None:
        with self.assertRaises(TransferError) as caught:
            await self.transfers.upload(self.ftpURL("no/such/dir/"), "x.json", b"x")
        self.assertIn("550", str(caught.exception))

    async def test_uploadFile(self) -> None:
        await self.transfers.upload(self.received.as_uri() + "/", "diag.json", b"local")
        self.assertEqual((self.received / "diag.json").read_bytes(), b"local")

    async def test_connectionRefused(self) -> None:
        factory: Any = Site(Resource())
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        number = cast(IPv4Address, port.getHost()).port
        await maybeDeferred(port.stopListening)
        with self.assertRaises(Exception):  # noqa: B017 - ConnectionRefusedError and kin
            await self.transfers.upload(f"http://127.0.0.1:{number}/", "x.json", b"x")

    async def test_hostileFileNames(self) -> None:
        """
        A file name with a path in it is refused before anything is sent,
        whatever the scheme; nothing lands outside the target directory.
        """
        for name in ("../evil.json", "..", "a/b.json", "sub\\x", "", ".", "x\n.json", "..hidden"):
            for location in (
                self.ftpURL(""),
                self.httpURL("upload/"),
                self.received.as_uri() + "/",
            ):
                with self.assertRaises(ValueError, msg=f"{name!r} to {location}"):
                    await self.transfers.upload(location, name, b"evil")
        self.assertEqual(
            sorted(p.name for p in self.dir.rglob("*")),
            sorted(["served", "received", "ftp", "image.bin"]),
        )

    async def test_systemUploadsLogsForReal(self) -> None:
        """
        SystemSim with its default transfers uploads a generated log file
        to an FTP and an HTTP server: Uploading, Uploaded.
        """
        board = SystemBoard(reactor, stepDelay=0.01)
        self.addCleanup(board.bus.shutdown)
        self.addCleanup(board.system.stop)
        for location in (self.ftpURL(""), self.httpURL("upload/")):
            response = await board.station.uploadLogs(location, 21)
            name = response["file_name"]
            self.assertNotIn("/", name)
            status = await self.logStatus(board, {"Uploaded", "UploadFailure"})
            self.assertEqual(status, "Uploaded")
            target = self.ftpRoot if location.startswith("ftp") else self.received
            content = json.loads((target / name).read_bytes())
            self.assertEqual(content["diagnostics"]["module"], "system")
        self.assertEqual(
            [v["log_status"] for v in board.station.values(None, "log_status")],
            ["Uploading", "Uploaded", "Uploading", "Uploaded"],
        )

    async def test_systemUploadFails(self) -> None:
        board = SystemBoard(reactor, stepDelay=0.01)
        self.addCleanup(board.bus.shutdown)
        await board.station.uploadLogs(self.httpURL("upload/forbidden/"), 22)
        self.assertEqual(
            await self.logStatus(board, {"Uploaded", "UploadFailure"}), "UploadFailure"
        )

    async def test_systemFetchesFirmwareForReal(self) -> None:
        """SystemSim with its default transfers fetches and installs (standard path)."""
        board = SystemBoard(reactor, stepDelay=0.01)
        self.addCleanup(board.bus.shutdown)
        self.addCleanup(board.system.stop)
        self.assertEqual(
            await board.station.updateFirmware(self.httpURL("fw/image.bin")), "Accepted"
        )
        self.assertEqual(
            await self.firmwareStatus(board, {"Installed", "DownloadFailed"}), "Installed"
        )
        self.assertEqual(board.system.installedFirmware, FIRMWARE)
        request = {"retries": 1}
        self.assertEqual(
            await board.station.updateFirmware(self.httpURL("fw/missing.bin"), **request),
            "Accepted",
        )
        self.assertEqual(
            await self.firmwareStatus(board, {"Installed", "DownloadFailed"}), "DownloadFailed"
        )

    def logStatus(self, board: SystemBoard, final: set[str]) -> Deferred[str]:
        return self._waitFor(board, "log_status", final)

    def firmwareStatus(self, board: SystemBoard, final: set[str]) -> Deferred[str]:
        return self._waitFor(board, "firmware_update_status", final)

    def _waitFor(self, board: SystemBoard, var: str, final: set[str]) -> Deferred[str]:
        d: Deferred[str] = Deferred()

        def seen(record: Record) -> None:
            if record.name == var and record.value[var] in final and not d.called:
                d.callback(record.value[var])

        board.station.observe(seen)
        return d
