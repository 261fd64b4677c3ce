"""
Any value a peer sends is untrusted, whatever its type (issue 7, item 1).

 - B{The controller's poll}: an answer to ``retrieve_vars_and_errors`` that
   is not a usable batch is a protocol violation of the agent: one log line
   naming the peer and the problem, and the link ends as a lost link does
   (exit code 1).
 - B{Every other value}: the results of the controller's calls, the
   arguments of the agent's commands and ``push_var``: a clear error, and
   the link goes on; no exception escapes a handler, no loop stops.

The regression tests name each shape the issue reports; the property tests
answer every controller call and call every agent method with random
msgpack values and random JSON texts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from rcp.agent.link import AgentLink
from rcp.controller.link import ControllerLink
from rcp.everest.interface import CommandError
from rcp.everest.mqtt import wire
from rcp.everest.sim.bus import SimBus, SimModule
from rcp.rpc import HandlerError, MethodRegistry, RemoteError, RpcProtocol
from rcp.sync import SyncTimings
from rcp.tunnel.table import (
    CHANNELS,
    EXIT,
    I_AM_HERE,
    I_AM_READY,
    PUSH_VAR,
    RETRIEVE,
    Codec,
    Command,
)
from rcp.untrusted import PeerValueError, brief, cut, errorText, loadsJson

from . import test_mqtt, test_tap
from .common import freePort

TIMINGS = SyncTimings(here_timeout=2.0, retry_interval=0.5, poll_timeout=5.0, poll_watchdog=10.0)

#: a JSON text nested far deeper than Python's recursion limit
DEEP_JSON = "[" * 100_000 + "]" * 100_000
#: a JSON object nested deeper than the bound, but not too deep for json.loads
DEEPISH_JSON = '{"vars":' + "[" * 500 + "]" * 500 + ',"errors":[]}'


def requireDeepPacking(value: Any) -> None:
    """
    Skip when this msgpack cannot pack C{value} (msgpack before 1.1 packs at
    most 511 levels, as on a scarthgap board): the test's peer cannot send it.
    """
    try:
        msgpack.packb(value)
    except ValueError:
        raise SkipTest(f"msgpack {msgpack.version} cannot pack a value this deep") from None


AGENT = IPv4Address("TCP", "192.0.2.7", 4129)
MAIN = IPv4Address("TCP", "192.0.2.1", 40000)

EMPTY_BATCH = '{"errors":[],"vars":[]}'

ERROR = {
    "type": "evse_manager/MREC2GroundFailure",
    "sub_type": "",
    "message": "m",
    "description": "d",
    "origin": {"module_id": "connector_1", "implementation_id": "evse"},
    "severity": "High",
    "timestamp": "2026-03-01T12:00:01.000Z",
    "uuid": "0b6f",
    "state": "Active",
    "vendor_id": "everest",
}


def _batch(vars: Any = (), errors: Any = ()) -> str:
    return json.dumps({"errors": list(errors), "vars": list(vars)})


# Unusable poll answers, each named: (what, the answer, or an RPC error).
UNUSABLE_POLLS: list[tuple[str, Any]] = [
    ("an integer", 5),
    ("nil", None),
    ("an array", [1, 2]),
    ("a map", {"vars": [], "errors": []}),
    ("binary that is not UTF-8", b"\xff\xfe{}"),
    ("text that is not JSON", "not json"),
    ("JSON nested too deep to parse", DEEP_JSON),
    ("JSON nested deeper than the bound", DEEPISH_JSON),
    ("a JSON array", "[]"),
    ("JSON null", "null"),
    ("a JSON string", '"x"'),
    ("vars not a list", '{"vars": 5, "errors": []}'),
    ("errors not a list", '{"vars": [], "errors": {}}'),
    ("a var that is not an object", _batch(vars=[5])),
    ("a var without a value", _batch(vars=[{"interface": "evse_manager", "var": "ready"}])),
    ("a var with a list as name", _batch(vars=[{"interface": [], "var": "x", "value": 1}])),
    ("an error event that is a string", _batch(errors=["x"])),
    ("an error event with a string error", _batch(errors=[{"action": "raise", "error": "x"}])),
    ("an error with an unknown action", _batch(errors=[{"action": "boom", "error": ERROR}])),
    ("an incomplete error object", _batch(errors=[{"action": "raise", "error": {"type": "a/b"}}])),
    ("NaN in a value", '{"vars":[{"interface":"energy","var":"x","value":NaN}],"errors":[]}'),
    (
        "an integer of 5000 digits",
        '{"vars":[{"interface":"e","var":"x","value":' + "1" * 5000 + "}]}",
    ),
]


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects a client factory to a new server protocol, in memory."""

    def __init__(self, clock: Clock, server: Callable[[], RpcProtocol]) -> None:
        self.clock = clock
        self.server = server
        self.pumps: list[iosim.IOPump] = []
        self.servers: list[RpcProtocol] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        client = factory.buildProtocol(MAIN)
        server = self.server()
        self.servers.append(server)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, hostAddress=AGENT, peerAddress=MAIN),
            client,
            iosim.FakeTransport(client, isServer=False, hostAddress=MAIN, peerAddress=AGENT),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


