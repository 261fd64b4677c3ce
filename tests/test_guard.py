"""
The limits on connections before their first request (L{rcp.rpc.guard}),
one by one, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rcp.rpc import MethodRegistry, RpcFactory, RpcProtocol, wire
from rcp.rpc.guard import GuardClosed, GuardFactory, GuardLimits, GuardProtocol

LIMITS = GuardLimits(handshakeTimeout=5, firstRequestTimeout=10, maxUnauthenticated=3)


class _Transport(StringTransport):
    """Tells its protocol the connection is lost when aborted, as TCP does."""

    def __init__(self, port: int) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.1", port))
        self.aborted = False
        self.protocol: GuardProtocol | None = None

    def abortConnection(self) -> None:
        self.aborted = True
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(ConnectionError("aborted")))


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.served: list[RpcProtocol] = []
        self.lost: list[Failure] = []

    def guard(self, tls: bool = False, limits: GuardLimits = LIMITS) -> GuardFactory:
        methods = MethodRegistry({"ping": lambda: "pong"})
        inner = RpcFactory(self.clock, methods, connected=self.served.append)
        return GuardFactory(self.clock, inner, limits, tls=tls, role="test")

    def connect(self, factory: GuardFactory, port: int = 1) -> tuple[GuardProtocol, _Transport]:
        proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", port))
        assert proto is not None
        transport = _Transport(port)
        transport.protocol = proto
        proto.makeConnection(transport)
        inner = proto.wrappedProtocol
        original = inner.connectionLost

        def lost(reason: Failure) -> None:
            self.lost.append(reason)
            original(reason)

        inner.connectionLost = lost  # type: ignore[method-assign]
        return proto, transport

    def test_firstRequestDeadline(self) -> None:
        factory = self.guard()
        _, transport = self.connect(factory)
        self.clock.advance(9.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(factory.waiting, 0)
        [reason] = self.lost
        self.assertTrue(reason.check(GuardClosed))
        self.assertIn("no request within 10 s", str(reason.value))

    def test_firstRequestAdmits(self) -> None:
        factory = self.guard()
        proto, transport = self.connect(factory)
        proto.dataReceived(wire.encodeRequest(1, "ping", []))
        self.assertEqual(factory.waiting, 0)
        self.assertIn(b"pong", transport.value())
        self.clock.advance(3600)
        self.assertFalse(transport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_partialMessageDoesNotAdmit(self) -> None:
        factory = self.guard()
        proto, transport = self.connect(factory)
        proto.dataReceived(wire.encodeRequest(1, "ping", [])[:-1])
        self.clock.advance(10)
        self.assertTrue(transport.aborted)

    def test_handshakeDeadline(self) -> None:
        factory = self.guard(tls=True)
        _, transport = self.connect(factory)
        self.clock.advance(4.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertIn("TLS handshake not done within 5 s", str(self.lost[0].value))

    def test_handshakeStartsTheRequestDeadline(self) -> None:
        factory = self.guard(tls=True)
        proto, transport = self.connect(factory)
        self.clock.advance(4)
        proto.handshakeCompleted()
        self.clock.advance(9.9)
        self.assertFalse(transport.aborted)
        self.assertEqual(factory.waiting, 1)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)

    def test_capClosesTheOldest(self) -> None:
        factory = self.guard()
        connections = [self.connect(factory, port) for port in range(1, 4)]
        self.assertEqual(factory.waiting, 3)
        # an admitted connection does not count
        connections[1][0].dataReceived(wire.encodeRequest(1, "ping", []))
        self.connect(factory, 4)
        self.assertEqual([t.aborted for _, t in connections], [False, False, False])
        self.connect(factory, 5)
        self.assertEqual([t.aborted for _, t in connections], [True, False, False])
        self.assertTrue(self.lost[0].check(GuardClosed))
        self.assertEqual(factory.waiting, 3)

    def test_lostConnectionIsForgotten(self) -> None:
        factory = self.guard()
        proto, _ = self.connect(factory)
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(factory.waiting, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(factory.wrappedFactory.__class__, RpcFactory)

    def test_closedConnectionsAreCountedIntoOneLine(self) -> None:
        events: list[dict[str, object]] = []
        factory = self.guard(
            limits=GuardLimits(firstRequestTimeout=100, maxUnauthenticated=1, reportInterval=10)
        )
        factory.log = Logger(observer=events.append)  # type: ignore[arg-type]
        for port in range(100):
            self.connect(factory, port)
        self.assertEqual(len(events), 1)  # the first at once
        self.clock.advance(10)
        self.assertEqual(len(events), 2)
        self.assertEqual(events[1]["count"], 98)
        self.clock.advance(10)
        self.assertEqual(len(events), 2)
        # only the last connection's deadline is left
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_refusalOfTheWrappedFactoryIsKept(self) -> None:
        class Refusing(RpcFactory):
            def buildProtocol(self, addr: object) -> None:  # type: ignore[override]
                return None

        factory = GuardFactory(self.clock, Refusing(self.clock), LIMITS)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual(factory.waiting, 0)
