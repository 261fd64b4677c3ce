"""
rcp against the real EVerest manager (L{tests.everest_real}): the example
station configs pass C{manager --check}, the table's answers match the
real types, and a satellite and a main board, each a real manager with
schema validation on its own broker, run rcp's agent and controller as
standalone modules between the tests' everestpy modules.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, cast

import yaml
from twisted.internet import reactor as _globalReactor
from twisted.trial.unittest import TestCase

from rcp.agent import everest_mqtt as agentMqtt
from rcp.controller import everest_mqtt as controllerMqtt
from rcp.everest.mqtt import wire
from rcp.everest.mqtt.connection import IMqttReactor, MqttConnection
from rcp.tunnel.table import CHANNELS, PUSH_CHANNELS, REQUIRED

from . import everest_real as real
from .common import ETC, freePort
from .everest_manager import ManagerDouble, moduleConfig
from .everest_modules import samples
from .mosquitto import Mosquitto, startBroker
from .test_mqtt import waitUntil
from .test_tap import _Process, _twistd

reactor = cast(IMqttReactor, _globalReactor)

EVEREST = ETC / "everest"
EXAMPLES = sorted(EVEREST.glob("*.yaml"))


def exampleCoreModules() -> list[str]:
    """The everest-core modules the example configs name."""
    names: set[str] = set()
    for path in EXAMPLES:
        config = yaml.safe_load(path.read_text())
        names |= {m["module"] for m in config["active_modules"].values()}
    return sorted(names - set(real.RCP_MODULES))


class CheckTests(TestCase):
    timeout = 60

    async def test_exampleConfigsPassCheck(self) -> None:
        """Every example station config, with the real core manifests and rcp's files."""
        self.assertEqual(len(EXAMPLES), 3)
        prefix = real.buildPrefix(Path(self.mktemp()), core=exampleCoreModules())
        for path in EXAMPLES:
            code, output = await real.check(prefix, path)
            self.assertEqual(real.errorLines(output), [], path.name)
            self.assertEqual(code, 0, f"{path.name}:\n{output}")

    async def test_checkRefusesAMissingErrorFile(self) -> None:
        """--check does fail: the satellite interface referencing /errors/powermeter."""
        prefix = real.buildPrefix(Path(self.mktemp()), core=exampleCoreModules())
        interface = prefix / "share" / "everest" / "interfaces" / "satellite.yaml"
        data = yaml.safe_load(interface.read_text())
        data["errors"].append({"reference": "/errors/powermeter"})
        interface.write_text(yaml.safe_dump(data))
        code, output = await real.check(prefix, EVEREST / "config-main-2ports.yaml")
        self.assertNotEqual(code, 0)
        self.assertIn("powermeter", "\n".join(real.errorLines(output)))

    def test_satelliteErrorsExist(self) -> None:
        """Every error file the satellite interface references ships with core."""
        prefix = real.basePrefix()
        data = yaml.safe_load((EVEREST / "interfaces" / "satellite.yaml").read_text())
        for error in data["errors"]:
            name = error["reference"].removeprefix("/errors/")
            self.assertTrue(
                (prefix / "share" / "everest" / "errors" / f"{name}.yaml").is_file(), name
            )

    def test_absentAnswersMatchTheTypes(self) -> None:
        """Every "if absent" and fixed answer of the table, against core's result types."""
        prefix = real.basePrefix()
        for channel in CHANNELS:
            cmds = real.interface(prefix, channel.interface).get("cmds", {})
            for command in channel.commands:
                if command.absent is REQUIRED:
                    continue
                result = cmds[command.name].get("result", {"type": "null"})
                label = f"{channel.name}.{command.name}"
                self.assertEqual(real.validate(prefix, result, command.absent, label), [])
        for push in PUSH_CHANNELS:
            cmds = real.interface(prefix, push.interface)["cmds"]
            self.assertEqual({name for name, _ in push.answers}, set(cmds), push.name)
            for name, answer in push.answers:
                result = cmds[name].get("result", {"type": "null"})
                self.assertEqual(real.validate(prefix, result, answer, f"{push.name}.{name}"), [])

    def test_samplesMatchTheTypes(self) -> None:
        """The test modules' own values are valid (else a failure would be theirs)."""
        prefix = real.basePrefix()
        interfaces = {c.name: c.interface for c in CHANNELS}
        for (requirement, command), (args, result) in samples.COMMANDS.items():
            spec = real.interface(prefix, interfaces[requirement])["cmds"][command]
            for name, value in args.items():
                self.assertEqual(real.validate(prefix, spec["arguments"][name], value, name), [])
            self.assertEqual(set(args), set(spec.get("arguments", {})), command)
            schema = spec.get("result", {"type": "null"})
            self.assertEqual(real.validate(prefix, schema, result, command), [])