class FakeAgent:
    """
    An agent that answers the start-up calls as it should, and everything
    else as the test says: C{answers[method]} is a value, or a
    L{HandlerError} to answer with an error.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.polls: list[Any] = []  # answers for the next polls, in order
        self.answers: dict[str, Any] = {}
        self.lastPollAnswer: Any = EMPTY_BATCH

    def protocol(self) -> RpcProtocol:
        methods = MethodRegistry()
        methods.register(I_AM_HERE, lambda: self._record(I_AM_HERE, False))
        methods.register(I_AM_READY, lambda: self._record(I_AM_READY, None))
        methods.register(EXIT, lambda: self._record(EXIT, None))
        methods.register(RETRIEVE, self._retrieve)
        methods.register(PUSH_VAR, lambda event: self._answer(PUSH_VAR, event))
        for channel in CHANNELS:
            for command in channel.commands:
                methods.register(channel.rpcName(command), self._answerer(channel.rpcName(command)))
        return RpcProtocol(self.clock, methods)

    def _answerer(self, method: str) -> Callable[..., Any]:
        return lambda *args: self._answer(method, *args)

    def _record(self, method: str, result: Any, *args: Any) -> Any:
        self.calls.append((method, args))
        return result

    def _answer(self, method: str, *args: Any) -> Any:
        self.calls.append((method, args))
        answer = self.answers.get(method)
        if isinstance(answer, HandlerError):
            raise answer
        return answer

    def _retrieve(self) -> Any:
        self.calls.append((RETRIEVE, ()))
        answer = self.polls.pop(0) if self.polls else EMPTY_BATCH
        if isinstance(answer, HandlerError):
            raise answer
        if not self.polls:
            # hold further empty polls a while, as an rcp agent does
            d: Deferred[Any] = Deferred()
            self.clock.callLater(0.5, d.callback, answer)
            return d
        return answer

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)


class ControllerRig:
    """A ControllerLink on a simulated main board, against a L{FakeAgent}."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.case = case
        self.clock = Clock()
        self.log = EventLoggingObserver()
        globalLogPublisher.addObserver(self.log)
        case.addCleanup(globalLogPublisher.removeObserver, self.log)
        self.bus = SimBus(self.clock, "main")
        self.bus.module("auth")
        self.bus.module("sysagg")
        self.module = self.bus.module(
            "ctl",
            {"auth": [("auth", "main")], "system": [("sysagg", "main")]},
            mapping={"evse": 2},
        )
        self.consumer = self.bus.module("consumer", {c.name: [("ctl", c.name)] for c in CHANNELS})
        self.consumer.signalReady()
        self.errors: list[dict[str, Any]] = []
        self.consumer.subscribeAllErrors(self.errors.append)
        self.agent = FakeAgent(self.clock)
        self.endpoint = MemoryEndpoint(self.clock, self.agent.protocol)
        self.ended: list[tuple[int, str]] = []
        self.link = ControllerLink(
            self.module,
            self.clock,
            self.endpoint,
            end=lambda code, reason: self.ended.append((code, reason)),
            timings=TIMINGS,
            holdTime=1.0,
        )

    def run(self, seconds: float = 0.0, step: float = 0.05) -> None:
        """Let C{seconds} pass on the clock, moving bytes at every step."""
        elapsed = 0.0
        while True:
            for _ in range(50):
                self.clock.advance(0)
                self.endpoint.flush()
            if elapsed >= seconds:
                break
            self.clock.advance(step)
            elapsed += step

    def sync(self) -> None:
        self.link.start()
        self.run()
        self.case.assertTrue(self.link.synced, "the link synchronised")

    def lines(self, level: LogLevel = LogLevel.warn) -> list[str]:
        """Log lines at C{level} or above."""
        return [formatEvent(e) for e in self.log if e["log_level"] >= level]

    def stop(self) -> None:
        self.link.halt()
        self.run(2.0)


