"""
rcp.everest.mqtt: the EVerest module runtime over MQTT, against a real
mosquitto broker on 127.0.0.1 and a test double of the EVerest manager
(L{tests.everest_manager}).

Every test has a broker of its own (trial has no per-class set-up) on a
free port and a prefix of its own.  Wire bytes are checked with an
independent paho client running its own network thread
(L{RawClient}); the code under test never starts a paho thread.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet import reactor as _globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from rcp.everest.interface import (
    ERROR_KINDS,
    CommandError,
    IEverestModule,
    cleared,
    makeError,
)
from rcp.everest.mqtt import wire
from rcp.everest.mqtt.connection import (
    CONNECTED,
    STOPPED,
    IMqttReactor,
    MqttConnection,
    MqttMessage,
    NotConnected,
)
from rcp.everest.mqtt.module import ANNOUNCED, MqttModule
from rcp.everest.mqtt.wire import MalformedMessage, SchemaError, Topics
from rcp.everest.sim.evse import EvseManagerSim
from rcp.everest.sim.station import StationConsumer

from .common import FULL_SESSION
from .everest_manager import ManagerDouble, moduleConfig
from .mosquitto import Mosquitto, startBroker

reactor = cast(IMqttReactor, _globalReactor)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

#: the example answer the protocol notes (Part 4) saw from a real manager
REAL_ANSWER = (
    b'{"data":{"response":{"data":{"mappings":{"standalone_example":null},'
    b'"module_config":{"access":null,"configuration_parameters":{"!module":[],"example":'
    b'[{"characteristics":{"datatype":"number","mutability":"ReadOnly"},"name":"current",'
    b'"value":32.0}],"store":[]},"connections":{},"mapping":null,"module_id":'
    b'"standalone_example","module_name":"StandaloneExample","standalone":true,'
    b'"telemetry_enabled":false}},"type":"Module"},"status":"Ok","status_info":"",'
    b'"type":"Get"},"msg_type":"GetConfigResponse"}'
)


async def waitUntil(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the reactor run until C{condition()} is true; fail after C{timeout} s."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await deferLater(reactor, 0.01, lambda: None)


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class RawClient:
    """
    An independent MQTT client (paho with its own network thread) that
    records everything it receives, raw.
    """

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes, int, bool]] = []
        self._acks: set[int] = set()
        self._connected = threading.Event()
        client = Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}")
        client.on_message = self._message
        client.on_subscribe = self._subscribed
        client.on_connect = self._connect
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        self.client = client

    def _connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reasonCode: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.set()

    def _message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        with self._lock:
            self._messages.append(
                (message.topic, bytes(message.payload), message.qos, bool(message.retain))
            )

    def _subscribed(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasonCodes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._acks.add(mid)

    async def subscribe(self, topicFilter: str) -> None:
        await waitUntil(self._connected.is_set)
        rc, mid = self.client.subscribe(topicFilter, 2)
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None
        await waitUntil(lambda: mid in self._acks)

    async def publish(self, topic: str, payload: bytes, qos: int = 2) -> None:
        await waitUntil(self._connected.is_set)
        info = self.client.publish(topic, payload, qos=qos)
        await waitUntil(info.is_published)

    def messages(self, topic: str | None = None) -> list[tuple[str, bytes, int, bool]]:
        with self._lock:
            return [m for m in self._messages if topic is None or m[0] == topic]

    def payloads(self, topic: str) -> list[bytes]:
        return [m[1] for m in self.messages(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- wire format, no broker ---------------------------------------------------


class WireTests(SynchronousTestCase):
    def test_prefix(self) -> None:
        self.assertEqual(Topics().prefix, "everest/")
        self.assertEqual(Topics("everest").prefix, "everest/")
        self.assertEqual(Topics("a/b/").prefix, "a/b/")
        self.assertEqual(Topics("").prefix, "")
        self.assertEqual(wire.normalisePrefix("x"), "x/")

    def test_topics(self) -> None:
        t = Topics("everest")
        self.assertEqual(t.configRequest(), "everest/config/request")
        self.assertEqual(t.moduleResponse("m"), "everest/modules/m/response")
        self.assertEqual(t.metadata("m"), "everest/modules/m/metadata")
        self.assertEqual(t.moduleReady("m"), "everest/modules/m/ready")
        self.assertEqual(t.globalReady(), "everest/ready")
        self.assertEqual(t.command("m", "i", "c"), "everest/modules/m/impl/i/cmd/c")
        self.assertEqual(
            t.commandResponse("m", "i", "c", "o"), "everest/modules/m/impl/i/cmd/c/response/o"
        )
        self.assertEqual(t.var("m", "i", "v"), "everest/modules/m/impl/i/var/v")
        self.assertEqual(
            t.error("m", "i", "evse_manager/MREC4OverCurrentFailure"),
            "everest/modules/m/impl/i/error/evse_manager/MREC4OverCurrentFailure",
        )
        self.assertEqual(t.allErrors(), "everest/modules/+/impl/+/error/#")
        self.assertEqual(t.allCommands("m"), "everest/modules/m/impl/+/cmd/+")
        self.assertEqual(t.parseCommand("everest/modules/m/impl/i/cmd/c"), ("m", "i", "c"))
        self.assertIsNone(t.parseCommand("everest/modules/m/impl/i/cmd/c/response/o"))
        self.assertIsNone(t.parseCommand("other/modules/m/impl/i/cmd/c"))

    def test_topicLevelsChecked(self) -> None:
        t = Topics()
        for bad in ("", "a/b", "+", "#", "a+", "x\0"):
            self.assertRaises(ValueError, t.var, "m", "i", bad)
            self.assertRaises(ValueError, t.module, bad)
        self.assertRaises(ValueError, t.error, "m", "i", "no-namespace")
        self.assertRaises(ValueError, t.error, "m", "i", "a/b/c")

    def test_envelopeBytes(self) -> None:
        self.assertEqual(wire.var(42), b'{"msg_type":"Var","data":{"data":42}}')
        self.assertEqual(wire.var(None), b'{"msg_type":"Var","data":{"data":null}}')
        self.assertEqual(
            wire.configRequest("m"),
            b'{"msg_type":"GetConfig","data":{"type":"Get","origin":"m",'
            b'"request":{"type":"Module"}}}',
        )
        self.assertEqual(
            wire.commandResult("id1", True, "callee"),
            b'{"msg_type":"CmdResult","data":{"type":"result","data":'
            b'{"id":"id1","retval":true,"origin":"callee"}}}',
        )
        self.assertEqual(
            json.loads(wire.commandError("id1", "NotReady", "later", "callee")),
            {
                "msg_type": "CmdResult",
                "data": {
                    "type": "result",
                    "data": {
                        "id": "id1",
                        "origin": "callee",
                        "error": {
                            "__everest__error_type": "NotReady",
                            "__everest__error_msg": "later",
                        },
                    },
                },
            },
        )
        self.assertEqual(
            json.loads(wire.command("id1", None, "caller")),
            {"msg_type": "Cmd", "data": {"id": "id1", "args": None, "origin": "caller"}},
        )
        self.assertEqual(
            json.loads(wire.metadata("Name", {"main": "system"})),
            {
                "msg_type": "GetConfigResponse",
                "data": {"module": "Name", "provides": {"main": {"interface": "system"}}},
            },
        )
        self.assertEqual(wire.var("é"), '{"msg_type":"Var","data":{"data":"é"}}'.encode())
        self.assertRaises(ValueError, wire.var, float("nan"))
        self.assertRaises(TypeError, wire.var, object())
        self.assertRaises(ValueError, wire.commandError, "i", "Timeout", "wrong name", "m")

    def test_loads(self) -> None:
        self.assertEqual(wire.loads(b'{"a":1}'), {"a": 1})
        for bad in (b"not json", b"\xff\xfe", b'{"a":NaN}', b"", b"[" * 100000):
            self.assertRaises(MalformedMessage, wire.loads, bad)

    def test_parseRealConfigAnswer(self) -> None:
        config = wire.parseConfigResponse(REAL_ANSWER)
        self.assertEqual(config.moduleId, "standalone_example")
        self.assertEqual(config.moduleName, "StandaloneExample")
        self.assertTrue(config.standalone)
        self.assertEqual(
            config.parameters, {"!module": {}, "example": {"current": 32.0}, "store": {}}
        )
        self.assertEqual(config.connections, {})
        self.assertIsNone(config.mapping)
        self.assertIsNone(config.moduleMapping())
        self.assertEqual(config.mappings, {"standalone_example": None})

    def test_parseConfigConnectionsAndMappings(self) -> None:
        body = moduleConfig(
            "m",
            "M",
            connections={"evse": [("e1", "evse"), ("e2", "evse")]},
            mapping={"module": {"evse": 2}, "implementations": {"b": {"evse": 2, "connector": 1}}},
        )
        answer = {
            "status": "Ok",
            "status_info": "",
            "type": "Get",
            "response": {
                "type": "Module",
                "data": {"module_config": body, "mappings": {"e2": {"module": {"evse": 7}}}},
            },
        }
        config = wire.parseConfigResponse(wire.encode("GetConfigResponse", answer))
        self.assertEqual(config.connections, {"evse": [("e1", "evse"), ("e2", "evse")]})
        self.assertEqual(config.moduleMapping(), {"evse": 2})
        self.assertEqual(config.implementationMapping("b"), {"evse": 2, "connector": 1})
        self.assertEqual(config.implementationMapping("a"), {"evse": 2})
        self.assertEqual(config.mappingOf("e2"), {"evse": 7})
        self.assertIsNone(config.mappingOf("e1"))

    def test_parseConfigRefusedOrMalformed(self) -> None:
        refused = wire.encode(
            "GetConfigResponse", {"status": "AccessDenied", "status_info": "no", "type": "Get"}
        )
        self.assertRaises(wire.ConfigRefused, wire.parseConfigResponse, refused)
        for bad in (
            b"nonsense",
            b'{"data":{}}',
            wire.encode("GetConfig", {}),
            wire.encode("GetConfigResponse", []),
            wire.encode("GetConfigResponse", {"status": "Ok", "response": {"type": "All"}}),
            wire.encode(
                "GetConfigResponse",
                {"status": "Ok", "response": {"type": "Module", "data": {"module_config": {}}}},
            ),
            wire.encode(
                "GetConfigResponse",
                {
                    "status": "Ok",
                    "response": {
                        "type": "Module",
                        "data": {"module_config": {"module_id": "m", "connections": {"r": [1]}}},
                    },
                },
            ),
        ):
            self.assertRaises(MalformedMessage, wire.parseConfigResponse, bad)

    def test_parseCommand(self) -> None:
        def cmd(data: Any, msgType: str = "Cmd") -> Any:
            return {"msg_type": msgType, "data": data}

        request = wire.parseCommand(cmd({"id": "1", "args": None, "origin": "o"}))
        self.assertEqual((request.requestId, request.args, request.origin), ("1", None, "o"))
        self.assertEqual(wire.parseCommand(cmd({"id": "1", "args": {}, "origin": "o"})).args, {})
        self.assertIsNone(wire.parseCommand(cmd({"id": "1", "origin": "o"})).args)
        self.assertRaises(
            SchemaError, wire.parseCommand, cmd({"id": "1", "args": [], "origin": "o"})
        )
        for bad in (
            {"id": "1", "args": {}, "origin": "o"},  # no envelope
            cmd({"id": "1", "args": {}, "origin": "o"}, "Var"),
            cmd([1, 2]),
            cmd({"args": {}, "origin": "o"}),
            cmd({"id": 5, "args": {}, "origin": "o"}),
            cmd({"id": "1", "args": {}, "origin": "a/b"}),
            "text",
        ):
            self.assertRaises(MalformedMessage, wire.parseCommand, bad)

    def test_commandOrigin(self) -> None:
        self.assertEqual(
            wire.commandOrigin({"msg_type": "Cmd", "data": {"origin": "o", "id": "i"}}), ("o", "i")
        )
        self.assertEqual(wire.commandOrigin({"origin": "o"}), ("o", None))
        self.assertEqual(wire.commandOrigin({"data": 3, "origin": "o", "id": "i"}), ("o", "i"))
        self.assertEqual(wire.commandOrigin({"data": {"origin": "+"}}), (None, None))
        self.assertEqual(wire.commandOrigin([1]), (None, None))

    def test_parseCommandResult(self) -> None:
        ok = wire.parseCommandResult(wire.commandResult("i", {"a": 1}, "callee"))
        self.assertEqual(
            (ok.requestId, ok.retval, ok.error, ok.origin), ("i", {"a": 1}, None, "callee")
        )
        failed = wire.parseCommandResult(wire.commandError("i", "Shutdown", "bye", "callee"))
        self.assertEqual(failed.error, ("Shutdown", "bye"))
        strange = wire.parseCommandResult(
            wire.encode(
                "CmdResult",
                {"type": "result", "data": {"id": "i", "error": {"__everest__error_type": "X"}}},
            )
        )
        self.assertEqual(strange.error, ("HandlerException", "unknown error type 'X': "))
        for bad in (
            b"{",
            wire.encode("Var", {}),
            wire.encode("CmdResult", {"type": "result", "data": {"retval": 1}}),
            wire.encode("CmdResult", {"type": "other", "data": {"id": "i"}}),
            wire.encode("CmdResult", {"type": "result", "data": {"id": "i", "error": "x"}}),
        ):
            self.assertRaises(MalformedMessage, wire.parseCommandResult, bad)

    def test_errors(self) -> None:
        error = makeError("evse_manager/Inoperative", "m", "evse")
        wire.checkError(error)
        self.assertEqual(set(error), wire.ERROR_KEYS)
        self.assertEqual(wire.parseError(wire.encode("RaiseError", error)), error)
        self.assertEqual(
            wire.parseError(wire.encode("ClearError", cleared(error)))["state"], "ClearedByModule"
        )
        incomplete = dict(error)
        del incomplete["uuid"]
        self.assertRaises(ValueError, wire.checkError, incomplete)
        self.assertRaises(MalformedMessage, wire.parseError, wire.encode("RaiseError", incomplete))
        self.assertRaises(ValueError, wire.checkError, {**error, "type": "Inoperative"})
        self.assertRaises(MalformedMessage, wire.parseError, wire.encode("Var", error))

    def test_globalReady(self) -> None:
        self.assertTrue(wire.parseGlobalReady(b'{"msg_type":"GlobalReady","data":true}'))
        self.assertFalse(wire.parseGlobalReady(b'{"msg_type":"GlobalReady","data":false}'))
        for bad in (b'{"msg_type":"GlobalReady","data":1}', b'{"data":true}', b"true"):
            self.assertRaises(MalformedMessage, wire.parseGlobalReady, bad)


# -- against a broker ------------------------------------------------------------


class BrokerCase(TestCase):
    """A broker, a prefix and a log observer of its own for every test."""

    timeout = 30

    def setUp(self) -> None:
        self.broker = startBroker(self)
        self.prefix = f"test-{uuid.uuid4().hex[:8]}/"
        self.topics = Topics(self.prefix)
        self.announced: set[tuple[str, int, str, str]] = set()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def connection(self, **options: Any) -> MqttConnection:
        connection = MqttConnection(reactor, "127.0.0.1", self.broker.port, **options)
        connection.start()
        self.addCleanup(connection.disconnect)
        return connection

    def module(
        self,
        moduleId: str,
        provides: Mapping[str, str] | None = None,
        **options: Any,
    ) -> MqttModule:
        options.setdefault("announced", self.announced)
        options.setdefault("configRetry", 0.2)
        module = MqttModule(
            self.connection(), moduleId, self.prefix, reactor, provides=provides, **options
        )
        self.addCleanup(module.stop)
        return module

    async def manager(
        self,
        configs: Mapping[str, dict[str, Any]],
        expectReady: Sequence[str] | None = None,
        mappings: Mapping[str, Any] | None = None,
    ) -> ManagerDouble:
        manager = ManagerDouble(
            reactor, self.broker.port, self.prefix, configs, expectReady, mappings
        )
        self.addCleanup(manager.stop)
        await manager.start()
        return manager

    async def raw(self, *filters: str) -> RawClient:
        client = RawClient(self.broker.port)
        self.addCleanup(client.close)
        for topicFilter in filters:
            await client.subscribe(topicFilter)
        return client

    def logLines(self) -> list[str]:
        return [formatEvent(event) for event in self.logged]

    def assertLogged(self, pattern: str) -> None:
        lines = self.logLines()
        if not any(re.search(pattern, line) for line in lines):
            self.fail(f"no log line matches {pattern!r}:\n" + "\n".join(lines))


class ConnectionTests(BrokerCase):
    async def test_publishSubscribe(self) -> None:
        a = self.connection(clientId="a")
        b = self.connection()
        await a.whenConnected()
        await b.whenConnected()
        self.assertEqual(a.state, CONNECTED)
        got: list[MqttMessage] = []
        await b.subscribe(self.prefix + "x/+/z", got.append)
        await b.whenSubscribed(self.prefix + "x/+/z")
        await a.publish(self.prefix + "x/y/z", b"one", qos=2)
        await a.publish(self.prefix + "x/y/other", b"not for b", qos=1)
        await a.publish(self.prefix + "x/q/z", b"two", qos=0)
        await waitUntil(lambda: len(got) == 2)
        # QoS 0 may overtake QoS 2
        self.assertEqual(
            sorted((m.topic, m.payload, m.qos, m.retain) for m in got),
            [(self.prefix + "x/q/z", b"two", 0, False), (self.prefix + "x/y/z", b"one", 2, False)],
        )

    async def test_noPahoThread(self) -> None:
        before = {t.name for t in threading.enumerate()}
        connection = self.connection()
        await connection.whenConnected()
        await connection.publish(self.prefix + "t", b"x")
        after = {t.name for t in threading.enumerate()}
        self.assertEqual(after - before, set())

    async def test_unsubscribe(self) -> None:
        a = self.connection()
        await a.whenConnected()
        got: list[bytes] = []
        topic = self.prefix + "u"
        await a.subscribe(topic, lambda m: got.append(m.payload))
        await a.publish(topic, b"1")
        await waitUntil(lambda: got == [b"1"])
        a.unsubscribe(topic)
        await a.publish(topic, b"2")
        await a.publish(topic + "/sync", b"3")
        await pause(0.1)
        self.assertEqual(got, [b"1"])

    async def test_brokerStartsLate(self) -> None:
        late = Mosquitto(self.broker.directory.parent / "late")
        self.addCleanup(late.stop)
        connection = MqttConnection(
            reactor, "127.0.0.1", late.port, initialDelay=0.05, maxDelay=0.1
        )
        connection.start()
        self.addCleanup(connection.disconnect)
        connected = connection.whenConnected()
        await pause(0.3)
        self.assertNoResult(connected)
        self.assertLogged("not reachable")
        late.start()
        await connected
        self.assertEqual(connection.connectionCount, 1)

    async def test_silentBroker(self) -> None:
        """A peer that accepts TCP but never answers CONNECT is cut off and tried again."""
        factory = ServerFactory()
        factory.protocol = Protocol  # accepts, reads, never answers
        port = cast(IReactorTCP, reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        connection = MqttConnection(
            reactor,
            "127.0.0.1",
            cast(IPv4Address, port.getHost()).port,
            connectTimeout=0.1,
            initialDelay=0.05,
            maxDelay=0.05,
        )
        connection.start()
        await waitUntil(lambda: connection._attempts >= 3)
        self.assertLogged("did not answer CONNECT in 0.1 s")
        self.assertLogged("failed before CONNACK")
        self.assertNoResult(connection.whenConnected())
        await connection.disconnect()
        self.assertEqual(connection.state, STOPPED)
        attempts = connection._attempts
        await pause(0.2)
        self.assertEqual(connection._attempts, attempts)

    async def test_lostBroker(self) -> None:
        connection = self.connection()
        await connection.whenConnected()
        lost = connection.whenLost()
        self.assertNoResult(lost)
        self.broker.stop()
        reason = await lost
        self.assertIsInstance(reason, str)
        self.assertEqual(connection.state, STOPPED)
        # a late asker learns at once
        self.assertEqual(self.successResultOf(connection.whenLost()), reason)
        self.assertRaises(NotConnected, connection.publish, self.prefix + "x", b"")
        self.assertLogged("lost the MQTT broker")

    async def test_reconnect(self) -> None:
        connection = self.connection(reconnect=True, initialDelay=0.05, maxDelay=0.1)
        await connection.whenConnected()
        got: list[bytes] = []
        topic = self.prefix + "kept"
        await connection.subscribe(topic, lambda m: got.append(m.payload))
        lost = connection.whenLost()
        self.broker.stop()
        await lost
        connected = connection.whenConnected()
        self.broker.start()
        await connected
        self.assertEqual(connection.connectionCount, 2)
        await connection.whenSubscribed(topic)
        other = self.connection()
        await other.whenConnected()
        await other.publish(topic, b"after")
        await waitUntil(lambda: got == [b"after"])

    async def test_disconnectIsNoLoss(self) -> None:
        connection = self.connection()
        await connection.whenConnected()
        lost = connection.whenLost()
        await connection.disconnect()
        self.assertEqual(connection.state, STOPPED)
        self.assertNoResult(lost)
        self.assertRaises(RuntimeError, connection.start)


class ModuleCase(BrokerCase):
    """Helpers for modules with a manager."""

    async def started(self, *modules: MqttModule) -> None:
        for module in modules:
            await module.start()

    async def pair(
        self,
        arguments: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        **options: Any,
    ) -> tuple[ManagerDouble, MqttModule, MqttModule]:
        """A provider C{evse_a} (impl C{main}) and a caller C{consumer} (requirement C{r})."""
        manager = await self.manager(
            {
                "evse_a": moduleConfig("evse_a", "EvseA", {"!module": {"power": 11.0}}),
                "consumer": moduleConfig(
                    "consumer", "Consumer", connections={"r": [("evse_a", "main")]}
                ),
            }
        )
        provider = self.module("evse_a", {"main": "example"}, arguments=arguments, **options)
        caller = self.module("consumer", **options)
        await self.started(provider, caller)
        return manager, provider, caller

    async def allReady(self, *modules: MqttModule) -> None:
        for d in [m.signalReady() for m in modules]:
            await d


class HandshakeTests(ModuleCase):
    async def test_interface(self) -> None:
        module = self.module("m")
        verifyObject(IEverestModule, module)

    async def test_configRequestAndAnswer(self) -> None:
        manager = await self.manager(
            {
                "m": moduleConfig(
                    "m",
                    "MyModule",
                    {"!module": {"current": 32.0, "name": "x", "on": True}, "main": {"n": 3}},
                    connections={"evse": [("e1", "evse"), ("e2", "evse")]},
                    mapping={"module": {"evse": 2}},
                )
            },
            mappings={"e2": {"module": {"evse": 5, "connector": 1}}},
        )
        raw = await self.raw(self.topics.configRequest())
        module = self.module("m")
        await module.start()
        self.assertEqual(
            json.loads(raw.payloads(self.topics.configRequest())[0]),
            {
                "msg_type": "GetConfig",
                "data": {"type": "Get", "origin": "m", "request": {"type": "Module"}},
            },
        )
        self.assertEqual(manager.events[0], ("config", "m"))
        self.assertEqual(module.config(), {"current": 32.0, "name": "x", "on": True})
        self.assertEqual(module.implementationConfig("main"), {"n": 3})
        self.assertEqual(module.connections("evse"), 2)
        self.assertEqual(module.connections("nothing"), 0)
        self.assertEqual(module.connectedModules("evse"), ["e1", "e2"])
        self.assertEqual(module.connectedModules("nothing"), [])
        self.assertEqual(module.mapping(), {"evse": 2})
        self.assertEqual(module.requirementMapping("evse", 1), {"evse": 5, "connector": 1})
        assert module.moduleConfig is not None
        self.assertEqual(module.moduleConfig.moduleName, "MyModule")

    async def test_notStarted(self) -> None:
        module = self.module("m")
        self.assertRaises(RuntimeError, module.config)
        self.assertRaises(RuntimeError, module.subscribeVar, "r", "v", print)
        self.failureResultOf(module.signalReady(), RuntimeError)
        failure = self.failureResultOf(module.call("r", "c", {}), CommandError)
        self.assertEqual(failure.value.kind, "NotReady")

    async def test_configRetryWhenManagerLate(self) -> None:
        raw = await self.raw(self.topics.configRequest())
        module = self.module("late", configRetry=0.1)
        started = module.start()
        await waitUntil(lambda: len(raw.payloads(self.topics.configRequest())) >= 3)
        self.assertNoResult(started)
        self.assertLogged("asking again")
        manager = await self.manager({"late": moduleConfig("late", "Late")})
        await started
        self.assertIn(("config", "late"), manager.events)
        # the retries stop once answered
        count = len(raw.payloads(self.topics.configRequest()))
        await pause(0.3)
        self.assertEqual(len(raw.payloads(self.topics.configRequest())), count)

    async def test_configAnswerMalformed(self) -> None:
        raw = await self.raw(self.topics.configRequest())
        module = self.module("m", configRetry=0.1)
        started = module.start()
        await waitUntil(lambda: raw.payloads(self.topics.configRequest()))
        await raw.publish(self.topics.moduleResponse("m"), b"{broken")
        await raw.publish(
            self.topics.moduleResponse("m"),
            wire.encode("GetConfigResponse", {"status": "Error", "status_info": "no"}),
        )
        await waitUntil(lambda: len(raw.payloads(self.topics.configRequest())) >= 3)
        self.assertNoResult(started)
        self.assertLogged("unusable configuration answer .*not JSON")
        self.assertLogged("unusable configuration answer .*status 'Error'")
        await self.manager({"m": moduleConfig("m", "M")})
        await started

    async def test_metadata(self) -> None:
        manager = await self.manager({"m": moduleConfig("m", "MyModule")})
        module = self.module("m", {"main": "evse_manager", "grid": "energy"})
        await module.start()
        await waitUntil(lambda: len(manager.events) >= 2)
        self.assertEqual(
            manager.events[1],
            (
                "metadata",
                "m",
                {
                    "msg_type": "GetConfigResponse",
                    "data": {
                        "module": "MyModule",
                        "provides": {
                            "main": {"interface": "evse_manager"},
                            "grid": {"interface": "energy"},
                        },
                    },
                },
            ),
        )

    async def test_readyThenGlobalReady(self) -> None:
        manager = await self.manager({"a": moduleConfig("a", "A"), "b": moduleConfig("b", "B")})
        raw = await self.raw(self.topics.moduleReady("a"), self.topics.globalReady())
        a, b = self.module("a"), self.module("b")
        await self.started(a, b)
        readyA = a.signalReady()
        await waitUntil(
            lambda: ("ready", "a", {"msg_type": "ModuleReady", "data": True}) in manager.events
        )
        self.assertNoResult(readyA)
        self.assertFalse(a.globallyReady)
        readyB = b.signalReady()
        await readyA
        await readyB
        self.assertTrue(a.globallyReady and b.globallyReady)
        order = [e for e in manager.events if e[0] in ("ready", "global-ready")]
        self.assertEqual(
            order,
            [
                ("ready", "a", {"msg_type": "ModuleReady", "data": True}),
                ("ready", "b", {"msg_type": "ModuleReady", "data": True}),
                ("global-ready",),
            ],
        )
        await waitUntil(lambda: raw.messages(self.topics.globalReady()))
        [(_, payload, qos, retain)] = raw.messages(self.topics.moduleReady("a"))
        self.assertEqual(json.loads(payload), {"msg_type": "ModuleReady", "data": True})
        self.assertEqual((qos, retain), (2, False))

    async def test_secondSignalReadyRefused(self) -> None:
        manager = await self.manager({"a": moduleConfig("a", "A")})
        a = self.module("a")
        await a.start()
        await a.signalReady()
        self.failureResultOf(a.signalReady(), RuntimeError)
        # a new module object for the same id in this process: refused too
        again = self.module("a")
        await again.start()
        self.failureResultOf(again.signalReady(), RuntimeError)
        await pause(0.2)
        self.assertEqual(len([e for e in manager.events if e[0] == "ready"]), 1)
        self.assertLogged("refused to signal ready twice")

    async def test_readyOncePerProcess(self) -> None:
        """Without an injected record, the process-wide one is used."""
        await self.manager({"a": moduleConfig("a", "A")})
        first = MqttModule(self.connection(), "a", self.prefix, reactor)
        self.addCleanup(first.stop)
        await first.start()
        await first.signalReady()
        self.assertIn(("127.0.0.1", self.broker.port, self.prefix, "a"), ANNOUNCED)
        second = MqttModule(self.connection(), "a", self.prefix, reactor)
        self.addCleanup(second.stop)
        await second.start()
        self.failureResultOf(second.signalReady(), RuntimeError)

    async def test_globalReadyMalformedOrEarly(self) -> None:
        await self.manager({"a": moduleConfig("a", "A"), "b": moduleConfig("b", "B")})
        raw = await self.raw()
        a = self.module("a")
        await a.start()
        await raw.publish(self.topics.globalReady(), wire.encode("GlobalReady", True))
        await waitUntil(
            lambda: any("before this module signalled" in line for line in self.logLines())
        )
        ready = a.signalReady()
        for bad in (b"no", wire.encode("GlobalReady", "yes"), wire.encode("GlobalReady", False)):
            await raw.publish(self.topics.globalReady(), bad)
        await waitUntil(lambda: any("global ready false" in line for line in self.logLines()))
        self.assertNoResult(ready)
        self.assertLogged("dropped a global ready message")
        b = self.module("b")
        await b.start()
        await b.signalReady()
        await ready


class CommandTests(ModuleCase):
    async def test_roundTrip(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "add", lambda args: args["a"] + args["b"])
        await self.allReady(provider, caller)
        command = self.topics.command("evse_a", "main", "add")
        raw = await self.raw(command, command + "/response/+")
        self.assertEqual(await caller.call("r", "add", {"a": 2, "b": 3}), 5)
        await waitUntil(lambda: raw.messages(command + "/response/consumer"))
        [(_, sent, qos, retain)] = raw.messages(command)
        call = json.loads(sent)
        self.assertEqual((qos, retain), (2, False))
        self.assertEqual(call["msg_type"], "Cmd")
        self.assertEqual(set(call["data"]), {"id", "args", "origin"})
        self.assertRegex(call["data"]["id"], UUID)
        self.assertEqual(call["data"]["args"], {"a": 2, "b": 3})
        self.assertEqual(call["data"]["origin"], "consumer")
        [answer] = raw.payloads(command + "/response/consumer")
        self.assertEqual(
            json.loads(answer),
            {
                "msg_type": "CmdResult",
                "data": {
                    "type": "result",
                    "data": {"id": call["data"]["id"], "retval": 5, "origin": "evse_a"},
                },
            },
        )

    async def test_idsUnique(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "echo", lambda args: args["v"])
        await self.allReady(provider, caller)
        command = self.topics.command("evse_a", "main", "echo")
        raw = await self.raw(command)
        results = [caller.call("r", "echo", {"v": n}) for n in range(20)]
        self.assertEqual([await d for d in results], list(range(20)))
        await waitUntil(lambda: len(raw.payloads(command)) == 20)
        ids = {json.loads(p)["data"]["id"] for p in raw.payloads(command)}
        self.assertEqual(len(ids), 20)

    async def test_asyncHandlers(self) -> None:
        _, provider, caller = await self.pair()

        async def slow(args: dict[str, Any]) -> str:
            await pause(0.05)
            return "slow"

        provider.provideCommand("main", "slow", slow)
        provider.provideCommand(
            "main", "later", lambda args: deferLater(reactor, 0.05, lambda: {"x": [1, None]})
        )
        provider.provideCommand("main", "nothing", lambda args: None)
        await self.allReady(provider, caller)
        self.assertEqual(await caller.call("r", "slow", {}), "slow")
        self.assertEqual(await caller.call("r", "later", {}), {"x": [1, None]})
        self.assertIsNone(await caller.call("r", "nothing", {}))

    async def rawCall(
        self, raw: RawClient, command: str, payload: bytes, origin: str = "raw"
    ) -> dict[str, Any]:
        """Publish C{payload} on C{evse_a}'s C{command}; the answer to C{origin}."""
        topic = self.topics.command("evse_a", "main", command)
        responses = topic + "/response/" + origin
        before = len(raw.payloads(responses))
        await raw.publish(topic, payload)
        await waitUntil(lambda: len(raw.payloads(responses)) > before)
        answer: dict[str, Any] = json.loads(raw.payloads(responses)[before])
        return answer

    def assertErrorAnswer(self, answer: dict[str, Any], kind: str, requestId: str = "") -> str:
        self.assertEqual(answer["msg_type"], "CmdResult")
        self.assertEqual(answer["data"]["type"], "result")
        inner = answer["data"]["data"]
        self.assertEqual(inner["id"], requestId)
        self.assertEqual(inner["origin"], "evse_a")
        self.assertNotIn("retval", inner)
        self.assertEqual(inner["error"]["__everest__error_type"], kind)
        message: str = inner["error"]["__everest__error_msg"]
        return message

    async def test_argsNullOrEmpty(self) -> None:
        _, provider, caller = await self.pair()
        seen: list[dict[str, Any]] = []

        def get(args: dict[str, Any]) -> str:
            seen.append(args)
            return "ok"

        provider.provideCommand("main", "get", get)
        await self.allReady(provider, caller)
        raw = await self.raw(self.topics.command("evse_a", "main", "get") + "/response/+")
        sent: tuple[dict[str, Any] | None, ...] = (None, {})
        for n, args in enumerate(sent):
            answer = await self.rawCall(
                raw, "get", wire.encode("Cmd", {"id": f"id{n}", "args": args, "origin": "raw"})
            )
            self.assertEqual(
                answer["data"]["data"], {"id": f"id{n}", "retval": "ok", "origin": "evse_a"}
            )
        # exactly what a C++ caller sends for an argument-less command
        answer = await self.rawCall(
            raw, "get", b'{"data":{"args":null,"id":"cpp","origin":"raw"},"msg_type":"Cmd"}'
        )
        self.assertEqual(answer["data"]["data"]["retval"], "ok")
        self.assertEqual(seen, [{}, {}, {}])

    async def test_handlerException(self) -> None:
        _, provider, caller = await self.pair()

        def broken(args: dict[str, Any]) -> None:
            raise ValueError("broken handler")

        provider.provideCommand("main", "broken", broken)
        await self.allReady(provider, caller)
        failure = await self.assertFailure(caller.call("r", "broken", {}), CommandError)
        self.assertEqual((failure.kind, failure.message), ("HandlerException", "broken handler"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        # the module goes on
        provider.provideCommand("main", "fine", lambda args: 1)
        self.assertEqual(await caller.call("r", "fine", {}), 1)

    async def test_commandErrorKinds(self) -> None:
        _, provider, caller = await self.pair()
        for kind in ERROR_KINDS:

            def fail(args: dict[str, Any], kind: str = kind) -> None:
                raise CommandError(kind, f"failed with {kind}")

            provider.provideCommand("main", "fail_" + kind, fail)

        def unknownKind(args: dict[str, Any]) -> None:
            raise CommandError("Whatever", "odd")

        provider.provideCommand("main", "odd", unknownKind)
        await self.allReady(provider, caller)
        for kind in ERROR_KINDS:
            error = await self.assertFailure(caller.call("r", "fail_" + kind, {}), CommandError)
            self.assertEqual((error.kind, error.message), (kind, f"failed with {kind}"))
        error = await self.assertFailure(caller.call("r", "odd", {}), CommandError)
        self.assertEqual(error.kind, "HandlerException")

    async def test_schemaValidation(self) -> None:
        _, provider, caller = await self.pair(arguments={"main": {"set": ["a", "b"]}})
        provider.provideCommand("main", "set", lambda args: sorted(args))
        provider.provideCommand("main", "none", lambda args: True, arguments=())
        await self.allReady(provider, caller)
        self.assertEqual(await caller.call("r", "set", {"a": 1, "b": 2}), ["a", "b"])
        self.assertTrue(await caller.call("r", "none", {}))
        for args in ({"a": 1}, {"a": 1, "b": 2, "c": 3}, {}):
            error = await self.assertFailure(caller.call("r", "set", args), CommandError)
            self.assertEqual(error.kind, "SchemaValidationError")
        error = await self.assertFailure(caller.call("r", "none", {"x": 1}), CommandError)
        self.assertEqual(error.kind, "SchemaValidationError")
        self.assertIn("unexpected ['x']", error.message)
        raw = await self.raw(self.topics.command("evse_a", "main", "set") + "/response/+")
        notObjects: tuple[object, ...] = ([1, 2], "a", 3)
        for notObject in notObjects:
            answer = await self.rawCall(
                raw, "set", wire.encode("Cmd", {"id": "s", "args": notObject, "origin": "raw"})
            )
            self.assertErrorAnswer(answer, "SchemaValidationError", "s")
        answer = await self.rawCall(
            raw, "set", wire.encode("Cmd", {"id": "n", "args": None, "origin": "raw"})
        )
        self.assertIn(
            "missing ['a', 'b']", self.assertErrorAnswer(answer, "SchemaValidationError", "n")
        )

    async def test_messageParsingErrors(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "get", lambda args: 1)
        await self.allReady(provider, caller)
        raw = await self.raw(self.topics.command("evse_a", "main", "get") + "/response/+")
        # no envelope: a framework module would ignore it silently, we say why
        answer = await self.rawCall(raw, "get", b'{"id":"x1","args":{},"origin":"raw"}')
        self.assertIn("envelope", self.assertErrorAnswer(answer, "MessageParsingError", "x1"))
        # the wrong message type
        answer = await self.rawCall(
            raw, "get", wire.encode("Var", {"id": "x2", "args": {}, "origin": "raw"})
        )
        self.assertErrorAnswer(answer, "MessageParsingError", "x2")
        # no id
        answer = await self.rawCall(raw, "get", wire.encode("Cmd", {"args": {}, "origin": "raw"}))
        self.assertIn("no id", self.assertErrorAnswer(answer, "MessageParsingError", ""))
        # data not an object, the origin outside it
        answer = await self.rawCall(
            raw, "get", b'{"msg_type":"Cmd","data":[1],"origin":"raw","id":"x3"}'
        )
        self.assertIn("not an object", self.assertErrorAnswer(answer, "MessageParsingError", "x3"))
        self.assertLogged("answered MessageParsingError")

    async def test_unanswerableDropped(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "get", lambda args: 1)
        await self.allReady(provider, caller)
        raw = await self.raw(self.topics.command("evse_a", "main", "get") + "/response/#")
        topic = self.topics.command("evse_a", "main", "get")
        for payload in (
            b"not json",
            b"\xff\xfe",
            b"",
            b"[1,2]",
            wire.encode("Cmd", {"id": "x", "args": {}}),
            wire.encode("Cmd", {"id": "x", "args": {}, "origin": "a/b"}),
            wire.encode("Cmd", "text"),
        ):
            await raw.publish(topic, payload)
        # a good call after them: its answer is the only one
        answer = await self.rawCall(
            raw, "get", wire.encode("Cmd", {"id": "good", "args": None, "origin": "raw"})
        )
        self.assertEqual(answer["data"]["data"]["retval"], 1)
        self.assertEqual(len(raw.messages()), 1)
        self.assertLogged("dropped a call of main.get: not JSON")
        self.assertLogged("dropped a call of main.get: no origin to answer to")
        # a wrong QoS or a plain text are no reason to fail a real call
        self.assertEqual(await caller.call("r", "get", {}), 1)

    async def test_retainedCallDropped(self) -> None:
        """A call left retained on the broker is not run at every start."""
        raw = await self.raw(self.topics.command("evse_a", "main", "get") + "/response/+")
        retained = wire.encode("Cmd", {"id": "old", "args": None, "origin": "raw"})
        info = raw.client.publish(
            self.topics.command("evse_a", "main", "get"), retained, qos=2, retain=True
        )
        await waitUntil(info.is_published)
        _, provider, caller = await self.pair()
        ran: list[object] = []
        provider.provideCommand("main", "get", ran.append)
        await self.allReady(provider, caller)
        await waitUntil(lambda: any("retained" in line for line in self.logLines()))
        self.assertLogged("dropped a call of main.get: retained")
        self.assertEqual((ran, raw.messages()), ([], []))

    async def test_unknownCommand(self) -> None:
        _, provider, caller = await self.pair()
        before = await self.assertFailure(caller.call("r", "nosuch", {}), CommandError)
        self.assertEqual(before.kind, "NotReady")
        await self.allReady(provider, caller)
        after = await self.assertFailure(caller.call("r", "nosuch", {}), CommandError)
        self.assertEqual(after.kind, "HandlerException")
        self.assertIn("provides no command main.nosuch", after.message)
        missing = await self.assertFailure(caller.call("other", "x", {}), CommandError)
        self.assertEqual(missing.kind, "HandlerException")
        self.assertRaises(CommandError, caller.subscribeVar, "other", "v", print)

    async def test_shutdown(self) -> None:
        _, provider, caller = await self.pair()
        hanging: Deferred[None] = Deferred()
        provider.provideCommand("main", "get", lambda args: 1)
        provider.provideCommand("main", "hang", lambda args: hanging)
        await self.allReady(provider, caller)
        inFlight = caller.call("r", "hang", {})
        await pause(0.1)
        provider.stop()
        error = await self.assertFailure(caller.call("r", "get", {}), CommandError)
        self.assertEqual(error.kind, "Shutdown")
        hanging.callback(None)  # finishes after stop: answered Shutdown
        error = await self.assertFailure(inFlight, CommandError)
        self.assertEqual(error.kind, "Shutdown")
        # the caller stops with a call pending
        pending = caller.call("r", "get", {})
        caller.stop()
        error = await self.assertFailure(pending, CommandError)
        self.assertEqual(error.kind, "Shutdown")
        error = await self.assertFailure(caller.call("r", "get", {}), CommandError)
        self.assertEqual(error.kind, "Shutdown")

    async def test_callTimeout(self) -> None:
        _, provider, caller = await self.pair(commandTimeout=0.3)
        provider.provideCommand("main", "hang", lambda args: Deferred())
        await self.allReady(provider, caller)
        started = reactor.seconds()
        error = await self.assertFailure(caller.call("r", "hang", {}), CommandError)
        self.assertEqual(error.kind, "CmdTimeout")
        self.assertGreaterEqual(reactor.seconds() - started, 0.29)
        self.assertLogged("timed out")

    async def test_handlerTimeout(self) -> None:
        _, provider, caller = await self.pair(handlerTimeout=0.2)
        provider.provideCommand("main", "hang", lambda args: Deferred())
        await self.allReady(provider, caller)
        error = await self.assertFailure(caller.call("r", "hang", {}), CommandError)
        self.assertEqual(error.kind, "CmdTimeout")
        self.assertIn("hang took longer", error.message)

    async def test_cancelCall(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "hang", lambda args: Deferred())
        await self.allReady(provider, caller)
        call = caller.call("r", "hang", {})
        call.cancel()
        self.failureResultOf(call)
        self.assertEqual(caller._pending, {})

    async def test_resultNotJson(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "odd", lambda args: object())
        await self.allReady(provider, caller)
        error = await self.assertFailure(caller.call("r", "odd", {}), CommandError)
        self.assertEqual(error.kind, "HandlerException")
        self.assertIn("not JSON", error.message)
        error = await self.assertFailure(caller.call("r", "odd", {"x": object()}), CommandError)
        self.assertEqual(error.kind, "SchemaValidationError")

    async def test_malformedResultsIgnored(self) -> None:
        _, provider, caller = await self.pair()
        release: Deferred[str] = Deferred()
        provider.provideCommand("main", "wait", lambda args: release)
        await self.allReady(provider, caller)
        call = caller.call("r", "wait", {})
        raw = await self.raw()
        responses = self.topics.command("evse_a", "main", "wait") + "/response/consumer"
        await caller.connection.whenSubscribed(responses)
        for payload in (
            b"garbage",
            wire.encode("Var", {"data": 1}),
            wire.encode("CmdResult", {"type": "result", "data": {"retval": 1}}),
            wire.commandResult("not-the-id", "wrong", "evse_a"),
        ):
            await raw.publish(responses, payload)
        await waitUntil(lambda: any("no id" in line for line in self.logLines()))
        self.assertNoResult(call)
        release.callback("right")
        self.assertEqual(await call, "right")
        self.assertLogged("dropped a command result .*not JSON")


class VarAndErrorTests(ModuleCase):
    async def test_vars(self) -> None:
        _, provider, caller = await self.pair()
        got: list[Any] = []
        caller.subscribeVar("r", "limits", got.append)
        await self.allReady(provider, caller)
        topic = self.topics.var("evse_a", "main", "limits")
        raw = await self.raw(topic)
        value = {"uuid": "u", "max_current": 16.0, "nr_of_phases_available": 3}
        provider.publishVar("main", "limits", value)
        provider.publishVar("main", "limits", None)
        provider.publishVar("main", "other", 1)
        await waitUntil(lambda: len(got) == 2 and len(raw.messages(topic)) == 2)
        self.assertEqual(got, [value, None])
        (_, payload, qos, retain), (_, nothing, _, _) = raw.messages(topic)
        self.assertEqual(
            payload,
            b'{"msg_type":"Var","data":{"data":{"uuid":"u","max_current":16.0,'
            b'"nr_of_phases_available":3}}}',
        )
        self.assertEqual(nothing, b'{"msg_type":"Var","data":{"data":null}}')
        self.assertEqual((qos, retain), (2, False))

    async def test_varSubscriptionBeforeReady(self) -> None:
        """signalReady waits for the var subscriptions: nothing after global ready is missed."""
        _, provider, caller = await self.pair()
        got: list[Any] = []
        provider.signalReady().addCallback(lambda _: provider.publishVar("main", "v", "first"))
        caller.subscribeVar("r", "v", got.append)
        await caller.signalReady()
        await waitUntil(lambda: got == ["first"])

    async def test_malformedVarsDropped(self) -> None:
        _, provider, caller = await self.pair()
        got: list[Any] = []
        caller.subscribeVar("r", "v", got.append)
        await self.allReady(provider, caller)
        raw = await self.raw()
        topic = self.topics.var("evse_a", "main", "v")
        for payload in (
            b"nope",
            b'{"data":{"data":1}}',  # no envelope
            wire.encode("Var", 5),  # not nested twice
            wire.encode("Var", {"value": 1}),
            wire.encode("Cmd", {"data": 1}),
        ):
            await raw.publish(topic, payload)
        provider.publishVar("main", "v", "good")
        await waitUntil(lambda: got == ["good"])
        self.assertLogged("dropped a value of .*not JSON")
        self.assertLogged("dropped a value of .*no msg_type envelope")
        self.assertLogged("dropped a value of .*Var without data.data")

    async def test_errors(self) -> None:
        await self.manager(
            {
                "evse_a": moduleConfig("evse_a", "EvseA"),
                "watcher": moduleConfig("watcher", "Watcher"),
            }
        )
        provider, watcher = self.module("evse_a"), self.module("watcher")
        await self.started(provider, watcher)
        seen: list[dict[str, Any]] = []
        watcher.subscribeAllErrors(seen.append)
        await self.allReady(provider, watcher)
        topic = self.topics.error("evse_a", "main", "evse_manager/MREC4OverCurrentFailure")
        raw = await self.raw(topic)
        error = makeError(
            "evse_manager/MREC4OverCurrentFailure",
            "evse_a",
            "main",
            message="too much",
            severity="High",
            mapping={"evse": 1, "connector": 1},
        )
        provider.raiseError("main", error)
        provider.clearError("main", cleared(error))
        await waitUntil(lambda: len(seen) == 2 and len(raw.messages(topic)) == 2)
        self.assertEqual([e["state"] for e in seen], ["Active", "ClearedByModule"])
        self.assertEqual(seen[0], error)
        self.assertEqual(seen[1], {**error, "state": "ClearedByModule"})
        (_, raised, qos, retain), (_, clear, _, _) = raw.messages(topic)
        self.assertEqual(json.loads(raised), {"msg_type": "RaiseError", "data": error})
        self.assertEqual(json.loads(clear)["msg_type"], "ClearError")
        self.assertEqual(set(json.loads(clear)["data"]), wire.ERROR_KEYS)
        self.assertEqual((qos, retain), (2, False))
        # an incomplete error object is not published
        self.assertRaises(ValueError, provider.raiseError, "main", {"type": "a/b"})

    async def test_malformedErrorsDropped(self) -> None:
        await self.manager({"watcher": moduleConfig("watcher", "Watcher")})
        watcher = self.module("watcher")
        await watcher.start()
        seen: list[dict[str, Any]] = []
        watcher.subscribeAllErrors(seen.append)
        await watcher.signalReady()
        raw = await self.raw()
        topic = self.topics.error("x", "y", "generic/VendorError")
        incomplete = makeError("generic/VendorError", "x", "y")
        del incomplete["severity"]
        for payload in (b"{", wire.encode("RaiseError", incomplete), wire.encode("RaiseError", 1)):
            await raw.publish(topic, payload)
        good = makeError("generic/VendorError", "x", "y")
        await raw.publish(topic, wire.encode("RaiseError", good))
        await waitUntil(lambda: seen == [good])
        self.assertLogged("dropped an error message .*without severity")


class LostBrokerTests(ModuleCase):
    async def test_lostBroker(self) -> None:
        _, provider, caller = await self.pair()
        provider.provideCommand("main", "hang", lambda args: Deferred())
        await self.allReady(provider, caller)
        pending = caller.call("r", "hang", {})
        await pause(0.1)
        lost = caller.whenLost()
        self.assertNoResult(lost)
        self.broker.stop()
        reason = await lost
        self.assertIsInstance(reason, str)
        await provider.whenLost()
        self.assertTrue(caller.stopped and provider.stopped)
        error = await self.assertFailure(pending, CommandError)
        self.assertEqual(error.kind, "Shutdown")
        self.assertEqual(self.successResultOf(caller.whenLost()), reason)
        # nothing published, nothing raised any more
        provider.publishVar("main", "v", 1)
        self.assertLogged("lost the MQTT broker")

    async def test_lostWhileStarting(self) -> None:
        module = self.module("m", configRetry=0.05)
        started = module.start()
        await pause(0.2)
        self.broker.stop()
        await self.assertFailure(started, ConnectionLost)
        self.assertTrue(module.stopped)

    async def test_stopWhileStarting(self) -> None:
        module = self.module("m", configRetry=0.05)
        started = module.start()
        await pause(0.1)
        module.stop()
        self.failureResultOf(started)
        count = len(self.logLines())
        await pause(0.2)  # no more requests
        self.assertFalse(any("asking again" in line for line in self.logLines()[count:]))


class SimulationTests(ModuleCase):
    """rcp's simulated modules, unchanged, over MQTT instead of a SimBus."""

    async def test_evseManagerAndStation(self) -> None:
        manager = await self.manager(
            {
                "evse1": moduleConfig("evse1", "EvseManager", mapping={"module": {"evse": 3}}),
                "station": moduleConfig(
                    "station", "Station", connections={"evse_manager": [("evse1", "evse")]}
                ),
            }
        )
        evseModule = self.module(
            "evse1",
            {
                "evse": "evse_manager",
                "energy_grid": "energy",
                "token_provider": "auth_token_provider",
            },
        )
        stationModule = self.module("station")
        await self.started(evseModule, stationModule)
        evse = EvseManagerSim(evseModule, reactor, meterInterval=3600.0)
        self.addCleanup(evse.stop)
        station = StationConsumer(stationModule, reactor)
        evse.start()
        station.start()
        await manager.whenGloballyReady()
        # what the EVSE publishes at global ready reaches the station
        await waitUntil(lambda: station.latest(0, "ready") is True)
        self.assertEqual(station.latest(0, "evse_id"), "DE*RCP*E3")
        self.assertEqual(
            await station.call(0, "get_evse"), {"id": 3, "connectors": [{"id": 1, "type": "cCCS2"}]}
        )
        # a charging session
        self.assertTrue(evse.plugIn())
        await station.call(
            0,
            "authorize_response",
            {
                "provided_token": {
                    "id_token": {"value": "CARD1", "type": "ISO14443"},
                    "authorization_type": "RFID",
                },
                "validation_result": {"authorization_status": "Accepted"},
            },
        )
        self.assertTrue(await station.call(0, "pause_charging"))
        self.assertTrue(await station.call(0, "resume_charging"))
        self.assertTrue(
            await station.call(0, "stop_transaction", {"request": {"reason": "Remote"}})
        )
        self.assertTrue(evse.unplug())
        await waitUntil(lambda: station.events(0)[-1:] == ["SessionFinished"])
        self.assertEqual(
            station.events(0),
            FULL_SESSION,
        )
        # an error raised and cleared by the EVSE, seen by the station
        evse.injectError("MREC4OverCurrentFailure")
        self.assertTrue(evse.clearInjected("MREC4OverCurrentFailure"))
        await waitUntil(lambda: len(station.errors()) == 2)
        self.assertEqual(
            [(e["type"], e["state"]) for e in station.errors()],
            [
                ("evse_manager/MREC4OverCurrentFailure", "Active"),
                ("evse_manager/MREC4OverCurrentFailure", "ClearedByModule"),
            ],
        )
        self.assertEqual(station.errors()[0]["origin"]["mapping"], {"evse": 3})
        # the same simulation refuses what a SimBus refuses
        error = await self.assertFailure(station.call(0, "no_such_command"), CommandError)
        self.assertEqual(error.kind, "HandlerException")