# -- a station of two real managers ------------------------------------------------

SATELLITE_CONNECTIONS = {
    "evse_manager": ("evse", "evse"),
    "energy": ("evse", "energy_grid"),
    "rfid_token_provider": ("evse", "token_provider"),
    "uk_random_delay": ("evse", "random_delay"),
    "dc_external_derate": ("evse", "dc_external_derate"),
    "system": ("system", "main"),
}


#: what the tests' consumer module requires of its SatelliteController
CONSUMER_REQUIREMENTS = (
    "evse_manager",
    "energy",
    "rfid_token_provider",
    "dc_external_derate",
    "display_message",
    "iso15118_extensions",
    "ocpp_data_transfer",
    "system",
    "uk_random_delay",
    "satellite",
)


def _connections(table: dict[str, tuple[str, str]]) -> dict[str, list[dict[str, str]]]:
    return {
        requirement: [{"module_id": module, "implementation_id": impl}]
        for requirement, (module, impl) in table.items()
    }


class BoardCase(TestCase):
    """
    The two boards of a station: satellite (agent, the tests' EVSE, System
    and power meter) and main board (controller, the tests' consumer), each
    a real manager with C{validate_schema: true} on its own mosquitto.
    """

    timeout = 90

    def setUp(self) -> None:
        self.reports = Path(self.mktemp())
        self.reports.mkdir(parents=True)
        self.env = {"RCP_TEST_REPORT_DIR": str(self.reports)}

    def reportOf(self, moduleId: str) -> list[dict[str, Any]]:
        return samples.readReport(str(self.reports / f"{moduleId}.jsonl"))

    def rcpConfig(self, text: str) -> str:
        path: str = self.mktemp()
        Path(path).write_text(text)
        return path

    def satelliteBoard(self, agentPort: int) -> real.Board:
        meter = {
            "meter": ("meter", "meter"),
            "agent_auth": ("agent", "auth"),
            "agent_system": ("agent", "system"),
        }
        return real.startBoard(
            self,
            {
                "evse": {"module": "RcpTestEvse", "connections": _connections(meter)},
                "system": {"module": "RcpTestSystem"},
                "meter": {"module": "RcpTestPowermeter"},
                "agent": {
                    "module": "SatelliteAgent",
                    "standalone": True,
                    "config_module": {"port": agentPort},
                    "connections": _connections(SATELLITE_CONNECTIONS),
                },
            },
            real.testModules("satellite"),
            env=self.env,
        )

    def mainBoard(self, agentPort: int) -> real.Board:
        return real.startBoard(
            self,
            {
                "sat": {
                    "module": "SatelliteController",
                    "standalone": True,
                    "mapping": {"module": {"evse": 2}},
                    "config_module": {"hostname": "127.0.0.1", "port": agentPort},
                    "connections": _connections(
                        {"auth": ("consumer", "auth"), "system": ("consumer", "system")}
                    ),
                },
                "consumer": {
                    "module": "RcpTestConsumer",
                    "connections": _connections({r: ("sat", r) for r in CONSUMER_REQUIREMENTS}),
                },
            },
            real.testModules("main"),
            env=self.env,
        )

    def agent(self, broker: Mosquitto) -> _Process:
        return _twistd(
            self,
            "rcp-agent",
            "--config",
            self.rcpConfig(
                "everest: mqtt\ntls: {mode: plain}\nlink: {hold_time: 0.2}\n"
                f"mqtt: {{port: {broker.port}, prefix: everest, module_ids: [agent]}}\n"
            ),
        )

    def controller(self, broker: Mosquitto) -> _Process:
        return _twistd(
            self,
            "rcp-controller",
            "--config",
            self.rcpConfig(
                "everest: mqtt\ntls: {mode: plain}\n"
                "link: {hold_time: 0.2, retry_interval: 0.2}\n"
                f"mqtt: {{port: {broker.port}, prefix: everest, module_ids: [sat]}}\n"
            ),
        )

    async def startManagers(
        self, agentPort: int
    ) -> tuple[real.Manager, Mosquitto, real.Manager, Mosquitto]:
        """Both managers, waiting for rcp: (manager, broker) of the satellite, then the main's."""
        satellite, main = self.satelliteBoard(agentPort), self.mainBoard(agentPort)
        for board in (satellite, main):
            await board.manager.whenStatus("WAITING_FOR_STANDALONE_MODULES")
        return satellite.manager, satellite.broker, main.manager, main.broker