class BadPollAnswerTests(SynchronousTestCase):
    """Each unusable answer to a poll ends the link, with one clear line."""

    def assertViolation(self, what: str, answer: Any) -> None:
        rig = ControllerRig(self)
        rig.sync()
        polls = rig.agent.count(RETRIEVE)
        rig.agent.polls.append(answer)
        rig.run(2.0)  # the held poll answers, the bad one follows
        self.assertEqual(len(rig.ended), 1, f"{what}: the link ends")
        code, reason = rig.ended[0]
        self.assertEqual(code, 1, what)
        self.assertIn("protocol violation", reason, what)
        self.assertFalse(rig.link.synced, what)
        self.assertLessEqual(rig.agent.count(RETRIEVE), polls + 2, f"{what}: no more polls")
        violations = [line for line in rig.lines() if "protocol violation" in line]
        self.assertTrue(violations, f"{what}: logged")
        self.assertIn("retrieve_vars_and_errors", violations[0], what)
        self.assertIn("192.0.2.7:4129", violations[0], what)
        for line in rig.lines():
            self.assertLess(len(line), 1000, f"{what}: a log line cut to a sane length")
        self.assertEqual(self.flushLoggedErrors(), [], what)
        # nothing of a bad batch is delivered, not even its good part
        self.assertEqual(rig.errors, [], what)
        rig.run(30.0)
        self.assertEqual(len(rig.ended), 1, what)

    def test_unusableAnswers(self) -> None:
        for what, answer in UNUSABLE_POLLS:
            self.assertViolation(what, answer)

    def test_errorAnswer(self) -> None:
        """An RPC error in answer to a poll: the agent cannot poll, the link ends."""
        self.assertViolation("an error answer", HandlerError("no events for you"))

    def test_errorAnswerNotAString(self) -> None:
        self.assertViolation("an error answer nested deep", HandlerError([[[[[[["x" * 10**6]]]]]]]))

    def test_goodPartOfABadBatchIsNotDelivered(self) -> None:
        rig = ControllerRig(self)
        rig.sync()
        rig.agent.polls.append(
            _batch(errors=[{"action": "raise", "error": ERROR}, {"action": "raise", "error": 5}])
        )
        rig.run(2.0)
        self.assertEqual(rig.ended[0][0], 1)
        self.assertEqual(rig.errors, [])

    def test_usableAnswersGoOn(self) -> None:
        """For contrast: unknown pairs, missing lists and extra keys are fine."""
        rig = ControllerRig(self)
        rig.sync()
        rig.agent.polls += [
            _batch(vars=[{"interface": "nope", "var": "x", "value": [1, {"a": None}]}]),
            "{}",
            '{"vars": [], "errors": [], "future": 1}',
            # msgpack-c reads bin into a std::string as well
            b'{"vars": [], "errors": []}',
            _batch(errors=[{"action": "raise", "error": ERROR}]),
            _batch(vars=[{"interface": "evse_manager", "var": "ready", "value": True}]),
        ]
        seen: list[Any] = []
        rig.consumer.subscribeVar("evse_manager", "ready", seen.append)
        rig.run(3.0)
        self.assertEqual(rig.ended, [])
        self.assertTrue(rig.link.synced)
        self.assertEqual(seen, [True])
        self.assertEqual(len(rig.errors), 1)
        rig.run(3.0)
        self.assertGreater(rig.agent.count(RETRIEVE), 6, "polling goes on")
        rig.stop()


# -- the controller's other calls ------------------------------------------------

#: an EVerest value of the right type for each encoding
SAMPLES: dict[Codec, Any] = {
    Codec.JSON: {"a": [1, 2.5, "x"]},
    Codec.INT: 1,
    Codec.BOOL: True,
    Codec.STR: "Soft",
    Codec.NIL: None,
}

COMMANDS: list[tuple[str, Command]] = [(c.name, cmd) for c in CHANNELS for cmd in c.commands]


def callEveryCommand(rig: ControllerRig) -> list[tuple[str, Deferred[Any]]]:
    """Call every tunnelled command on the main board, as its consumer."""
    calls = []
    for channel, command in COMMANDS:
        args = {arg.name: SAMPLES[arg.codec] for arg in command.args}
        calls.append((f"{channel}.{command.name}", rig.consumer.call(channel, command.name, args)))
    return calls


def outcomes(case: SynchronousTestCase, calls: list[tuple[str, Deferred[Any]]]) -> list[Any]:
    """Each call's result, or its L{CommandError}; anything else fails the test."""
    results = []
    for label, d in calls:
        seen: list[Any] = []
        d.addBoth(seen.append)
        case.assertTrue(seen, f"{label} answered")
        if isinstance(seen[0], Failure):
            case.assertIsInstance(seen[0].value, CommandError, f"{label}: {seen[0]}")
            case.assertLess(len(str(seen[0].value)), 1500, f"{label}: the error text is cut")
        results.append(seen[0])
    return results


