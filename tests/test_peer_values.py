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
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.agent.link import AgentLink
from rcp.controller.link import ControllerLink
from rcp.everest.sim.bus import SimBus
from rcp.rpc import HandlerError, MethodRegistry, RpcProtocol
from rcp.sync import SyncTimings
from rcp.tunnel.table import CHANNELS, EXIT, I_AM_HERE, I_AM_READY, PUSH_VAR, RETRIEVE

TIMINGS = SyncTimings(here_timeout=2.0, retry_interval=0.5, poll_timeout=5.0, poll_watchdog=10.0)

#: a JSON text nested far deeper than Python's recursion limit
DEEP_JSON = "[" * 100_000 + "]" * 100_000
#: a JSON object nested deeper than the bound, but not too deep for json.loads
DEEPISH_JSON = '{"vars":' + "[" * 500 + "]" * 500 + ',"errors":[]}'

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

    def connect(self, factory: Factory) -> Deferred[Any]:
        client = factory.buildProtocol(None)
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
                name = channel.rpcName(command)
                methods.register(
                    name, (lambda name: lambda *args: self._answer(name, *args))(name), (0, None)
                )
        return RpcProtocol(self.clock, methods)

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