class DoubleTests(BoardCase):
    """The manager double of the other tests answers as the real manager does."""

    async def configAnswer(self, broker: Mosquitto, moduleId: str) -> Any:
        connection = MqttConnection(reactor, broker.host, broker.port)
        connection.start()
        self.addCleanup(connection.disconnect)
        await connection.whenConnected()
        answers: list[bytes] = []
        topic = f"everest/modules/{moduleId}/response"
        await connection.subscribe(topic, lambda message: answers.append(message.payload))
        connection.publish("everest/config/request", wire.configRequest(moduleId), qos=2)
        await waitUntil(lambda: bool(answers), 10)
        return json.loads(answers[0])

    async def test_configAnswers(self) -> None:
        agentPort = freePort()
        _, satBroker, _, mainBroker = await self.startManagers(agentPort)
        doubleBroker = startBroker(self)
        expected = {
            "agent": moduleConfig(
                "agent",
                "SatelliteAgent",
                {"!module": {"port": agentPort}},
                connections={k: [v] for k, v in SATELLITE_CONNECTIONS.items()},
                implementations=agentMqtt.PROVIDES,
            ),
            "sat": moduleConfig(
                "sat",
                "SatelliteController",
                # the real manager fills in the manifest's defaults (serial_number)
                {"!module": {"hostname": "127.0.0.1", "port": agentPort, "serial_number": ""}},
                connections={"auth": [("consumer", "auth")], "system": [("consumer", "system")]},
                mapping={"module": {"evse": 2}},
                implementations=controllerMqtt.PROVIDES,
            ),
        }
        double = ManagerDouble(
            reactor,
            doubleBroker.port,
            "everest/",
            expected,
            mappings={"sat": {"module": {"evse": 2}}},
        )
        self.addCleanup(double.stop)
        await double.start()
        for broker, moduleId in ((satBroker, "agent"), (mainBroker, "sat")):
            answer = await self.configAnswer(broker, moduleId)
            self.assertEqual(await self.configAnswer(doubleBroker, moduleId), answer)


class StationTests(BoardCase):
    async def test_station(self) -> None:
        agentPort = freePort()
        satManager, satBroker, mainManager, mainBroker = await self.startManagers(agentPort)
        agent = self.agent(satBroker)
        controller = self.controller(mainBroker)
        await satManager.whenStatus("ALL_MODULES_STARTED")
        await mainManager.whenStatus("ALL_MODULES_STARTED")

        await waitUntil(lambda: {"event": "done"} in self.reportOf("consumer"), 60)
        self.checkMainBoard(self.reportOf("consumer"))
        self.checkSatellite()

        # the restart rule: a second agent and controller find the station running
        for again in (self.agent(satBroker), self.controller(mainBroker)):

            def ended(process: _Process = again) -> bool:
                return process.process.poll() is not None

            await waitUntil(ended, 30)
            self.assertEqual(again.process.returncode, 1, again.text())
            self.assertIn("global-ready already", again.text())
        # the first ones run on, and so do both managers
        for process in (agent, controller):
            self.assertIsNone(process.process.poll(), process.text())
            self.assertNotIn("Traceback", process.text())
        for manager in (satManager, mainManager):
            self.assertFalse(manager.exited, manager.tail())
            self.assertEqual(manager.status.count("ALL_MODULES_STARTED"), 1)
        self.assertIn(controller.stop(), (0, -signal.SIGTERM))
        self.assertIn(agent.stop(), (0, -signal.SIGTERM))
        for manager in (satManager, mainManager):
            self.assertEqual(real.schemaProblems(manager.text()), [], manager.config)

    def checkMainBoard(self, report: list[dict[str, Any]]) -> None:
        self.assertEqual([e for e in report if e["event"] in ("failed", "timeout")], [])
        results = {
            (e["requirement"], e["cmd"]): e["result"] for e in report if e["event"] == "result"
        }
        for key, (_, expected) in samples.COMMANDS.items():
            self.assertEqual(results.get(key, "missing"), expected, key)
        self.assertIs(results["satellite", "is_connected"], True)
        self.assertEqual(results["satellite", "get_local_endpoint_address"], "127.0.0.1")
        self.assertEqual(results["satellite", "get_remote_endpoint_address"], "127.0.0.1")
        # every variable, as the satellite published it
        seen = {(e["requirement"], e["var"]): e["value"] for e in report if e["event"] == "var"}
        implChannel = {
            "evse": "evse_manager",
            "energy_grid": "energy",
            "token_provider": "rfid_token_provider",
            "dc_external_derate": "dc_external_derate",
            "random_delay": "uk_random_delay",
        }
        for (impl, var), value in samples.VARS.items():
            if (impl, var) == ("token_provider", "provided_token"):
                value = {**value, "connectors": [2]}  # the controller names its port
            self.assertEqual(seen.get((implChannel[impl], var), "missing"), value, var)
        for var, value in samples.SYSTEM_VARS.items():
            self.assertEqual(seen.get(("system", var)), value, var)
        # errors raised and cleared with their sub_type, on the satellite implementation
        raised = [(e["type"], e["sub_type"]) for e in report if e["event"] == "raised"]
        cleared = [(e["type"], e["sub_type"]) for e in report if e["event"] == "cleared"]
        self.assertEqual(sorted(raised), sorted(samples.ERRORS))
        self.assertEqual(sorted(cleared), sorted(samples.ERRORS))

    def checkSatellite(self) -> None:
        evse = self.reportOf("evse")
        system = self.reportOf("system")
        calls = {("evse", e["cmd"]): e["args"] for e in evse if e["event"] == "call"}
        calls |= {("system", e["cmd"]): e["args"] for e in system if e["event"] == "call"}
        for (requirement, command), (args, _) in samples.COMMANDS.items():
            if requirement in samples.ABSENT:
                continue
            module = "system" if requirement == "system" else "evse"
            self.assertEqual(calls.get((module, command), "missing"), args, command)
        # the agent's own auth and system answers
        results = {(e["impl"], e["cmd"]): e["result"] for e in evse if e["event"] == "result"}
        self.assertEqual([e for e in evse if e["event"] == "failed"], [])
        for key, (_, expected) in samples.AGENT_COMMANDS.items():
            self.assertEqual(results.get(key, "missing"), expected, key)
        # what the main board pushed
        pushed = {(e["requirement"], e["var"]): e["value"] for e in evse if e["event"] == "var"}
        for (impl, var), value in samples.PUSHED.items():
            self.assertEqual(pushed.get((f"agent_{impl}", var)), value, var)
        meter = self.reportOf("meter")
        self.assertEqual(
            [e["args"]["transaction_id"] for e in meter if e["event"] == "call"], ["raise", "clear"]
        )