class BadCommandResultTests(SynchronousTestCase):
    """A result of the wrong kind fails that command with a clear error; the link goes on."""

    def assertCommandErrors(self, answer: Any) -> None:
        rig = ControllerRig(self)
        rig.sync()
        for _, command in COMMANDS:
            rig.agent.answers[_rpcName(command)] = answer
        calls = callEveryCommand(rig)
        rig.run(1.0)
        results = outcomes(self, calls)
        self.assertEqual(rig.ended, [], brief(answer))
        self.assertTrue(rig.link.synced)
        self.assertEqual(self.flushLoggedErrors(), [])
        for line in rig.lines():
            self.assertLess(len(line), 1000)
        rig.stop()
        return results  # type: ignore[return-value]

    def test_deepJson(self) -> None:
        """RecursionError while decoding a result: a CommandError, not a traceback."""
        self.assertCommandErrors(DEEP_JSON)

    def test_deepArray(self) -> None:
        deep: Any = "x"
        for _ in range(1000):
            deep = [deep]
        self.assertCommandErrors(deep)

    def test_deepErrorAnswer(self) -> None:
        """An error answer whose value cannot even be printed in full."""
        deep: Any = "x" * 100_000
        for _ in range(1000):
            deep = [deep]
        self.assertCommandErrors(HandlerError(deep))

    def test_hugeErrorText(self) -> None:
        self.assertCommandErrors(HandlerError("x" * 500_000))

    def test_hereAnsweredDeep(self) -> None:
        """An i_am_here answer that cannot be printed: a failed start-up call, tried again."""
        rig = ControllerRig(self)
        deep: Any = True
        for _ in range(1020):
            deep = [deep]
        requireDeepPacking(deep)
        answers = [deep, False]
        original = rig.agent._record

        def record(method: str, result: Any, *args: Any) -> Any:
            if method == I_AM_HERE:
                return answers.pop(0)
            return original(method, result, *args)

        rig.agent._record = record  # type: ignore[method-assign]
        rig.link.start()
        rig.run(1.0)  # retry_interval, not here_timeout
        self.assertTrue(rig.link.synced)
        self.assertTrue(any("not a boolean" in line for line in rig.lines(LogLevel.info)))
        self.assertEqual(self.flushLoggedErrors(), [])
        rig.stop()


def _rpcName(command: Command) -> str:
    for channel in CHANNELS:
        if command in channel.commands:
            return channel.rpcName(command)
    raise KeyError(command)


# -- the agent's methods -------------------------------------------------------------


