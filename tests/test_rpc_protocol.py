"""
L{RpcProtocol} between two peers: calls both ways on one connection, handler
kinds, ordering, timeouts, cancellation, connection loss, encoding failures,
flow control and the method table.

Almost everything runs over an in-memory connection (L{twisted.test.iosim})
with a L{Clock}; the last test case closes real TLS links on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

import msgpack
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp import tls
from rcp.rpc import (
    CallTimeout,
    EncodeError,
    HandlerError,
    Method,
    MethodRegistry,
    NotConnected,
    RemoteError,
    RpcFactory,
    RpcLimits,
    RpcProtocol,
)

from .common import makeStation

reactor: Any = _reactor

SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 4129)
CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 50000)
#: how the server names its peer, the client, in its log
CLIENT_NAME = "127.0.0.1:50000"


class FlowTransport(FakeTransport):
    """An iosim transport that remembers whether its protocol stopped reading."""

    reading = True

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


def connect(
    clock: Clock,
    serverMethods: MethodRegistry,
    clientMethods: MethodRegistry | None = None,
    serverLimits: RpcLimits = RpcLimits(),
    clientLimits: RpcLimits = RpcLimits(),
) -> tuple[RpcProtocol, RpcProtocol, IOPump]:
    """A connected (client, server, pump) with real-looking addresses."""

    def clientTransport(p: RpcProtocol) -> FlowTransport:
        return FlowTransport(p, False, CLIENT_ADDRESS, SERVER_ADDRESS)

    def serverTransport(p: RpcProtocol) -> FlowTransport:
        return FlowTransport(p, True, SERVER_ADDRESS, CLIENT_ADDRESS)

    return connectedServerAndClient(
        lambda: RpcProtocol(clock, serverMethods, serverLimits),
        lambda: RpcProtocol(clock, clientMethods, clientLimits),
        clientTransportFactory=clientTransport,
        serverTransportFactory=serverTransport,
        clock=clock,
    )


def messages(events: Sequence[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e.get("log_level") is level]


def observeLog(case: SynchronousTestCase) -> EventLoggingObserver:
    """Every log event while C{case} runs."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _fail() -> NoReturn:
    raise ValueError("nope")


