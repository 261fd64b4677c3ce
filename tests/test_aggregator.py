"""
The SystemAggregator hosted by L{MqttController} (C{mqtt.aggregator_id}) on
a real broker, with its receivers and transfers; the policy itself is in
C{test_aggregator_policy} and C{test_aggregator_module}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from rcp.config import ConfigError, fromMapping
from rcp.controller.everest_mqtt import MqttController
from rcp.everest.sim.system import SystemSim
from rcp.settings import ControllerSettings

from .common import freePort
from .everest_manager import moduleConfig
from .test_everest_station import StationCase, reactor
from .test_mqtt import pause, waitUntil

LOGS = {"location": "ftp://127.0.0.1:1/", "request_id": 7}


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