class AgentRig:
    """An AgentLink on a simulated satellite, called by a raw RPC client."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.case = case
        self.clock = Clock()
        self.log = EventLoggingObserver()
        globalLogPublisher.addObserver(self.log)
        case.addCleanup(globalLogPublisher.removeObserver, self.log)
        self.bus = SimBus(self.clock, "satellite")
        self.devices: dict[str, SimModule] = {}
        for channel in CHANNELS:
            device = self.bus.module(f"dev_{channel.name}")
            for command in channel.commands:
                device.provideCommand("main", command.name, self._answer(command))
            self.devices[channel.name] = device
        self.module = self.bus.module(
            "agent", {c.name: [(f"dev_{c.name}", "main")] for c in CHANNELS}
        )
        self.resets: list[str] = []
        self.link = AgentLink(self.module, self.clock, self.resets.append, timings=TIMINGS)
        server = self.link.buildProtocol()
        assert server is not None
        self.server = server
        self.client = RpcProtocol(self.clock, MethodRegistry())
        self.pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, hostAddress=AGENT, peerAddress=MAIN),
            self.client,
            iosim.FakeTransport(self.client, isServer=False, hostAddress=MAIN, peerAddress=AGENT),
            greet=False,
            clock=self.clock,
        )

    @staticmethod
    def _answer(command: Command) -> Callable[[dict[str, Any]], Any]:
        return lambda args: "Accepted" if command.result is Codec.STR else SAMPLES[command.result]

    def run(self, seconds: float = 0.0) -> None:
        elapsed = 0.0
        while True:
            for _ in range(30):
                self.clock.advance(0)
                self.pump.flush()
            if elapsed >= seconds:
                break
            self.clock.advance(0.1)
            elapsed += 0.1

    def call(self, method: str, *params: Any) -> Any:
        """Call C{method}; its result, or its L{RemoteError}."""
        d = self.client.call(method, *params, timeout=None)
        self.run()
        if not d.called:
            self.run(1.5)  # a held poll
        seen: list[Any] = []
        d.addBoth(seen.append)
        self.case.assertTrue(seen, f"{method} answered")
        if isinstance(seen[0], Failure):
            self.case.assertIsInstance(seen[0].value, RemoteError, f"{method}: {seen[0]}")
            return seen[0].value
        return seen[0]

    def sync(self) -> None:
        self.case.assertIs(self.call(I_AM_HERE), False)
        self.case.assertIsNone(self.call(I_AM_READY))

    def assertWorking(self) -> None:
        """The link goes on: polls are answered, nothing was reset, nothing logged an error."""
        self.case.assertEqual(self.resets, [])
        self.case.assertTrue(self.server.connected)
        self.case.assertIsInstance(self.call(RETRIEVE), str)
        self.case.assertEqual(self.case.flushLoggedErrors(), [])
        for event in self.log:
            self.case.assertLess(event["log_level"], LogLevel.error, formatEvent(event))
            self.case.assertLess(len(formatEvent(event)), 1000)

    def lines(self, level: LogLevel = LogLevel.warn) -> list[str]:
        return [formatEvent(e) for e in self.log if e["log_level"] >= level]

    def stop(self) -> None:
        self.link.halt()
        self.run(1.0)


AGENT_METHODS: list[tuple[str, tuple[Codec, ...]]] = [
    (c.rpcName(cmd), tuple(a.codec for a in cmd.args)) for c in CHANNELS for cmd in c.commands
] + [(PUSH_VAR, (Codec.JSON,))]


class BadAgentArgumentTests(SynchronousTestCase):
    """Arguments of the wrong kind: a clear error answer, and the link goes on."""

    def assertRefused(self, what: str, method: str, *params: Any) -> None:
        rig = AgentRig(self)
        rig.sync()
        answer = rig.call(method, *params)
        self.assertIsInstance(answer, RemoteError, what)
        self.assertLess(len(str(answer)), 1000, what)
        rig.assertWorking()
        rig.stop()

    def test_pushVarDeepJson(self) -> None:
        """RecursionError decoding push_var's event: an error answer, not a CRITICAL traceback."""
        self.assertRefused("deep JSON", PUSH_VAR, DEEP_JSON)

    def test_pushVarShapes(self) -> None:
        for what, event in [
            ("an integer", 5),
            ("a JSON array", "[1]"),
            ("a JSON string", '"interface"'),
            ("no value", '{"interface": "auth", "var": "token_validation_status"}'),
            ("a list as interface", '{"interface": [1], "var": "x", "value": 1}'),
            ("a map as var", '{"interface": "auth", "var": {}, "value": 1}'),
            ("NaN", '{"interface": "auth", "var": "token_validation_status", "value": NaN}'),
            ("1e400", '{"interface": "auth", "var": "token_validation_status", "value": 1e400}'),
            (
                "JSON deeper than the bound",
                '{"interface":"auth","var":"x","value":' + "[" * 200 + "]" * 200 + "}",
            ),
            ("5000 digits", '{"interface": "auth", "var": "x", "value": ' + "9" * 5000 + "}"),
        ]:
            self.assertRefused(what, PUSH_VAR, event)

    def test_commandArgumentDeepJson(self) -> None:
        self.assertRefused("deep JSON", "energy_enforce_limits", DEEP_JSON)

    def test_commandArgumentDeepArray(self) -> None:
        """A msgpack array 1000 deep (msgpack allows 1024) where an integer belongs."""
        deep: Any = 1
        for _ in range(1000):
            deep = [deep]
        requireDeepPacking(deep)
        self.assertRefused("deep array", "evse_manager_reserve", deep)

    def test_unknownPushVarIsLoggedCut(self) -> None:
        rig = AgentRig(self)
        rig.sync()
        name = "x" * 100_000
        self.assertIsNone(
            rig.call(PUSH_VAR, json.dumps({"interface": name, "var": name, "value": 1}))
        )
        rig.assertWorking()
        rig.stop()


# -- property tests --------------------------------------------------------------------

checks = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
#: any msgpack value
msgpackValues = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=12,
)
jsonValues = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["evse_manager", "energy", "system", "auth", "ready", "x", ""]) | st.text(
    max_size=8
)
varEvents = st.fixed_dictionaries(
    {"interface": names, "var": names, "value": jsonValues}
) | st.dictionaries(st.sampled_from(["interface", "var", "value", "x"]), jsonValues, max_size=4)
errorEvents = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["raise", "clear", "x"]) | jsonValues,
        "error": st.just(ERROR) | st.dictionaries(st.sampled_from(sorted(ERROR)), jsonValues),
    }
)
batches = st.fixed_dictionaries(
    {},
    optional={
        "vars": st.lists(varEvents, max_size=3) | jsonValues,
        "errors": st.lists(errorEvents, max_size=3) | jsonValues,
    },
)
#: JSON texts: of any value, of batch-like objects, truncated, deep, or not JSON at all
jsonTexts = (
    jsonValues.map(lambda v: json.dumps(v))
    | batches.map(lambda v: json.dumps(v))
    | batches.map(lambda v: json.dumps(v)).flatmap(
        lambda text: st.integers(0, len(text)).map(lambda n: text[:n])
    )
    | st.integers(90, 3000).map(lambda n: "[" * n + "]" * n)
    | st.integers(90, 3000).map(lambda n: '{"vars":' + "[" * n)
    | st.text(max_size=30)
)
peerValues = msgpackValues | jsonTexts | st.builds(HandlerError, msgpackValues | st.text())


