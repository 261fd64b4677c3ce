"""
The interim SystemAggregator (L{rcp.aggregator}): a pass-through to the
main board's System, on a L{SimBus} with a L{SystemSim}, and hosted by
L{MqttController} on a real broker.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rcp.aggregator import COMMANDS, SystemAggregatorModule
from rcp.config import ConfigError, fromMapping
from rcp.controller.everest_mqtt import MqttController
from rcp.everest.interface import CommandError
from rcp.everest.sim.bus import SimBus
from rcp.everest.sim.system import SystemSim
from rcp.settings import ControllerSettings

from .common import freePort
from .everest_manager import moduleConfig
from .test_everest_station import StationCase, reactor
from .test_mqtt import pause, waitUntil

FIRMWARE = {"location": "http://firmware.example/image.bin"}
LOGS = {"location": "ftp://127.0.0.1:1/", "request_id": 7}


class SimAggregatorTests(SynchronousTestCase):
    """The pass-through on a simulated board."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = SimBus(self.clock, "main")
        self.uploads: list[tuple[str, str, bytes]] = []
        self.resets: list[str] = []
        self.system = SystemSim(
            self.bus.module("system"),
            self.clock,
            fetch=lambda url: succeed(b"image"),
            upload=self._upload,
            onReset=self.resets.append,
            bootReason="FirmwareUpdate",
        )
        self.aggregatorModule = self.bus.module(
            "agg", {"system": [("system", "main"), ("sat1", "system")]}
        )
        self.aggregator = SystemAggregatorModule(self.aggregatorModule)
        # the caller: an OCPP module, say, connected to the aggregator's system
        self.caller = self.bus.module("ocpp", {"system": [("agg", "system")]})
        self.seen: dict[str, list[Any]] = {"firmware_update_status": [], "log_status": []}
        for var, values in self.seen.items():
            self.caller.subscribeVar("system", var, values.append)
        self.system.start()
        self.aggregator.start()

    def _upload(self, location: str, fileName: str, data: bytes) -> Deferred[None]:
        self.uploads.append((location, fileName, data))
        return succeed(None)

    def settle(self, d: Deferred[Any], seconds: float = 0.0) -> Any:
        """Turn the clock until C{d} has a result; return it (or raise its error)."""
        for _ in range(100):
            if d.called:
                break
            self.clock.advance(seconds)
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        self.assertEqual(len(outcome), 1, "no result")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def call(self, command: str, args: dict[str, Any] | None) -> Any:
        return self.settle(self.caller.call("system", command, cast(dict[str, Any], args)))

    def test_everyCommandIsOffered(self) -> None:
        self.assertEqual(
            {cmd for (module, impl, cmd) in self.bus._commands if module == "agg"}, set(COMMANDS)
        )
        self.assertEqual(
            {impl for (module, impl, _) in self.bus._commands if module == "agg"}, {"system"}
        )

    def test_signalsReady(self) -> None:
        self.assertIn("agg", self.bus._ready)
        self.assertIn("system", self.bus._ready)
        self.assertFalse(self.bus.globallyReady)  # the caller did not say ready

    def test_updateFirmware(self) -> None:
        self.assertEqual(
            self.call("update_firmware", {"firmware_update_request": FIRMWARE}), "Accepted"
        )
        # the System's own answer when it is busy
        self.assertEqual(
            self.call("update_firmware", {"firmware_update_request": FIRMWARE}), "Rejected"
        )

    def test_allowFirmwareInstallation(self) -> None:
        self.assertIsNone(self.call("allow_firmware_installation", None))

    def test_uploadLogs(self) -> None:
        result = self.call("upload_logs", {"upload_logs_request": LOGS})
        self.assertEqual(result["upload_logs_status"], "Accepted")
        self.assertTrue(result["file_name"].startswith("diagnostics-"))
        self.assertEqual(
            self.call("upload_logs", {"upload_logs_request": {}}),
            {"upload_logs_status": "Rejected"},
        )

    def test_isResetAllowed(self) -> None:
        self.assertIs(self.call("is_reset_allowed", {"type": "Soft"}), True)

    def test_reset(self) -> None:
        self.assertIsNone(self.call("reset", {"type": "Hard", "scheduled": False}))
        self.clock.advance(self.system.resetDelay)
        self.assertEqual(self.resets, ["Hard"])

    def test_setSystemTime(self) -> None:
        self.assertIs(self.call("set_system_time", {"timestamp": "2026-01-01T00:00:00.000Z"}), True)
        self.assertEqual(self.system.systemTime, "2026-01-01T00:00:00.000Z")

    def test_getBootReason(self) -> None:
        # null arguments are passed on as {}
        self.assertEqual(self.call("get_boot_reason", None), "FirmwareUpdate")
        self.assertEqual(self.call("get_boot_reason", {}), "PowerUp")

    def test_errorsPassThrough(self) -> None:
        self.bus._commands.pop(("system", "main", "get_boot_reason"))
        error = self.assertRaises(CommandError, self.call, "get_boot_reason", {})
        self.assertEqual(error.kind, "HandlerException")
        self.assertIn("provides no command main.get_boot_reason", error.message)

    def test_firmwareStatusRepublished(self) -> None:
        self.call("update_firmware", {"firmware_update_request": FIRMWARE})
        self.clock.pump([self.system.stepDelay] * 5)
        self.assertEqual(
            self.seen["firmware_update_status"],
            [
                {"firmware_update_status": status, "request_id": -1}
                for status in ("Downloading", "Downloaded", "Installing", "Installed")
            ],
        )

    def test_logStatusRepublished(self) -> None:
        self.call("upload_logs", {"upload_logs_request": LOGS})
        self.clock.pump([self.system.stepDelay] * 3)
        self.assertEqual(
            self.seen["log_status"],
            [
                {"log_status": "Uploading", "request_id": 7},
                {"log_status": "Uploaded", "request_id": 7},
            ],
        )
        self.assertEqual(len(self.uploads), 1)

    def test_noSystemConnected(self) -> None:
        module = self.bus.module("agg2", {"satellite": [("sat1", "satellite")]})
        aggregator = SystemAggregatorModule(module)
        error = self.assertRaises(ValueError, aggregator.start)
        self.assertIn("agg2: no System connected", str(error))
        self.assertNotIn("agg2", self.bus._ready)

    def test_startTwice(self) -> None:
        self.assertRaises(RuntimeError, self.aggregator.start)