class RpcPairBase(SynchronousTestCase):
    """A server offering a handful of methods and a client offering C{ping}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = observeLog(self)
        self.later: dict[str, Deferred[Any]] = {}
        self.notes: list[tuple[str, tuple[Any, ...]]] = []
        self.serverMethods = MethodRegistry(
            {
                "add": lambda a, b: a + b,
                "echo": lambda value: value,
                "later": self._later,
                "coro": self._coro,
                "now": self._now,
                "fail": _fail,
                "refuse": self._refuse,
                "unencodable": lambda: object(),
                "askClient": self._askClient,
                "note": self._note("server"),
            }
        )
        self.clientMethods = MethodRegistry({"ping": lambda: "pong", "note": self._note("client")})
        self.client, self.server, self.pump = self.connect()

    def connect(
        self, serverLimits: RpcLimits = RpcLimits(), clientLimits: RpcLimits = RpcLimits()
    ) -> tuple[RpcProtocol, RpcProtocol, IOPump]:
        return connect(
            self.clock, self.serverMethods, self.clientMethods, serverLimits, clientLimits
        )

    def _later(self, key: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.later[key] = d
        return d

    async def _coro(self, key: str) -> Any:
        value = await self._later(key)
        return value * 2

    async def _now(self, value: int) -> int:
        return value + 1

    def _refuse(self, error: Any) -> NoReturn:
        raise HandlerError(error)

    async def _askClient(self) -> str:
        answer = await self.server.call("ping")
        return f"client said {answer}"

    def _note(self, side: str) -> Callable[..., None]:
        def note(*args: Any) -> None:
            self.notes.append((side, args))

        return note

    def assertConnected(self) -> None:
        """Both ends are up and a call still goes through."""
        self.assertTrue(self.client.connected and self.server.connected)
        self.assertFalse(self.pump.clientIO.disconnecting or self.pump.serverIO.disconnecting)
        d = self.client.call("add", 40, 2)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), 42)


class CallTests(RpcPairBase):
    def test_callsBothWays(self) -> None:
        """Each side calls the other on the same connection."""
        toServer = self.client.call("add", 2, 3)
        toClient = self.server.call("ping")
        self.assertNoResult(toServer)
        self.assertNoResult(toClient)
        self.pump.flush()
        self.assertEqual(self.successResultOf(toServer), 5)
        self.assertEqual(self.successResultOf(toClient), "pong")

    def test_serverCallsClientWhileAnswering(self) -> None:
        """
        A server handler calls the client and answers with what it got: both
        sides' msgids start at 1 on the one connection without mixing up.
        """
        d = self.client.call("askClient")
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), "client said pong")
        self.assertEqual((self.client.pendingCalls, self.server.pendingCalls), (0, 0))

    def test_notificationsBothWays(self) -> None:
        self.client.notify("note", 1, "a")
        self.server.notify("note", [2])
        self.pump.flush()
        self.assertEqual(sorted(self.notes), [("client", ([2],)), ("server", (1, "a"))])

    def test_valueHandler(self) -> None:
        d = self.client.call("echo", {"k": [1, 2.5, None, b"\x00"]})
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), {"k": [1, 2.5, None, b"\x00"]})

    def test_deferredHandler(self) -> None:
        d = self.client.call("later", "x")
        self.pump.flush()
        self.assertNoResult(d)
        self.later["x"].callback("done")
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), "done")

    def test_coroutineHandler(self) -> None:
        """An C{async def} handler, finishing at once or after an await."""
        now = self.client.call("now", 1)
        later = self.client.call("coro", "k")
        self.pump.flush()
        self.assertEqual(self.successResultOf(now), 2)
        self.assertNoResult(later)
        self.later["k"].callback(21)
        self.pump.flush()
        self.assertEqual(self.successResultOf(later), 42)

    def test_failedDeferredHandler(self) -> None:
        d = self.client.call("later", "x")
        self.pump.flush()
        self.later["x"].errback(KeyError("gone"))
        self.pump.flush()
        error = self.failureResultOf(d, RemoteError).value
        self.assertEqual(
            error.error,
            "rpclib: function 'later' (called with 1 arg(s)) threw an exception."
            " The exception contained this information: 'gone'.",
        )
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_outOfOrderCompletion(self) -> None:
        """Responses complete their own calls, whatever the order they come in."""
        first = self.client.call("later", "a")
        second = self.client.call("later", "b")
        third = self.client.call("add", 1, 1)
        self.pump.flush()
        self.assertEqual(self.successResultOf(third), 2)
        self.later["b"].callback("B")
        self.pump.flush()
        self.assertEqual(self.successResultOf(second), "B")
        self.assertNoResult(first)
        self.later["a"].callback("A")
        self.pump.flush()
        self.assertEqual(self.successResultOf(first), "A")
        self.assertEqual(self.client.pendingCalls, 0)


class TimeoutTests(RpcPairBase):
    def setUp(self) -> None:
        super().setUp()
        self.client, self.server, self.pump = self.connect(clientLimits=RpcLimits(callTimeout=5))

    def test_defaultTimeout(self) -> None:
        """Without C{timeout}, a call waits L{RpcLimits.callTimeout}."""
        d = self.client.call("later", "x")
        self.pump.flush()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failureResultOf(d, CallTimeout).value
        self.assertEqual(str(error), "later: no response from 127.0.0.1:4129 within 5 s")
        self.assertEqual(self.client.pendingCalls, 0)

    def test_perCallTimeout(self) -> None:
        d = self.client.call("later", "x", timeout=0.5)
        self.pump.flush()
        self.clock.advance(0.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, CallTimeout)

    def test_noTimeout(self) -> None:
        """C{timeout=None} waits as long as the connection lasts."""
        d = self.client.call("later", "x", timeout=None)
        self.pump.flush()
        self.clock.advance(10**6)
        self.assertNoResult(d)
        self.later["x"].callback("finally")
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), "finally")

    def test_noDefaultTimeout(self) -> None:
        client, _server, pump = self.connect(clientLimits=RpcLimits(callTimeout=None))
        d = client.call("later", "y")
        pump.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertNoResult(d)

    def test_answeredCallLeavesNoTimer(self) -> None:
        d = self.client.call("add", 1, 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.pump.flush()
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateResponseDroppedQuietly(self) -> None:
        """
        The response to a call that timed out is dropped with a debug line;
        it is no protocol violation and the connection stays.
        """
        d = self.client.call("later", "x", timeout=1)
        self.pump.flush()
        self.clock.advance(1)
        self.failureResultOf(d, CallTimeout)
        self.later["x"].callback("too late")
        self.pump.flush()
        self.assertConnected()
        self.assertEqual(messages(self.events, LogLevel.warn), [])
        [late] = [m for m in messages(self.events) if "late response" in m]
        self.assertEqual(late, "127.0.0.1:4129: late response to abandoned call 1 dropped")

    def test_cancelAbandonsCall(self) -> None:
        """Cancelling a call's Deferred forgets the call and its timer."""
        d = self.client.call("later", "x")
        self.pump.flush()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.client.pendingCalls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.later["x"].callback("nobody listens")
        self.pump.flush()
        self.assertConnected()
        self.assertEqual(messages(self.events, LogLevel.warn), [])

    def test_cancelBeforeSending(self) -> None:
        d = self.client.call("add", 1, 2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.pump.flush()
        self.assertConnected()


class ConnectionTests(RpcPairBase):
    def test_lossFailsEveryPendingCall(self) -> None:
        """Every pending call, in both directions, fails with the loss reason."""
        self.clientMethods.register("hang", lambda: Deferred())
        calls = [self.client.call("later", "a"), self.client.call("later", "b", timeout=None)]
        towardsClient = self.server.call("hang")
        self.pump.flush()
        reason = ConnectionLost("cable pulled")
        for io in (self.pump.clientIO, self.pump.serverIO):
            io.disconnectReason = reason
        self.pump.clientIO.loseConnection()
        self.pump.flush()
        for d in [*calls, towardsClient]:
            self.assertIs(self.failureResultOf(d, ConnectionLost).value, reason)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((self.client.pendingCalls, self.server.pendingCalls), (0, 0))

    def test_cleanCloseFailsPendingCalls(self) -> None:
        d = self.client.call("later", "a")
        self.pump.flush()
        self.server.disconnect()
        self.pump.flush()
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_callWhenNotConnected(self) -> None:
        """Before the connection and after it, nothing is sent and the call fails."""
        fresh = RpcProtocol(self.clock)
        self.failureResultOf(fresh.call("add", 1, 2), NotConnected)
        self.assertRaises(NotConnected, fresh.notify, "note")
        self.pump.clientIO.loseConnection()
        self.pump.flush()
        self.failureResultOf(self.client.call("add", 1, 2), NotConnected)
        self.assertRaises(NotConnected, self.client.notify, "note")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_callWhileClosing(self) -> None:
        self.client.disconnect()
        self.failureResultOf(self.client.call("add", 1, 2), NotConnected)
        self.assertRaises(NotConnected, self.client.notify, "note")

    def test_whenDisconnected(self) -> None:
        """Each caller gets its own Deferred, fired with the loss reason."""
        first = self.server.whenDisconnected()
        second = self.server.whenDisconnected()
        self.assertIsNot(first, second)
        self.assertNoResult(first)
        self.client.disconnect()
        self.pump.flush()
        self.assertIsInstance(self.successResultOf(first), ConnectionDone)
        self.assertIsInstance(self.successResultOf(second), ConnectionDone)
        # after the loss: at once
        self.assertIsInstance(self.successResultOf(self.server.whenDisconnected()), ConnectionDone)

    def test_whenDisconnectedLossReason(self) -> None:
        d = self.client.whenDisconnected()
        self.pump.clientIO.disconnectReason = ConnectionLost("reset")
        self.pump.serverIO.loseConnection()
        self.pump.flush()
        self.assertIsInstance(self.successResultOf(d), ConnectionLost)


class EncodingTests(RpcPairBase):
    def test_unencodableParams(self) -> None:
        """Params without a msgpack form: L{EncodeError}, nothing sent, no timer."""
        d = self.client.call("echo", object())
        self.assertIn(
            "cannot encode the params of echo", str(self.failureResultOf(d, EncodeError).value)
        )
        self.assertEqual(self.pump.clientIO.stream, [])
        self.assertEqual(self.client.pendingCalls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(self.client.call("echo", 2**64), EncodeError)
        self.assertFalse(self.pump.flush())
        self.assertConnected()

    def test_unencodableNotification(self) -> None:
        self.assertRaises(EncodeError, self.client.notify, "note", {1, 2})
        self.assertEqual(self.pump.clientIO.stream, [])
        self.assertConnected()

    def test_unencodableResult(self) -> None:
        """The caller gets an error, the server logs it, the connection stays."""
        d = self.client.call("unencodable")
        self.pump.flush()
        error = self.failureResultOf(d, RemoteError).value.error
        self.assertTrue(
            error.startswith(
                "rpclib: function 'unencodable' (called with 0 arg(s)) threw an exception."
                " The exception contained this information: result cannot be encoded: "
            ),
            error,
        )
        [logged] = messages(self.events, LogLevel.error)
        self.assertTrue(
            logged.startswith(f"{CLIENT_NAME}: result of unencodable cannot be encoded")
        )
        self.assertConnected()

    def test_tooDeepResult(self) -> None:
        """A result nested deeper than msgpack packs is an error too."""
        deep: list[Any] = []
        for _ in range(3000):
            deep = [deep]
        self.serverMethods.register("deep", lambda: deep)
        d = self.client.call("deep")
        self.pump.flush()
        self.failureResultOf(d, RemoteError)
        self.assertConnected()

    def test_handlerError(self) -> None:
        """L{HandlerError} sends its error value as it is, any msgpack value."""
        text = self.client.call("refuse", "no, thanks")
        structured = self.client.call("refuse", {"code": 3, "why": ["busy"]})
        self.pump.flush()
        self.assertEqual(self.failureResultOf(text, RemoteError).value.error, "no, thanks")
        self.assertEqual(
            self.failureResultOf(structured, RemoteError).value.error,
            {"code": 3, "why": ["busy"]},
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_handlerErrorNone(self) -> None:
        """A nil error would read as success: it becomes rpclib's failure text."""
        d = self.client.call("refuse", None)
        self.pump.flush()
        self.assertEqual(
            self.failureResultOf(d, RemoteError).value.error,
            "rpclib: function 'refuse' (called with 1 arg(s)) threw an exception."
            " The exception contained this information: None.",
        )

    def test_handlerException(self) -> None:
        d = self.client.call("fail")
        self.pump.flush()
        self.assertEqual(
            str(self.failureResultOf(d, RemoteError).value),
            "rpclib: function 'fail' (called with 0 arg(s)) threw an exception."
            " The exception contained this information: nope.",
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertConnected()


class NotificationTests(RpcPairBase):
    def test_unknownNotificationIgnored(self) -> None:
        self.client.notify("nosuch", 1, 2)
        self.client.notify("add", 1)  # known, but not with one argument
        self.pump.flush()
        self.assertEqual(
            messages(self.events, LogLevel.warn),
            [
                f"{CLIENT_NAME}: ignored notification nosuch with 2 arg(s): no such method",
                f"{CLIENT_NAME}: ignored notification add with 1 arg(s): no such method",
            ],
        )
        self.assertEqual(self.notes, [])
        self.assertConnected()

    def test_failingNotificationLogged(self) -> None:
        self.serverMethods.register("bad", _fail)
        self.client.notify("bad")
        self.pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertConnected()

    def test_notificationGetsNoResponse(self) -> None:
        self.client.notify("add", 1, 2)
        self.pump.pump()
        self.assertEqual(self.pump.serverIO.stream, [])


class FlowControlTests(RpcPairBase):
    def test_maxConcurrentRequestsPausesReading(self) -> None:
        """
        At the limit the server stops reading; requests already read wait
        their turn; reading resumes when handlers finish.
        """
        client, _server, pump = self.connect(serverLimits=RpcLimits(maxConcurrentRequests=2))
        serverIO: FlowTransport = pump.serverIO
        calls = [client.call("later", str(i)) for i in range(5)]
        pump.flush()
        self.assertEqual(sorted(self.later), ["0", "1"])
        self.assertFalse(serverIO.reading)
        self.later["1"].callback("1")
        pump.flush()
        self.assertEqual(self.successResultOf(calls[1]), "1")
        self.assertEqual(sorted(self.later), ["0", "1", "2"])
        self.assertFalse(serverIO.reading)
        for key in ("0", "2", "3", "4"):
            self.assertIn(key, self.later)
            self.later[key].callback(key)
            pump.flush()
            self.assertEqual(self.successResultOf(calls[int(key)]), key)
        self.assertTrue(serverIO.reading)

    def test_answerPrecedesQueuedRequests(self) -> None:
        """
        When a handler finishes at the limit, its answer goes out before
        those of the requests that were waiting for it.
        """
        client, _server, pump = self.connect(serverLimits=RpcLimits(maxConcurrentRequests=1))
        calls = [client.call("later", "a"), client.call("add", 1, 1), client.call("add", 2, 2)]
        pump.flush()
        self.assertEqual(list(self.later), ["a"])
        self.later["a"].callback("A")
        sent = msgpack.Unpacker()
        sent.feed(b"".join(pump.serverIO.stream))
        self.assertEqual([m[1] for m in sent], [1, 2, 3])
        pump.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], ["A", 2, 4])

    def test_synchronousHandlersAtTheLimit(self) -> None:
        """Handlers that answer at once never leave reading paused."""
        client, _server, pump = self.connect(serverLimits=RpcLimits(maxConcurrentRequests=1))
        calls = [client.call("add", i, i) for i in range(50)]
        pump.flush()
        self.assertEqual([self.successResultOf(d) for d in calls], [2 * i for i in range(50)])
        self.assertTrue(pump.serverIO.reading)

    def test_notificationsCountTowardsTheLimit(self) -> None:
        client, _server, pump = self.connect(serverLimits=RpcLimits(maxConcurrentRequests=1))
        self.serverMethods.register("slowNote", self._later)
        client.notify("slowNote", "n")
        d = client.call("add", 1, 2)
        pump.flush()
        self.assertNoResult(d)
        self.assertFalse(pump.serverIO.reading)
        self.later["n"].callback(None)
        pump.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertTrue(pump.serverIO.reading)


def _f0() -> None:
    pass


def _f2(a: int, b: int) -> None:
    pass


def _fDefault(a: int, b: int = 1) -> None:
    pass


def _fVar(a: int, *rest: int) -> None:
    pass


def _fKeywordOnly(a: int, *, k: int = 1) -> None:
    pass


async def _fAsync(a: int, b: int = 2, c: int = 3) -> None:
    pass


class _Service:
    def method(self, a: int) -> None:
        pass


class MethodRegistryTests(SynchronousTestCase):
    def test_arityInference(self) -> None:
        registry = MethodRegistry()
        cases: list[tuple[Callable[..., Any], int, int | None]] = [
            (_f0, 0, 0),
            (_f2, 2, 2),
            (_fDefault, 1, 2),
            (_fVar, 1, None),
            (_fKeywordOnly, 1, 1),
            (_fAsync, 1, 3),
            (_Service().method, 1, 1),
            (lambda *args: None, 0, None),
        ]
        for i, (handler, low, high) in enumerate(cases):
            registry.register(f"m{i}", handler)
            method = registry.get(f"m{i}")
            assert method is not None
            self.assertEqual((method.minArgs, method.maxArgs), (low, high), handler)

    def test_explicitArgc(self) -> None:
        registry = MethodRegistry()
        registry.register("exact", _fVar, argc=2)
        registry.register("range", _fVar, argc=(1, 3))
        registry.register("open", _f0, argc=(0, None))
        self.assertEqual(registry.get("exact"), Method("exact", _fVar, 2, 2))
        self.assertEqual(registry.get("range"), Method("range", _fVar, 1, 3))
        self.assertEqual(registry.get("open"), Method("open", _f0, 0, None))
        method = registry.get("range")
        assert method is not None
        self.assertEqual([method.accepts(n) for n in range(5)], [False, True, True, True, False])

    def test_table(self) -> None:
        registry = MethodRegistry({"a": _f0})
        registry.register("b", _f2)
        self.assertEqual(list(registry), ["a", "b"])
        self.assertIn("a", registry)
        registry.unregister("a")
        registry.unregister("never there")
        self.assertNotIn("a", registry)
        self.assertIsNone(registry.get("a"))


def _remoteError(failure: Failure) -> Any:
    failure.trap(RemoteError)
    return failure.value.error  # type: ignore[union-attr]


class ArityOverTheWireTests(SynchronousTestCase):
    """The argument counts a registry accepts, as a peer sees them."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.methods = MethodRegistry()
        self.methods.register("opt", lambda a, b=10: a + b)
        self.methods.register("rest", lambda *args: sum(args))
        self.methods.register("one", lambda *args: args[0], argc=1)
        self.client, self.server, self.pump = connect(self.clock, self.methods)

    def call(self, method: str, *params: Any) -> Any:
        d = self.client.call(method, *params).addErrback(_remoteError)
        self.pump.flush()
        return self.successResultOf(d)

    def test_defaults(self) -> None:
        self.assertEqual(self.call("opt", 1), 11)
        self.assertEqual(self.call("opt", 1, 2), 3)
        self.assertEqual(
            self.call("opt", 1, 2, 3),
            "rpclib: client error C0002: Function 'opt' was called with an invalid number"
            " of arguments. Expected: 3, got: 2",
        )
        self.assertEqual(
            self.call("opt"),
            "rpclib: client error C0002: Function 'opt' was called with an invalid number"
            " of arguments. Expected: 0, got: 1",
        )

    def test_varArgs(self) -> None:
        self.assertEqual(self.call("rest"), 0)
        self.assertEqual(self.call("rest", *range(100)), 4950)

    def test_explicitArgc(self) -> None:
        self.assertEqual(self.call("one", "x"), "x")
        self.assertTrue(self.call("one", "x", "y").startswith("rpclib: client error C0002:"))

    def test_unknownAndLateMethods(self) -> None:
        """The table is live: methods offered later are callable at once."""
        self.assertEqual(
            self.call("later", 1),
            "rpclib: server could not find function 'later' with argument count 1.",
        )
        self.methods.register("later", lambda x: x * 3)
        self.assertEqual(self.call("later", 1), 3)
        self.methods.unregister("later")
        self.assertTrue(self.call("later", 1).startswith("rpclib: server could not find"))


class CloseTests(SynchronousTestCase):
    """Closing with a producer registered: on a L{StringTransport}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.proto = RpcProtocol(self.clock, limits=RpcLimits(writeStallTimeout=7))
        self.proto.makeConnection(self.transport)

    def test_registeredAsStreamingProducer(self) -> None:
        self.assertIs(self.transport.producer, self.proto)
        self.assertTrue(self.transport.streaming)

    def test_disconnectHasADeadline(self) -> None:
        """A close that does not finish (peer not reading) becomes an abort."""
        self.proto.disconnect()
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)  # not aborted
        self.clock.advance(6.9)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)

    def test_disconnectDeadlineCancelled(self) -> None:
        self.proto.disconnect()
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pausedProducerLetsCloseFinish(self) -> None:
        """
        A TCP transport closes only once a paused producer is gone: when the
        transport, closing, drains its buffer, the protocol unregisters.
        """
        self.proto.pauseProducing()  # write buffer full
        self.transport.loseConnection()  # someone closes the transport directly
        self.proto.resumeProducing()  # buffer drained
        self.assertIsNone(self.transport.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])