class ControllerPropertyTests(SynchronousTestCase):
    """The agent answers the controller's calls with anything at all."""

    @checks
    @given(poll=peerValues, answer=peerValues, here=peerValues | st.just(False))
    def test_anyAnswers(self, poll: Any, answer: Any, here: Any) -> None:
        rig = ControllerRig(self)
        here = [here, False]
        original = rig.agent._record

        def record(method: str, result: Any, *args: Any) -> Any:
            if method == I_AM_HERE and here:
                value = here.pop(0)
                if isinstance(value, HandlerError):
                    raise value
                return value
            return original(method, result, *args)

        rig.agent._record = record  # type: ignore[method-assign]
        for _, command in COMMANDS:
            rig.agent.answers[_rpcName(command)] = answer
        rig.agent.answers[PUSH_VAR] = answer
        rig.link.start()
        rig.run(4.0)  # a first answer True resets; once more, it synchronises
        self.assertTrue(rig.link.synced, rig.lines())
        calls = callEveryCommand(rig)
        rig.agent.polls.append(poll)
        rig.run(3.0)
        outcomes(self, calls)
        self.assertEqual(self.flushLoggedErrors(), [])
        for line in rig.lines():
            self.assertLess(len(line), 1000)
        if rig.ended:
            # the link ended cleanly, as a lost link does
            [(code, reason)] = rig.ended
            self.assertEqual(code, 1)
            self.assertIn("protocol violation: retrieve_vars_and_errors", reason)
            self.assertFalse(rig.link.synced)
            polls = rig.agent.count(RETRIEVE)
            rig.run(3.0)
            self.assertEqual(rig.agent.count(RETRIEVE), polls, "no poll after the end")
        else:
            # it goes on working: polls go on, a command still works
            self.assertTrue(rig.link.synced)
            polls = rig.agent.count(RETRIEVE)
            rig.agent.answers["evse_manager_get_evse"] = '{"id": 1}'
            d = rig.consumer.call("evse_manager", "get_evse", {})
            rig.run(3.0)
            self.assertGreater(rig.agent.count(RETRIEVE), polls, "polls go on")
            self.assertEqual(self.successResultOf(d), {"id": 1})
        rig.stop()


class AgentPropertyTests(SynchronousTestCase):
    """A controller calls the agent's methods with anything at all."""

    @checks
    @given(data=st.data())
    def test_anyArguments(self, data: st.DataObject) -> None:
        rig = AgentRig(self)
        rig.sync()
        for method, codecs in AGENT_METHODS:
            count = data.draw(st.sampled_from([len(codecs), len(codecs), 0, len(codecs) + 1]))
            params = [data.draw(msgpackValues | jsonTexts) for _ in range(count)]
            rig.call(method, *params)
        rig.assertWorking()
        rig.stop()


# -- rcp.untrusted itself -----------------------------------------------------------


class UntrustedTests(SynchronousTestCase):
    def test_loadsJsonRefusesOnlyWithPeerValueError(self) -> None:
        deep = "[" * 101 + "]" * 101
        text: Any
        for text in [
            5,
            None,
            [],
            b"\xff",
            "[",
            "NaN",
            "-Infinity",
            "1e400",
            "9" * 5000,
            deep,
            DEEP_JSON,
        ]:
            self.assertRaises(PeerValueError, loadsJson, text)
        self.assertRaises(PeerValueError, loadsJson, "[]", maxSize=1)
        self.assertEqual(
            loadsJson("[" * 100 + "]" * 100, maxDepth=100), loadsJson("[" * 100 + "]" * 100)
        )
        self.assertEqual(loadsJson(b'{"a": [1.5]}'), {"a": [1.5]})

    @checks
    @given(text=jsonTexts | st.binary(max_size=30) | msgpackValues)
    def test_loadsJsonAnything(self, text: Any) -> None:
        try:
            loadsJson(text)
        except PeerValueError as e:
            self.assertLess(len(str(e)), 500)

    def test_briefAndCut(self) -> None:
        deep: Any = "x" * 10**6
        for _ in range(5000):
            deep = [deep]
        self.assertLess(len(brief(deep)), 300)
        self.assertLess(len(brief({"k" * 10**6: b"v" * 10**6})), 300)
        self.assertEqual(cut("abc", 5), "abc")
        self.assertEqual(cut("abcdef", 3), "abc... (3 more characters)")
        self.assertEqual(errorText(ValueError()), "ValueError")
        self.assertLess(len(errorText(ValueError("x" * 10**6))), 300)