class LogTests(TestCase):
    def test_schemaProblems(self) -> None:
        """What the framework logs for a value that fails validation (seen with this build)."""
        log = "\n".join(
            [
                "2026-12-02 14:01:51.592039 consumer [0x5e63] [ERRO] Call to"
                " sat:SatelliteController->dc_external_derate:dc_external_derate"
                "->set_external_derating(derate): Argument"
                " 'derate' with value '{",
                '  "max_export_power_W": "x"',
                '}\' could not be validated with schema: At /max_export_power_W of "x" -'
                " unexpected instance type",
                "2026-12-02 14:01:52.461305 system [0x5e7c] [WARN] Ignoring return value of cmd"
                " 'get_boot_reason' because the validation of the result failed: At  of \"Bogus\""
                " - instance not found in required enum",
                "2026-12-02 14:01:52.504581 consumer [0x5e63] [ERRO] HandlerException:"
                ' "system_get_boot_reason: SchemaValidationError: At  of \\"Bogus\\""',
                "2026-12-02 14:01:24.394564 evse [0x5ac6] [ERRO] Error raised, type:"
                " evse_manager/MREC4OverCurrentFailure, sub_type: rcp-test-evse, message: x",
            ]
        )
        self.assertEqual(len(real.schemaProblems(log)), 3)
        self.assertEqual(len(real.errorLines(log.replace("[ERRO]", "[\x1b[1;31mERRO\x1b[0m]"))), 3)


