"""
rcp inside EVerest (``everest: mqtt``): a main board and a satellite, each
with its own mosquitto broker and a double of its EVerest manager
(L{tests.everest_manager}), rcp's controller and agent services in this
process between them, on 127.0.0.1 only.

Also: the EVerest manifests, interface and example station configs in
C{etc/everest} agree with each other and with what rcp offers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

import yaml
from twisted.internet import reactor as _globalReactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.agent import everest_mqtt as agentMqtt
from rcp.agent.everest_mqtt import MqttSatellite, listenPort
from rcp.config import fromMapping
from rcp.controller import everest_mqtt as controllerMqtt
from rcp.controller.everest_mqtt import MqttController, peerOf
from rcp.everest.mqtt.connection import IMqttReactor, MqttConnection
from rcp.everest.mqtt.module import MqttModule
from rcp.everest.sim.evse import EvseManagerSim
from rcp.everest.sim.station import StationConsumer
from rcp.settings import AgentSettings, ControllerSettings

from .common import ETC, freePort
from .everest_manager import ManagerDouble, moduleConfig
from .mosquitto import Mosquitto, startBroker
from .test_mqtt import pause, waitUntil

reactor = cast(IMqttReactor, _globalReactor)

EVEREST = ETC / "everest"
RCP_MODULES = ("SatelliteAgent", "SatelliteController", "SystemAggregator")

#: what the example configs assume of EVerest's own modules: the interface of
#: each implementation they connect to, and of each requirement they use
CORE_PROVIDES: dict[str, dict[str, str]] = {
    "EvseManager": {
        "evse": "evse_manager",
        "energy_grid": "energy",
        "token_provider": "auth_token_provider",
    },
    "EnergyNode": {"energy_grid": "energy"},
    "Auth": {"main": "auth"},
    "DummyTokenProvider": {"main": "auth_token_provider"},
    "DummyTokenValidator": {"main": "auth_token_validator"},
    "System": {"main": "system"},
    "YetiSimulator": {"board_support": "evse_board_support"},
}
CORE_REQUIRES: dict[str, dict[str, str]] = {
    "EvseManager": {"bsp": "evse_board_support"},
    "EnergyManager": {"energy_trunk": "energy"},
    "EnergyNode": {"energy_consumer": "energy"},
    "Auth": {
        "token_provider": "auth_token_provider",
        "token_validator": "auth_token_validator",
        "evse_manager": "evse_manager",
    },
    "DummyTokenProvider": {"evse": "evse_manager"},
}

EVSE_PROVIDES = {
    "evse": "evse_manager",
    "energy_grid": "energy",
    "token_provider": "auth_token_provider",
}


def _manifest(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EVEREST / "modules" / name / "manifest.yaml").read_text())
    assert isinstance(data, dict)
    return data


# -- the YAML files -------------------------------------------------------------


class ManifestTests(SynchronousTestCase):
    def test_everyYamlLoads(self) -> None:
        files = sorted(EVEREST.rglob("*.yaml"))
        self.assertEqual(len(files), 7)
        for path in files:
            self.assertIsInstance(yaml.safe_load(path.read_text()), dict, str(path))

    def test_manifestShape(self) -> None:
        for name in RCP_MODULES:
            manifest = _manifest(name)
            self.assertLessEqual(
                set(manifest),
                {
                    "description",
                    "config",
                    "provides",
                    "requires",
                    "metadata",
                    "enable_global_errors",
                },
                name,
            )
            self.assertIsInstance(manifest["description"], str)
            self.assertEqual(set(manifest["metadata"]), {"license", "authors"})
            for key, option in manifest.get("config", {}).items():
                self.assertIn(option["type"], ("integer", "string", "number", "boolean"), key)
                self.assertIsInstance(option["description"], str)
                if "default" in option:
                    low, high = option.get("minimum"), option.get("maximum")
                    if low is not None:
                        self.assertGreaterEqual(option["default"], low)
                    if high is not None:
                        self.assertLessEqual(option["default"], high)
            for impl in manifest["provides"].values():
                self.assertEqual(set(impl), {"interface", "description"})
                self.assertIn(impl["interface"], self.knownInterfaces())
            for requirement in manifest.get("requires", {}).values():
                self.assertEqual(
                    set(requirement), {"interface", "min_connections", "max_connections"}
                )
                self.assertLessEqual(requirement["min_connections"], requirement["max_connections"])
        self.assertIs(_manifest("SatelliteAgent")["enable_global_errors"], True)

    def knownInterfaces(self) -> set[str]:
        known = {i for impls in CORE_PROVIDES.values() for i in impls.values()}
        return known | {
            "satellite",
            "dc_external_derate",
            "display_message",
            "iso15118_extensions",
            "ocpp_data_transfer",
            "uk_random_delay",
        }

    def test_manifestsMatchRcp(self) -> None:
        agent = _manifest("SatelliteAgent")
        self.assertEqual(
            {k: v["interface"] for k, v in agent["provides"].items()}, agentMqtt.PROVIDES
        )
        self.assertEqual(agent["config"]["port"]["default"], 4129)
        controller = _manifest("SatelliteController")
        self.assertEqual(
            {k: v["interface"] for k, v in controller["provides"].items()}, controllerMqtt.PROVIDES
        )
        # what the agent requires is what the controller provides again
        self.assertEqual(
            {k: v["interface"] for k, v in agent["requires"].items()},
            {k: v for k, v in controllerMqtt.PROVIDES.items() if k != "satellite"},
        )
        # upstream's keys, and rcp's optional ones (a default: C++ configs stay valid)
        self.assertEqual(set(controller["config"]), {"hostname", "port", "serial_number"})
        self.assertIn("default", controller["config"]["serial_number"])

    def test_satelliteInterface(self) -> None:
        data = yaml.safe_load((EVEREST / "interfaces" / "satellite.yaml").read_text())
        self.assertEqual(
            {name: cmd["result"]["type"] for name, cmd in data["cmds"].items()},
            {
                "get_local_endpoint_address": "string",
                "get_remote_endpoint_address": "string",
                "is_connected": "boolean",
            },
        )
        self.assertEqual(len(data["errors"]), 9)
        for error in data["errors"]:
            self.assertRegex(error["reference"], r"^/errors/\w+$")

    def connections(self, config: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str, int]]:
        modules = config["active_modules"]
        for moduleId, module in modules.items():
            for requirement, targets in (module.get("connections") or {}).items():
                for index, target in enumerate(targets):
                    yield (
                        moduleId,
                        requirement,
                        target["module_id"],
                        target["implementation_id"],
                        index,
                    )

    def test_exampleConfigsConnectWhatTheManifestsDeclare(self) -> None:
        for name in ("config-main-2ports.yaml", "config-main-4ports.yaml", "config-satellite.yaml"):
            config = yaml.safe_load((EVEREST / name).read_text())
            modules = config["active_modules"]
            provides: dict[str, dict[str, str]] = {}
            requires: dict[str, dict[str, dict[str, Any]]] = {}
            for moduleId, module in modules.items():
                kind = module["module"]
                if kind in RCP_MODULES:
                    manifest = _manifest(kind)
                    # rcp serves every one of its modules: the manager waits for them
                    self.assertTrue(module.get("standalone"), moduleId)
                    provides[moduleId] = {
                        k: v["interface"] for k, v in manifest["provides"].items()
                    }
                    requires[moduleId] = manifest.get("requires", {})
                    self.assertLessEqual(
                        set(module.get("config_module", {})), set(manifest.get("config", {}))
                    )
                else:
                    provides[moduleId] = CORE_PROVIDES.get(kind, {})
                    requires[moduleId] = {
                        r: {"interface": i} for r, i in CORE_REQUIRES.get(kind, {}).items()
                    }
            counts: dict[tuple[str, str], int] = {}
            for source, requirement, target, impl, _ in self.connections(config):
                where = f"{name}: {source}.{requirement} -> {target}.{impl}"
                self.assertIn(target, modules, where)
                rcpEnd = modules[source]["module"] in RCP_MODULES
                rcpEnd = rcpEnd or modules[target]["module"] in RCP_MODULES
                if not rcpEnd:
                    continue
                self.assertIn(requirement, requires[source], where)
                self.assertIn(impl, provides[target], where)
                self.assertEqual(requires[source][requirement]["interface"], provides[target][impl])
                counts[source, requirement] = counts.get((source, requirement), 0) + 1
            # connection counts within the manifests' bounds
            for moduleId, reqs in requires.items():
                if modules[moduleId]["module"] not in RCP_MODULES:
                    continue
                for requirement, spec in reqs.items():
                    count = counts.get((moduleId, requirement), 0)
                    self.assertGreaterEqual(count, spec["min_connections"], (name, requirement))
                    self.assertLessEqual(count, spec["max_connections"], (name, requirement))
            # the manager needs at least one module it starts itself
            self.assertTrue(any(not m.get("standalone") for m in modules.values()))


class HelperTests(SynchronousTestCase):
    def test_listenPort(self) -> None:
        self.assertEqual(listenPort({}), 4129)
        self.assertEqual(listenPort({"port": 5000}), 5000)
        for bad in (0, 70000, "4129", 4129.0, True):
            self.assertRaises(ValueError, listenPort, {"port": bad})

    def test_peerOf(self) -> None:
        self.assertEqual(peerOf({"hostname": "satellite-1"}), ("satellite-1", 4129))
        self.assertEqual(peerOf({"hostname": " s ", "port": 1}), ("s", 1))
        for bad in ({}, {"hostname": ""}, {"hostname": 3}, {"hostname": "a", "port": "1"}):
            self.assertRaises(ValueError, peerOf, bad)


# -- a station on two brokers -----------------------------------------------------


class StationCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.prefix = f"test-{uuid.uuid4().hex[:8]}/"
        self.mainBroker = startBroker(self)
        self.satBroker = startBroker(self)
        self.agentPort = freePort()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.agentEnds: list[tuple[int, str]] = []
        self.controllerEnds: list[tuple[int, str]] = []

    def assertLogged(self, pattern: str) -> None:
        lines = [formatEvent(event) for event in self.logged]
        if not any(re.search(pattern, line) for line in lines):
            self.fail(f"no log line matches {pattern!r}:\n" + "\n".join(lines))

    async def manager(
        self, broker: Mosquitto, configs: dict[str, dict[str, Any]], moduleNames: bool = True
    ) -> ManagerDouble:
        manager = ManagerDouble(reactor, broker.port, self.prefix, configs, moduleNames=moduleNames)
        self.addCleanup(manager.stop)
        await manager.start()
        return manager

    def module(self, broker: Mosquitto, moduleId: str, provides: dict[str, str]) -> MqttModule:
        connection = MqttConnection(reactor, "127.0.0.1", broker.port)
        connection.start()
        self.addCleanup(connection.disconnect)
        module = MqttModule(
            connection, moduleId, self.prefix, reactor, provides=provides, configRetry=0.2
        )
        self.addCleanup(module.stop)
        return module

    async def satelliteSide(
        self, agentConfig: dict[str, Any] | None = None, moduleNames: bool = True
    ) -> tuple[ManagerDouble, EvseManagerSim]:
        configs = {
            "evse1": moduleConfig(
                "evse1",
                "EvseManager",
                mapping={"module": {"evse": 1}},
                implementations=EVSE_PROVIDES,
            ),
            "sys": moduleConfig("sys", "System", implementations=["main"]),
            "agent": moduleConfig(
                "agent",
                "SatelliteAgent",
                {"!module": agentConfig if agentConfig is not None else {"port": self.agentPort}},
                implementations=agentMqtt.PROVIDES,
                connections={
                    "evse_manager": [("evse1", "evse")],
                    "energy": [("evse1", "energy_grid")],
                    "rfid_token_provider": [("evse1", "token_provider")],
                    "system": [("sys", "main")],
                },
            ),
        }
        manager = await self.manager(self.satBroker, configs, moduleNames)
        evseModule = self.module(self.satBroker, "evse1", EVSE_PROVIDES)
        await evseModule.start()
        evse = EvseManagerSim(evseModule, reactor, meterInterval=3600.0)
        self.addCleanup(evse.stop)
        evse.start()
        self.sysModule = self.module(self.satBroker, "sys", {"main": "system"})
        await self.sysModule.start()
        self.resets: list[dict[str, Any]] = []
        self.sysModule.provideCommand("main", "reset", lambda args: self.resets.append(args))
        self.sysModule.signalReady()
        return manager, evse

    async def mainSide(
        self, controllerConfig: dict[str, Any] | None = None, moduleNames: bool = True
    ) -> tuple[ManagerDouble, StationConsumer, MqttModule]:
        configs = {
            "sat1": moduleConfig(
                "sat1",
                "SatelliteController",
                {
                    "!module": controllerConfig
                    if controllerConfig is not None
                    else {"hostname": "127.0.0.1", "port": self.agentPort}
                },
                connections={"auth": [("auth", "main")]},
                mapping={"module": {"evse": 2}},
                implementations=controllerMqtt.PROVIDES,
            ),
            "auth": moduleConfig("auth", "Auth", implementations=["main"]),
            "station": moduleConfig(
                "station",
                "Station",
                connections={
                    "evse_manager": [("sat1", "evse_manager")],
                    "satellite": [("sat1", "satellite")],
                },
            ),
        }
        manager = await self.manager(self.mainBroker, configs, moduleNames)
        auth = self.module(self.mainBroker, "auth", {"main": "auth"})
        stationModule = self.module(self.mainBroker, "station", {})
        await auth.start()
        await stationModule.start()
        self.stationModule = stationModule
        station = StationConsumer(stationModule, reactor)
        station.start()
        auth.signalReady()
        return manager, station, auth

    def agent(self, **extra: Any) -> MqttSatellite:
        data: dict[str, Any] = {
            "everest": "mqtt",
            "listen": f"tcp:{self.agentPort}:interface=127.0.0.1",
            "tls": {"mode": "plain"},
            "mqtt": {"port": self.satBroker.port, "prefix": self.prefix, "module_ids": ["agent"]},
            "link": {"hold_time": 0.2},
            **extra,
        }
        satellite = MqttSatellite(
            reactor, fromMapping(AgentSettings, data), None, self._agentEnd, environ={}
        )
        satellite.startService()
        self.addCleanup(satellite.stopService)
        return satellite

    def _agentEnd(self, code: int, reason: str) -> None:
        self.agentEnds.append((code, reason))

    def controller(self, **extra: Any) -> MqttController:
        data: dict[str, Any] = {
            "everest": "mqtt",
            "tls": {"mode": "plain"},
            "mqtt": {"port": self.mainBroker.port, "prefix": self.prefix, "module_ids": ["sat1"]},
            "link": {"hold_time": 0.2, "retry_interval": 0.2, "poll_timeout": 5},
            **extra,
        }
        controller = MqttController(
            reactor,
            fromMapping(ControllerSettings, data),
            None,
            self._controllerEnd,
            environ={},
        )
        controller.startService()

        async def stop() -> None:
            await controller.stopService()
            await pause(0.1)  # a poll answered meanwhile schedules no more

        self.addCleanup(stop)
        return controller

    def _controllerEnd(self, code: int, reason: str) -> None:
        self.controllerEnds.append((code, reason))

    async def synchronised(self) -> tuple[MqttSatellite, MqttController, StationConsumer]:
        satManager, self.evse = await self.satelliteSide()
        mainManager, station, self.auth = await self.mainSide()
        satellite = self.agent()
        controller = self.controller()
        await satManager.whenGloballyReady()
        await mainManager.whenGloballyReady()
        return satellite, controller, station


class StationTests(StationCase):
    async def test_commandsVarsErrorsAndReady(self) -> None:
        satManager, evse = await self.satelliteSide()
        mainManager, station, auth = await self.mainSide()
        satellite = self.agent()
        await satellite.started
        self.assertEqual(satellite.listen, f"tcp:{self.agentPort}:interface=127.0.0.1")
        # the agent waits for its link before it says ready: no global ready yet
        await pause(0.5)
        self.assertNotIn("agent", satManager.ready)
        self.assertFalse(satManager.globallyReady)
        self.assertFalse(mainManager.globallyReady)

        controller = self.controller()
        await satManager.whenGloballyReady()
        await mainManager.whenGloballyReady()
        link = controller.links["sat1"]
        self.assertTrue(link.synced)
        for manager, module in ((satManager, "agent"), (mainManager, "sat1")):
            readies = [e for e in manager.events if e[0] == "ready"]
            self.assertEqual([e[1] for e in readies].count(module), 1)
            self.assertEqual(manager.events[-1], ("global-ready",))
            self.assertEqual(manager.events.count(("global-ready",)), 1)
        # metadata as the manifests say
        [meta] = [e for e in satManager.events if e[:2] == ("metadata", "agent")]
        self.assertEqual(
            set(meta[2]["data"]["provides"]), set(_manifest("SatelliteAgent")["provides"])
        )

        # a command from the main board reaches the satellite's EvseManager
        result = await station.call(0, "get_evse")
        self.assertIsInstance(result, dict)
        self.assertEqual(len(result["connectors"]), 1)
        self.assertTrue(await station.call(0, "pause_charging") in (True, False))
        # variables flow back: a session on the satellite, seen on the main board
        await waitUntil(lambda: station.latest(0, "ready") is True, 10)
        self.assertTrue(evse.plugIn())
        await waitUntil(lambda: "SessionStarted" in station.events(0), 10)
        # errors flow back too, raised on the satellite implementation
        evse.injectError("MREC4OverCurrentFailure")
        await waitUntil(lambda: len(station.errors()) >= 1, 10)
        error = station.errors()[-1]
        self.assertEqual(error["type"], "evse_manager/MREC4OverCurrentFailure")
        self.assertTrue(evse.clearInjected("MREC4OverCurrentFailure"))
        await waitUntil(lambda: station.errors()[-1]["state"] == "ClearedByModule", 10)
        # the main board's auth status reaches the satellite's agent
        seen: list[Any] = []
        probe = self.module(self.satBroker, "probe", {})
        probe.connection.subscribe(
            f"{self.prefix}modules/agent/impl/auth/var/token_validation_status",
            lambda m: seen.append(m.payload),
        )
        await probe.connection.whenSubscribed(
            f"{self.prefix}modules/agent/impl/auth/var/token_validation_status"
        )
        status = {
            "token": {
                "id_token": {"value": "CARD1", "type": "ISO14443"},
                "authorization_type": "RFID",
            },
            "status": "Accepted",
        }
        auth.publishVar("main", "token_validation_status", status)
        await waitUntil(lambda: bool(seen), 10)
        self.assertEqual(self.agentEnds, [])
        self.assertEqual(self.controllerEnds, [])

    async def test_satelliteInterface(self) -> None:
        await self.synchronised()
        module = self.stationModule
        self.assertTrue(await module.call("satellite", "is_connected", {}))
        self.assertEqual(
            await module.call("satellite", "get_local_endpoint_address", {}), "127.0.0.1"
        )
        self.assertEqual(
            await module.call("satellite", "get_remote_endpoint_address", {}), "127.0.0.1"
        )


class EndingTests(StationCase):
    async def test_controllerLostBroker(self) -> None:
        await self.synchronised()
        self.mainBroker.stop()
        await waitUntil(lambda: bool(self.controllerEnds), 30)
        code, reason = self.controllerEnds[0]
        self.assertEqual(code, 1)
        self.assertIn("lost the MQTT broker", reason)
        self.assertLogged("rcp-controller: ending with exit code 1")

    async def test_agentLostBroker(self) -> None:
        satellite, _, _ = await self.synchronised()
        self.satBroker.stop()
        await waitUntil(lambda: bool(self.agentEnds), 30)
        self.assertEqual(self.agentEnds[0][0], 1)
        self.assertIn("lost the MQTT broker", self.agentEnds[0][1])
        assert satellite.link is not None
        self.assertTrue(satellite.link.halted)

    async def test_linkEndEndsTheController(self) -> None:
        satellite, controller, _ = await self.synchronised()
        # the satellite goes away: the synchronised link is lost
        await satellite.stopService()
        await waitUntil(lambda: bool(self.controllerEnds), 30)
        self.assertIn("sat1:", self.controllerEnds[0][1])
        self.assertIsNotNone(controller.links["sat1"].ended)

    async def test_resetAsksTheSystem(self) -> None:
        satellite, _, _ = await self.synchronised()
        satellite._resetBoard("test")
        await waitUntil(lambda: bool(self.agentEnds), 10)
        self.assertEqual(self.resets, [{"type": "Soft", "scheduled": False}])
        self.assertEqual(self.agentEnds, [(1, "board reset (test)")])

    async def test_resetWithoutSystemEnds(self) -> None:
        await self.satelliteSide()
        # a second agent module without a System connected
        satellite = self.agent()
        await satellite.started
        satellite.module.moduleConfig.connections.pop("system")  # type: ignore[union-attr]
        satellite._resetBoard("test")
        self.assertEqual(self.agentEnds[0][0], 1)
        self.assertIn("no System connected", self.agentEnds[0][1])

    async def test_stationAlreadyRunning(self) -> None:
        # the manager went global-ready before: module_names is not retained
        await self.satelliteSide(moduleNames=False)
        await self.mainSide(moduleNames=False)
        satellite = self.agent()
        controller = self.controller()
        await satellite.started
        await controller.started
        for ends in (self.agentEnds, self.controllerEnds):
            [(code, reason)] = ends
            self.assertEqual(code, 1)
            self.assertIn("global-ready already", reason)
        self.assertIsNone(satellite.link)
        self.assertEqual(controller.links, {})
        self.assertLogged(r"module_names is gone")

    async def test_badModuleConfig(self) -> None:
        await self.satelliteSide(agentConfig={"port": "x"})
        await self.mainSide(controllerConfig={"port": 4129})
        satellite = self.agent(listen=None)
        controller = self.controller()
        await satellite.started
        await controller.started
        self.assertIn("not a port number", self.agentEnds[0][1])
        self.assertIn("sat1: the module config hostname is None", self.controllerEnds[0][1])

    async def test_peerOverride(self) -> None:
        await self.satelliteSide()
        await self.mainSide(controllerConfig={"hostname": "192.0.2.1", "port": 1})
        self.agent()
        controller = self.controller(peer=f"tcp:host=127.0.0.1:port={self.agentPort}")
        await controller.started
        await waitUntil(lambda: "sat1" in controller.links and controller.links["sat1"].synced, 20)


class ProcessTests(StationCase):
    """The real commands, ``twistd rcp-agent`` and ``twistd rcp-controller``, inside EVerest."""

    timeout = 90

    def config(self, text: str) -> str:
        path: str = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    async def test_twistdProcessesJoinTheirEVerest(self) -> None:
        from .test_tap import _twistd

        satManager, evse = await self.satelliteSide()
        mainManager, station, _auth = await self.mainSide()
        prefix = self.prefix.rstrip("/")
        agent = _twistd(
            self,
            "rcp-agent",
            "--config",
            self.config(
                "everest: mqtt\ntls: {mode: plain}\nlink: {hold_time: 0.2}\n"
                f"mqtt: {{port: {self.satBroker.port}, prefix: {prefix}, module_ids: [agent]}}\n"
            ),
        )
        controller = _twistd(
            self,
            "rcp-controller",
            "--config",
            self.config(
                "everest: mqtt\ntls: {mode: plain}\n"
                "link: {hold_time: 0.2, retry_interval: 0.2}\n"
                f"mqtt: {{port: {self.mainBroker.port}, prefix: {prefix}, module_ids: [sat1]}}\n"
            ),
        )
        # both boards go global-ready once the link between them is synchronised
        await satManager.whenGloballyReady()
        await mainManager.whenGloballyReady()
        for manager, module in ((satManager, "agent"), (mainManager, "sat1")):
            readies = [e for e in manager.events if e[0] == "ready"]
            self.assertEqual([e[1] for e in readies].count(module), 1)
        # a command from the main board's EVerest reaches the satellite's EvseManager
        result = await station.call(0, "get_evse")
        self.assertEqual(result["id"], evse.evseId)
        # and the satellite's session events reach the main board's EVerest
        evse.plugIn()
        await waitUntil(lambda: "AuthRequired" in station.events(0))
        self.assertIn("link synchronised", agent.text())
        self.assertIn("link synchronised", controller.text())
        for process in (controller, agent):
            self.assertNotIn("Traceback", process.text())