class MqttAggregatorTests(StationCase):
    """L{MqttController} with C{mqtt.aggregator_id} hosts the aggregator."""

    async def test_hostedByTheController(self) -> None:
        satManager, _ = await self.satelliteSide()
        configs = {
            "sat1": moduleConfig(
                "sat1",
                "SatelliteController",
                {"!module": {"hostname": "127.0.0.1", "port": self.agentPort}},
                connections={"system": [("system", "main")]},
                mapping={"module": {"evse": 2}},
            ),
            "system": moduleConfig("system", "System", standalone=False),
            "agg": moduleConfig(
                "agg",
                "SystemAggregator",
                connections={
                    "system": [("system", "main"), ("sat1", "system")],
                    "satellite": [("sat1", "satellite")],
                },
            ),
            "ocpp": moduleConfig("ocpp", "OCPP", connections={"system": [("agg", "system")]}),
        }
        manager = await self.manager(self.mainBroker, configs)
        systemModule = self.module(self.mainBroker, "system", {"main": "system"})
        await systemModule.start()
        system = SystemSim(
            systemModule,
            reactor,
            stepDelay=0.01,
            fetch=lambda url: succeed(b"image"),
            upload=lambda location, name, data: succeed(None),
            bootReason="ScheduledReset",
        )
        system.start()
        ocpp = self.module(self.mainBroker, "ocpp", {})
        await ocpp.start()
        logStatus: list[Any] = []
        ocpp.subscribeVar("system", "log_status", logStatus.append)
        ocpp.signalReady()

        controller: MqttController = self.controller(
            mqtt={
                "port": self.mainBroker.port,
                "prefix": self.prefix,
                "module_ids": ["sat1"],
                "aggregator_id": "agg",
            },
            receivers={
                "ftp_port": freePort(),
                "http_port": freePort(),
                "directory": self.mktemp(),
                "min_free_bytes": 0,
            },
        )
        self.assertEqual([m.moduleId for m in controller.modules], ["sat1"])
        await controller.started
        self.assertIsNotNone(controller.aggregator)
        # ready at once, but the station waits for the link of sat1
        await waitUntil(lambda: "agg" in manager.ready, 10)
        await pause(0.3)
        self.assertNotIn("sat1", manager.ready)
        self.assertFalse(manager.globallyReady)
        self.assertIn(("config", "agg"), manager.events)
        [meta] = [e for e in manager.events if e[:2] == ("metadata", "agg")]
        self.assertEqual(meta[2]["data"]["provides"], {"system": {"interface": "system"}})

        # the real SystemAggregator: the boot reason is the main board's; the
        # time is set on every board, and the satellite, not linked yet, says no
        self.assertEqual(await ocpp.call("system", "get_boot_reason", {}), "ScheduledReset")
        self.assertIs(
            await ocpp.call("system", "set_system_time", {"timestamp": "2026-01-01T00:00:00Z"}),
            False,
        )
        self.assertEqual(system.systemTime, "2026-01-01T00:00:00Z")
        # logs: the main board's go to the receivers; the archive's location refuses
        result = await ocpp.call("system", "upload_logs", {"upload_logs_request": LOGS})
        self.assertEqual(result["upload_logs_status"], "Accepted")
        await waitUntil(lambda: any(s["log_status"] == "UploadFailure" for s in logStatus), 30)
        self.assertEqual(logStatus[0]["log_status"], "Uploading")
        self.assertEqual({s.get("request_id") for s in logStatus}, {7})

        # the satellite comes: global ready, with one ModuleReady of agg
        self.agent()
        await satManager.whenGloballyReady()
        await manager.whenGloballyReady()
        readies = [e[1] for e in manager.events if e[0] == "ready"]
        self.assertEqual(readies.count("agg"), 1)
        self.assertEqual(readies.count("sat1"), 1)
        self.assertEqual(manager.events.count(("global-ready",)), 1)
        self.assertEqual(self.controllerEnds, [])

    async def test_noSystemConnectedEnds(self) -> None:
        configs = {
            "sat1": moduleConfig(
                "sat1",
                "SatelliteController",
                {"!module": {"hostname": "127.0.0.1", "port": self.agentPort}},
            ),
            "agg": moduleConfig("agg", "SystemAggregator"),
        }
        manager = await self.manager(self.mainBroker, configs)
        controller = self.controller(
            mqtt={
                "port": self.mainBroker.port,
                "prefix": self.prefix,
                "module_ids": ["sat1"],
                "aggregator_id": "agg",
            }
        )
        await controller.started
        [(code, reason)] = self.controllerEnds
        self.assertEqual(code, 1)
        self.assertIn("agg: no System connected to the requirement system", reason)
        self.assertEqual(controller.links, {})
        self.assertNotIn("agg", manager.ready)


class SettingsTests(SynchronousTestCase):
    def settings(self, **mqtt: Any) -> ControllerSettings:
        data = {"everest": "mqtt", "tls": {"mode": "plain"}, "mqtt": {"module_ids": ["s1"], **mqtt}}
        return fromMapping(ControllerSettings, data)

    def test_aggregatorId(self) -> None:
        self.assertIsNone(self.settings().mqtt.aggregator_id)
        self.assertEqual(self.settings(aggregator_id="agg").mqtt.aggregator_id, "agg")
        for bad, problem in (
            ("a/b", "mqtt.aggregator_id: 'a/b' cannot be an EVerest module id"),
            ("s1", "mqtt.aggregator_id: the SystemAggregator's module id is also one of"),
        ):
            error = self.assertRaises(ConfigError, self.settings, aggregator_id=bad)
            self.assertTrue(str(error).startswith(problem), str(error))