# -- MQTT payloads, through a real broker ------------------------------------------

#: payloads no EVerest writes, each a regression: before, some escaped the
#: decoder as ValueError (the subscriber then logged a CRITICAL traceback)
#: or decoded to infinities no JSON writer can write back
HOSTILE_PAYLOADS: list[tuple[str, bytes]] = [
    ("5000 digits", b'{"msg_type":"Var","data":{"data":' + b"9" * 5000 + b"}}"),
    ("1e400", b'{"msg_type":"Var","data":{"data":1e400}}'),
    ("NaN", b'{"msg_type":"Var","data":{"data":NaN}}'),
    ("deep", b'{"msg_type":"Var","data":{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"),
    (
        "deeper than the bound",
        b'{"msg_type":"Var","data":{"data":' + b"[" * 200 + b"]" * 200 + b"}}",
    ),
    ("not UTF-8", b'{"msg_type":"Var","data":{"data":"\xff"}}'),
    ("a long msg_type", b'{"msg_type":"' + b"V" * 100_000 + b'","data":{"data":1}}'),
]


class MqttPayloadTests(test_mqtt.ModuleCase):
    async def test_hostileVarsDropped(self) -> None:
        _, provider, caller = await self.pair()
        got: list[Any] = []
        caller.subscribeVar("r", "v", got.append)
        await self.allReady(provider, caller)
        raw = await self.raw()
        topic = self.topics.var("evse_a", "main", "v")
        for _, payload in HOSTILE_PAYLOADS:
            await raw.publish(topic, payload)
        provider.publishVar("main", "v", "good")
        await test_mqtt.waitUntil(lambda: got == ["good"])
        self.assertEqual(self.flushLoggedErrors(), [])
        dropped = [line for line in self.logLines() if "dropped a value" in line]
        self.assertEqual(len(dropped), len(HOSTILE_PAYLOADS), "\n".join(dropped))
        for line in self.logLines():
            self.assertLess(len(line), 1000)

    async def test_hostileCallsAnsweredOrDropped(self) -> None:
        _, provider, caller = await self.pair()
        calls: list[Any] = []
        provider.provideCommand("main", "cmd", calls.append)
        await self.allReady(provider, caller)
        raw = await self.raw()
        topic = self.topics.command("evse_a", "main", "cmd")
        for _, payload in HOSTILE_PAYLOADS:
            await raw.publish(topic, payload.replace(b'"Var"', b'"Cmd"'))
        long = "k" * 100_000
        await raw.publish(
            topic, wire.command("id-1", {long: 1}, "consumer").replace(b"consumer", long.encode())
        )
        result = await caller.call("r", "cmd", {"a": 1})
        self.assertIsNone(result)
        # the call from a long origin is well-formed: it runs, its answer cannot be sent
        self.assertEqual(calls[-1], {"a": 1})
        self.assertLessEqual(len(calls), 2)
        self.assertLogged("cannot publish on .*too long")
        self.assertEqual(self.flushLoggedErrors(), [])
        for line in self.logLines():
            self.assertLess(len(line), 1000)


class RpcLayerTests(SynchronousTestCase):
    """What the RPC layer does with peer values a handler cannot take."""

    def test_notificationRefusedIsOneLine(self) -> None:
        """push_var as a notification, with deep JSON: a warning, not a CRITICAL traceback."""
        rig = AgentRig(self)
        rig.sync()
        rig.client.notify(PUSH_VAR, DEEP_JSON)
        rig.client.notify(PUSH_VAR, "[" * 200 + "]" * 200)
        rig.client.notify("n" * 100_000, 1)
        rig.run()
        refused = [line for line in rig.lines() if "notification push_var refused" in line]
        self.assertEqual(len(refused), 2, rig.lines())
        self.assertTrue(any("ignored notification nnn" in line for line in rig.lines()))
        rig.assertWorking()
        rig.stop()

    def test_recursionErrorInAHandler(self) -> None:
        """A handler that recurses on deep params answers a clear error."""
        clock = Clock()
        methods = MethodRegistry()

        def depth(value: Any) -> int:
            return 1 + max(map(depth, value), default=0) if isinstance(value, list) else 0

        methods.register("depth", depth)
        client, _server, pump = iosim.connectedServerAndClient(
            lambda: RpcProtocol(clock, methods),
            lambda: RpcProtocol(clock, MethodRegistry()),
            clock=clock,
        )
        deep: Any = 1
        for _ in range(1000):
            deep = [deep]
        requireDeepPacking(deep)
        d = client.call("depth", deep)
        ok = client.call("depth", [[1]])
        pump.flush()
        error = self.failureResultOf(d, RemoteError).value
        self.assertIn("nested too deep", str(error))
        self.assertEqual(self.successResultOf(ok), 2)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_remoteErrorText(self) -> None:
        deep: Any = "x"
        for _ in range(1000):
            deep = [deep]
        self.assertLess(len(str(RemoteError(deep))), 300)
        self.assertLess(len(str(RemoteError("y" * 10**6))), 1100)
        self.assertEqual(str(RemoteError("rpclib: the text")), "rpclib: the text")


# -- end to end: a real rcp-controller process ------------------------------------


class ControllerProcessTests(TestCase):
    """
    ``twistd rcp-controller`` against an agent on 127.0.0.1 that answers a
    poll with garbage: the process ends with exit code 1 and says why in one
    line, as after a lost link.
    """

    timeout = 60

    async def assertEndsTheProcess(self, answer: Any, problem: str) -> None:
        agent = FakeAgent(cast(Clock, reactor))
        agent.polls = [EMPTY_BATCH, answer, EMPTY_BATCH]
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(agent.protocol)
        )
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        controller = test_tap._twistd(
            self, "rcp-controller", "--plain", "--peer", f"tcp:host=127.0.0.1:port={number}"
        )
        await test_tap._waitFor(lambda: controller.process.poll() is not None, timeout=30)
        text = controller.text()
        self.assertEqual(controller.process.returncode, 1, text)
        violations = [line for line in text.splitlines() if "protocol violation" in line]
        self.assertTrue(violations, text)
        self.assertIn(
            f"retrieve_vars_and_errors from the agent at 127.0.0.1:{number}", violations[0]
        )
        self.assertIn(problem, violations[0])
        self.assertNotIn("Traceback", text)
        self.assertNotIn("CRITICAL", text)
        for line in text.splitlines():
            self.assertLess(len(line), 1000)

    async def test_integer(self) -> None:
        await self.assertEndsTheProcess(5, "expected a JSON text, got an integer")

    async def test_deepJson(self) -> None:
        await self.assertEndsTheProcess(DEEP_JSON, "nested deeper than 100 levels")

    async def test_notJson(self) -> None:
        await self.assertEndsTheProcess("x" * 500_000, "not JSON")