async def _lost(proto: RpcProtocol) -> BaseException:
    d = proto.whenDisconnected()
    return await d.addTimeout(5, reactor)


class TlsCloseTests(TestCase):
    """
    Over TLS, closing the link ends the connection: TLSMemoryBIOProtocol waits
    for registered producers before it closes, so the protocol must not hold
    the TLS transport open (ClientService.stopService closes links with
    C{transport.loseConnection()}).
    """

    async def link(self) -> tuple[RpcProtocol, RpcProtocol]:
        station = makeStation(self, ("main", "satellite-1"))

        def credentials(board: str) -> tls.Credentials:
            return tls.loadCredentials(
                str(station / "ca.pem"),
                str(station / f"{board}.pem"),
                str(station / f"{board}.key"),
            )

        accepted: Deferred[RpcProtocol] = Deferred()
        factory = RpcFactory(
            reactor, MethodRegistry({"add": lambda a, b: a + b}), connected=accepted.callback
        )
        port: IListeningPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            tls.serverFactory(credentials("satellite-1"), factory)
        )
        self.addCleanup(port.stopListening)
        endpoint = tls.clientEndpoint(
            credentials("main"),
            "satellite-1",
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),  # type: ignore[attr-defined]
        )
        client = cast(RpcProtocol, await endpoint.connect(RpcFactory(reactor)))
        self.addCleanup(client.abort)
        self.assertEqual(await client.call("add", 1, 2, timeout=5), 3)
        server = await accepted
        self.addCleanup(server.abort)
        return client, server

    async def test_transportLoseConnection(self) -> None:
        client, server = await self.link()
        assert server.transport is not None
        server.transport.loseConnection()
        self.assertIsInstance(await _lost(server), ConnectionDone)
        self.assertIsInstance(await _lost(client), ConnectionDone)

    async def test_disconnect(self) -> None:
        client, server = await self.link()
        client.disconnect()
        self.assertIsInstance(await _lost(client), ConnectionDone)
        self.assertIsInstance(await _lost(server), ConnectionDone)
