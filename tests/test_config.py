"""The YAML settings: schema checks, error messages, overrides, the examples in etc/."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from twisted.trial.unittest import SynchronousTestCase

from rcp.config import ConfigError, describe, fromMapping, load, positive, setPath, setting
from rcp.settings import AgentSettings, ControllerSettings

from .common import ETC, makeStation


@dataclass(frozen=True)
class Inner:
    count: int = setting(3, help="a count")
    ratio: float = setting(1.0, help="a ratio", check=positive)


@dataclass(frozen=True)
class Outer:
    name: str = setting(help="required name")
    mode: Literal["a", "b"] = setting("a", help="a or b")
    flag: bool = setting(False, help="a flag")
    tags: list[str] = setting(help="tags", factory=list)
    maybe: int | None = setting(None, help="optional")
    inner: Inner = setting(help="nested", factory=Inner)


class SchemaTests(SynchronousTestCase):
    def problem(self, data: object) -> str:
        return str(self.assertRaises(ConfigError, fromMapping, Outer, data))

    def test_defaultsAndValues(self) -> None:
        value = fromMapping(
            Outer, {"name": "x", "mode": "b", "inner": {"ratio": 2}, "tags": ["t"], "maybe": 4}
        )
        self.assertEqual(value, Outer("x", "b", False, ["t"], 4, Inner(3, 2.0)))
        self.assertIsInstance(value.inner.ratio, float)

    def test_missing(self) -> None:
        self.assertEqual(self.problem({}), "name: missing (this setting is required)")

    def test_unknownKeySuggestsTheNearest(self) -> None:
        self.assertEqual(
            self.problem({"name": "x", "inner": {"cuont": 1}}),
            "inner.cuont: unknown setting (did you mean count? known here: count, ratio)",
        )

    def test_wrongTypes(self) -> None:
        self.assertEqual(self.problem({"name": 5}), "name: expected a string, got an integer (5)")
        self.assertEqual(
            self.problem({"name": "x", "inner": {"count": "3"}}),
            "inner.count: expected an integer, got a string ('3')",
        )
        self.assertEqual(
            self.problem({"name": "x", "inner": {"count": True}}),
            "inner.count: expected an integer, got a boolean",
        )
        self.assertEqual(
            self.problem({"name": "x", "flag": "yes please"}),
            "flag: expected true or false, got a string ('yes please')",
        )
        self.assertEqual(
            self.problem({"name": "x", "tags": ["a", 2]}),
            "tags[1]: expected a string, got an integer (2)",
        )
        self.assertEqual(
            self.problem({"name": "x", "inner": [1]}),
            "inner: expected a mapping of settings, got a list",
        )

    def test_literal(self) -> None:
        self.assertEqual(
            self.problem({"name": "x", "mode": "c"}),
            "mode: expected one of a, b, got a string ('c')",
        )

    def test_check(self) -> None:
        self.assertEqual(
            self.problem({"name": "x", "inner": {"ratio": 0}}),
            "inner.ratio: must be greater than 0, got 0.0",
        )

    def test_describe(self) -> None:
        rows = dict((path, default) for path, default, _ in describe(Outer))
        self.assertEqual(rows["name"], "(required)")
        self.assertEqual(rows["inner.ratio"], "1.0")
        self.assertEqual(rows["maybe"], "null")


class FileTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path: str = self.mktemp()
        Path(path).write_text(text, encoding="utf-8")
        return path

    def test_errorNamesFileAndKey(self) -> None:
        path = self.write("tls:\n  mode: plain\nrpc:\n  call_timeout: 30s\n")
        self.assertEqual(
            str(self.assertRaises(ConfigError, load, AgentSettings, path)),
            f"{path}: rpc.call_timeout: expected a number, got a string ('30s')",
        )

    def test_badYamlGivesTheLine(self) -> None:
        path = self.write("listen: tcp:4129\ntls: [\n")
        message = str(self.assertRaises(ConfigError, load, AgentSettings, path))
        self.assertTrue(message.startswith(f"{path}: line 3, column 1: not valid YAML"), message)

    def test_unreadable(self) -> None:
        path = self.mktemp()
        self.assertEqual(
            str(self.assertRaises(ConfigError, load, AgentSettings, path)),
            f"{path}: cannot read the file: No such file or directory",
        )

    def test_notUtf8(self) -> None:
        path = self.mktemp()
        Path(path).write_bytes(b"listen: \xff\xfe\n")
        self.assertEqual(
            str(self.assertRaises(ConfigError, load, AgentSettings, path)),
            f"{path}: the file is not UTF-8 text",
        )

    def test_notAMapping(self) -> None:
        path = self.write("- a\n- b\n")
        self.assertEqual(
            str(self.assertRaises(ConfigError, load, AgentSettings, path)),
            f"{path}: expected a mapping of settings, got a list",
        )

    def test_emptyFileMeansDefaults(self) -> None:
        path = self.write("# nothing\ntls: {mode: plain}\n")
        settings = load(AgentSettings, path)
        self.assertIsNone(settings.listen)
        self.assertEqual(settings.listenEndpoint, "tcp:4129")

    def test_badEndpoint(self) -> None:
        path = self.write("listen: 'nosuchtype:4129'\ntls: {mode: plain}\n")
        message = str(self.assertRaises(ConfigError, load, AgentSettings, path))
        self.assertTrue(
            message.startswith(f"{path}: listen: not a server endpoint string"), message
        )

    def test_tlsEndpointRefused(self) -> None:
        path = self.write("listen: 'ssl:4129'\ntls: {mode: plain}\n")
        message = str(self.assertRaises(ConfigError, load, AgentSettings, path))
        self.assertIn("TLS is set up by the tls section", message)

    def test_mutualNeedsFiles(self) -> None:
        self.assertEqual(
            str(self.assertRaises(ConfigError, load, AgentSettings, None)),
            "defaults: tls.ca: missing: mutual TLS needs ca, certificate and key"
            " (or set tls.mode: plain for an unauthenticated link)",
        )

    def test_overrideErrorNamesTheOption(self) -> None:
        path = self.write("tls: {mode: plain}\n")
        self.assertEqual(
            str(
                self.assertRaises(
                    ConfigError, load, AgentSettings, path, {"listen": ("--listen", "tcp:x")}
                )
            ).split(" (")[0],
            "--listen: not a server endpoint string",
        )

    def test_overrideWins(self) -> None:
        path = self.write("listen: tcp:1\ntls: {mode: plain}\n")
        settings = load(AgentSettings, path, {"listen": ("--listen", "tcp:2")})
        self.assertEqual(settings.listen, "tcp:2")


def _numericPaths(cls: type[object], path: str = "") -> list[tuple[str, type]]:
    """Every int and float setting of C{cls}: (key path, type)."""
    found = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[field.name]
        keyPath = f"{path}.{field.name}" if path else field.name
        if dataclasses.is_dataclass(hint):
            found.extend(_numericPaths(hint, keyPath))  # type: ignore[arg-type]
        elif hint in (int, float):
            found.append((keyPath, hint))
    return found


class RangeTests(SynchronousTestCase):
    """Every number and every port is checked where the config is read."""

    def problem(self, cls: type[object], path: str, value: object) -> str:
        data: dict[str, object] = {"tls": {"mode": "plain"}, "peer": "tcp:host=a:port=1"}
        if cls is AgentSettings:
            del data["peer"]
        setPath(data, path, value)
        return str(self.assertRaises(ConfigError, fromMapping, cls, data))

    def test_everyNumberHasARange(self) -> None:
        for cls in (AgentSettings, ControllerSettings):
            paths = _numericPaths(cls)
            self.assertIn(("rpc.max_message_size", int), paths)
            for path, kind in paths:
                for value in (-1, 10**30):
                    message = self.problem(cls, path, kind(value))
                    self.assertTrue(message.startswith(f"{path}: must be"), (path, message))
                if kind is float:
                    for special in (float("nan"), float("inf")):
                        self.assertEqual(
                            self.problem(cls, path, special),
                            f"{path}: expected a finite number, got {special}",
                        )

    def test_listenPortOutOfRange(self) -> None:
        for listen in ("tcp:70000", "tcp:65536:interface=127.0.0.1", "tcp6:-1"):
            self.assertEqual(
                self.problem(AgentSettings, "listen", listen),
                f"listen: port {listen.split(':')[1]} in {listen!r} is not a port number"
                " (0 to 65535)",
            )
        fromMapping(AgentSettings, {"tls": {"mode": "plain"}, "listen": "tcp:0"})

    def test_peerPortOutOfRange(self) -> None:
        for peer in ("tcp:host=sat1:port=70000", "tcp:sat1:0"):
            message = self.problem(ControllerSettings, "peer", peer)
            self.assertEqual(
                message,
                f"peer: port {int(peer.split(':')[-1].split('=')[-1])} in {peer!r}"
                " is not a port number (1 to 65535)",
            )

    def test_mqttPortOutOfRange(self) -> None:
        self.assertEqual(
            self.problem(AgentSettings, "mqtt.port", 70000),
            "mqtt.port: must be a port number (1 to 65535), got 70000",
        )


class ControllerSettingsTests(SynchronousTestCase):
    def test_peerRequired(self) -> None:
        self.assertEqual(
            str(
                self.assertRaises(
                    ConfigError, fromMapping, ControllerSettings, {"tls": {"mode": "plain"}}
                )
            ),
            "peer: missing (required with everest: sim, unless discovery.serial is set)",
        )

    def test_mqttNeedsNoPeer(self) -> None:
        settings = fromMapping(
            ControllerSettings,
            {"everest": "mqtt", "tls": {"mode": "plain"}, "mqtt": {"module_ids": ["s1", "s2"]}},
        )
        self.assertIsNone(settings.peer)
        self.assertEqual(settings.mqtt.module_ids, ["s1", "s2"])
        self.assertEqual(settings.mqtt.broker({}), ("127.0.0.1", 1883))

    def test_mqttModuleIds(self) -> None:
        for data, problem in (
            ({"everest": "mqtt"}, "mqtt.module_ids: with everest: mqtt, give the id"),
            (
                {
                    "everest": "mqtt",
                    "peer": "tcp:host=a:port=1",
                    "mqtt": {"module_ids": ["a", "b"]},
                },
                "peer: one peer cannot serve several module ids",
            ),
            ({"mqtt": {"module_ids": ["a/b"]}}, "mqtt.module_ids: 'a/b' cannot be"),
            ({"mqtt": {"module_ids": ["a", "a"]}}, "mqtt.module_ids: a module id appears twice"),
        ):
            data = {"tls": {"mode": "plain"}, "peer": "tcp:host=a:port=1", **data}
            error = self.assertRaises(ConfigError, fromMapping, ControllerSettings, data)
            self.assertTrue(str(error).startswith(problem), str(error))

    def test_mqttBrokerFromTheEnvironment(self) -> None:
        settings = fromMapping(
            AgentSettings,
            {
                "everest": "mqtt",
                "tls": {"mode": "plain"},
                "mqtt": {"host": "broker", "port": 1884, "module_ids": ["agent"]},
            },
        )
        self.assertEqual(settings.mqtt.broker({}), ("broker", 1884))
        self.assertEqual(
            settings.mqtt.broker({"MQTT_SERVER_ADDRESS": "10.0.0.1", "MQTT_SERVER_PORT": "1999"}),
            ("10.0.0.1", 1999),
        )
        error = self.assertRaises(ConfigError, settings.mqtt.broker, {"MQTT_SERVER_PORT": "x"})
        self.assertIn("MQTT_SERVER_PORT", str(error))

    def test_agentMqttNeedsOneModuleId(self) -> None:
        for ids in ([], ["a", "b"]):
            error = self.assertRaises(
                ConfigError,
                fromMapping,
                AgentSettings,
                {"everest": "mqtt", "tls": {"mode": "plain"}, "mqtt": {"module_ids": ids}},
            )
            self.assertTrue(str(error).startswith("mqtt.module_ids: with everest: mqtt"))

    def test_peerNameFromHost(self) -> None:
        settings = fromMapping(
            ControllerSettings,
            {
                "peer": "tcp:host=satellite-2:port=4129",
                "tls": {"ca": "c", "certificate": "c", "key": "k"},
            },
        )
        self.assertEqual(settings.peerName, "satellite-2")

    def test_peerNameNeededForAddresses(self) -> None:
        problem = str(
            self.assertRaises(
                ConfigError,
                fromMapping,
                ControllerSettings,
                {
                    "peer": "tcp:host=10.0.0.2:port=4129",
                    "tls": {"ca": "c", "certificate": "c", "key": "k"},
                },
            )
        )
        self.assertTrue(problem.startswith("tls.peer_name: missing: the agent is given by"))

    def test_plainNeedsNoName(self) -> None:
        settings = fromMapping(
            ControllerSettings, {"peer": "tcp:host=10.0.0.2:port=4129", "tls": {"mode": "plain"}}
        )
        self.assertEqual(settings.tls.mode, "plain")


class ExampleTests(SynchronousTestCase):
    """The commented examples in etc/ are valid and complete."""

    def test_examplesLoad(self) -> None:
        for name, cls in (
            ("rcp-agent.yaml", AgentSettings),
            ("rcp-controller.yaml", ControllerSettings),
        ):
            data = yaml.safe_load((ETC / name).read_text())
            fromMapping(cls, data)
            # every setting appears in the example, so it documents them all
            documented = {p for p, _, _ in describe(cls)}
            present = set(_paths(data))
            self.assertEqual(documented - present, set(), name)

    def test_examplesWorkWithRealFiles(self) -> None:
        station = makeStation(self)
        examples: list[tuple[str, type[AgentSettings | ControllerSettings], str]] = [
            ("rcp-agent.yaml", AgentSettings, "satellite-1"),
            ("rcp-controller.yaml", ControllerSettings, "main"),
        ]
        for name, cls, board in examples:
            text = (ETC / name).read_text().replace("/etc/rcp/pki", str(station))
            path = self.mktemp()
            Path(path).write_text(text)
            settings = load(cls, path)
            credentials = settings.tls.credentials()
            assert credentials is not None
            self.assertEqual(credentials.name, board)
            self.assertTrue(credentials.keyIsPrivate)


def _paths(data: object, prefix: str = "") -> list[str]:
    if not isinstance(data, dict):
        return [prefix]
    result = []
    for key, value in data.items():
        result.extend(_paths(value, f"{prefix}.{key}" if prefix else key))
    return result


class TlsFileTests(SynchronousTestCase):
    def settings(self, **tls: str) -> AgentSettings:
        return fromMapping(AgentSettings, {"tls": tls})

    def test_keyOfAnotherBoard(self) -> None:
        s = makeStation(self)
        settings = self.settings(
            ca=str(s / "ca.pem"), certificate=str(s / "main.pem"), key=str(s / "satellite-1.key")
        )
        error = self.assertRaises(ConfigError, settings.tls.credentials)
        self.assertEqual(error.path, "tls.key")
        self.assertIn("is not the key of", error.problem)

    def test_certificateOfAnotherCa(self) -> None:
        s, other = makeStation(self), makeStation(self)
        settings = self.settings(
            ca=str(other / "ca.pem"), certificate=str(s / "main.pem"), key=str(s / "main.key")
        )
        error = self.assertRaises(ConfigError, settings.tls.credentials)
        self.assertEqual(error.path, "tls.certificate")
        self.assertIn("is not signed by the CA", error.problem)

    def test_garbageAndMissingFiles(self) -> None:
        s = makeStation(self)
        garbage = self.mktemp()
        Path(garbage).write_text("hello")
        for which, files in (
            ("ca", dict(ca=garbage, certificate=s / "main.pem", key=s / "main.key")),
            ("certificate", dict(ca=s / "ca.pem", certificate=garbage, key=s / "main.key")),
            ("key", dict(ca=s / "ca.pem", certificate=s / "main.pem", key=garbage)),
            ("key", dict(ca=s / "ca.pem", certificate=s / "main.pem", key=s / "nope.key")),
        ):
            settings = self.settings(**{k: str(v) for k, v in files.items()})
            error = self.assertRaises(ConfigError, settings.tls.credentials)
            self.assertEqual(error.path, f"tls.{which}")

    def test_readableKeyIsReported(self) -> None:
        s = makeStation(self)
        os.chmod(s / "main.key", 0o644)
        settings = self.settings(
            ca=str(s / "ca.pem"), certificate=str(s / "main.pem"), key=str(s / "main.key")
        )
        credentials = settings.tls.credentials()
        assert credentials is not None
        self.assertFalse(credentials.keyIsPrivate)