class AgentProcessTests(TestCase):
    """
    ``twistd rcp-agent``, called by a controller with hostile arguments:
    each call gets a clear error answer, the link goes on, and the log has
    no traceback.
    """

    timeout = 60

    async def test_hostileArgumentsAnswered(self) -> None:
        number = freePort()
        agent = test_tap._twistd(
            self, "rcp-agent", "--plain", "--listen", f"tcp:{number}:interface=127.0.0.1"
        )
        await test_tap._waitFor(lambda: "UNAUTHENTICATED" in agent.text())
        client: RpcProtocol | None = None
        for _ in range(100):
            try:
                client = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", number),
                    RpcProtocol(cast(Clock, reactor)),
                )
                break
            except ConnectionRefusedError:
                await deferLater(reactor, 0.1)
        assert client is not None
        self.addCleanup(client.abort)
        self.assertIs(await client.call(I_AM_HERE), False)
        self.assertIsNone(await client.call(I_AM_READY))
        deep: Any = 1
        for _ in range(1000):
            deep = [deep]
        requireDeepPacking(deep)
        calls: list[tuple[str, list[Any]]] = [
            (PUSH_VAR, [DEEP_JSON]),
            (PUSH_VAR, ['{"interface": "auth", "var": "x", "value": 1e400}']),
            (PUSH_VAR, [5]),
            ("evse_manager_reserve", [deep]),
            ("energy_enforce_limits", ["[" * 200 + "]" * 200]),
        ]
        for method, params in calls:
            with self.assertRaises(RemoteError, msg=method):
                await client.call(method, *params)
        client.notify(PUSH_VAR, DEEP_JSON)
        self.assertIsInstance(await client.call(RETRIEVE), str)
        self.assertIsNone(agent.process.poll(), "the agent runs on")
        await test_tap._waitFor(lambda: "notification push_var refused" in agent.text())
        text = agent.text()
        self.assertNotIn("Traceback", text)
        self.assertNotIn("CRITICAL", text)
        self.assertNotIn("resetting the board", text)
        for line in text.splitlines():
            self.assertLess(len(line), 1000)