class AggregatorTests(BoardCase):
    """
    The SystemAggregator, hosted by the real controller process, under the
    real manager with C{validate_schema: true}: a module in the backend's
    place calls the station's system; every answer and status must pass
    the framework's schema checks.
    """

    def mainBoard(self, agentPort: int) -> real.Board:
        self.ftpPort, self.httpPort = freePort(), freePort()
        modules = real.testModules("main")
        modules["RcpTestSystem"] = real.testModules("satellite")["RcpTestSystem"]

        def one(module: str, impl: str) -> list[dict[str, str]]:
            return [{"module_id": module, "implementation_id": impl}]

        return real.startBoard(
            self,
            {
                "sat": {
                    "module": "SatelliteController",
                    "standalone": True,
                    "mapping": {"module": {"evse": 2}},
                    "config_module": {"hostname": "127.0.0.1", "port": agentPort},
                    "connections": {
                        "auth": one("consumer", "auth"),
                        "system": one("consumer", "system"),
                    },
                },
                "consumer": {
                    "module": "RcpTestConsumer",
                    "connections": {r: one("sat", r) for r in CONSUMER_REQUIREMENTS},
                },
                "mainsys": {"module": "RcpTestSystem"},
                "agg": {
                    "module": "SystemAggregator",
                    "standalone": True,
                    "config_module": {
                        "incoming_upload_timeout": 30,
                        "command_timeout": 5,
                        "incoming_uploads_dir": self.mktemp(),
                        "upload_url_template": f"ftp://{{my-ip}}:{self.ftpPort}/",
                    },
                    "connections": {
                        "system": one("mainsys", "main") + one("sat", "system"),
                        "satellite": one("sat", "satellite"),
                    },
                },
                "backend": {
                    "module": "RcpTestBackend",
                    "connections": {"system": one("agg", "system")},
                },
            },
            modules,
            env=self.env,
        )

    def controller(self, broker: Mosquitto) -> _Process:
        return _twistd(
            self,
            "rcp-controller",
            "--config",
            self.rcpConfig(
                "everest: mqtt\ntls: {mode: plain}\n"
                "link: {hold_time: 0.2, retry_interval: 0.2}\n"
                f"mqtt: {{port: {broker.port}, prefix: everest, module_ids: [sat],"
                " aggregator_id: agg}\n"
                f"receivers: {{ftp_port: {self.ftpPort}, http_port: {self.httpPort},"
                f" directory: {self.mktemp()}, min_free_bytes: 0}}\n"
            ),
        )

    async def test_stationSystem(self) -> None:
        agentPort = freePort()
        satManager, satBroker, mainManager, mainBroker = await self.startManagers(agentPort)
        agent = self.agent(satBroker)
        controller = self.controller(mainBroker)
        await mainManager.whenStatus("ALL_MODULES_STARTED")
        await waitUntil(lambda: {"event": "done"} in self.reportOf("backend"), 120)
        report = self.reportOf("backend")
        self.assertEqual([e for e in report if e["event"] == "failed"], [], report)
        results = {e["cmd"]: e["result"] for e in report if e["event"] == "result"}
        self.assertEqual(results["get_boot_reason"], "PowerUp")  # the main board's
        self.assertIs(results["is_reset_allowed"], True)
        self.assertIs(results["set_system_time"], True)
        # the main board's System refuses (the tests' fixed answer): the worst answer
        self.assertEqual(results["update_firmware"], "Rejected")
        self.assertEqual(results["upload_logs"]["upload_logs_status"], "Accepted")
        statuses = [e["value"] for e in report if e["event"] == "var" and e["var"] == "log_status"]
        self.assertEqual(statuses[0], {"log_status": "Uploading", "request_id": 42})
        # the boards never upload (stand-ins): an archive of what came, to a refusing location
        self.assertEqual(statuses[-1], {"log_status": "UploadFailure", "request_id": 42})
        # the main System was asked by the aggregator, with a grant of the receivers
        calls = [e for e in self.reportOf("mainsys") if e.get("event") == "call"]
        uploads = [e for e in calls if e["cmd"] == "upload_logs"]
        self.assertEqual(len(uploads), 1, calls)
        location = uploads[0]["args"]["upload_logs_request"]["location"]
        self.assertTrue(location.startswith("ftp://mainsys:"), location)
        # reset: the satellite's System first, then the main board's
        self.assertIsNone(results["reset"])
        resets = [e for e in calls if e["cmd"] == "reset"]
        self.assertEqual([e["args"] for e in resets], [{"type": "Soft", "scheduled": False}])
        satellite = [
            e for e in self.reportOf("system") if e.get("event") == "call" and e["cmd"] == "reset"
        ]
        self.assertEqual(len(satellite), 1, self.reportOf("system"))
        self.assertLessEqual(satellite[0]["t"], resets[0]["t"])
        for process in (agent, controller):
            self.assertIsNone(process.process.poll(), process.text())
            self.assertNotIn("Traceback", process.text())
        self.assertIn(controller.stop(), (0, -signal.SIGTERM))
        self.assertIn(agent.stop(), (0, -signal.SIGTERM))
        for manager in (satManager, mainManager):
            self.assertEqual(real.schemaProblems(manager.text()), [], manager.config)
        self.assertEqual(real.schemaProblems(mainManager.text()), [])
