"""
The limits on connections before their first request (L{rcp.rpc.guard}),
one by one, on a L{Clock}; and what a connection costs before it is
admitted.
"""

from __future__ import annotations

import ssl
import tracemalloc

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rcp import tls
from rcp.rpc import MethodRegistry, RpcFactory, RpcProtocol, wire
from rcp.rpc.guard import GuardClosed, GuardFactory, GuardLimits, GuardProtocol, IAdmission

from .common import makeStation

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


class _RecordingFactory(RpcFactory):
    """Builds RPC protocols and records them and how they were lost."""

    def __init__(self, clock: Clock, methods: MethodRegistry, case: GuardTests) -> None:
        super().__init__(clock, methods, connected=case.served.append)
        self.case = case

    def buildProtocol(self, addr: object) -> RpcProtocol:
        proto = super().buildProtocol(addr)  # type: ignore[arg-type]
        self.case.built.append(proto)
        original = proto.connectionLost

        def lost(reason: Failure = connectionDone) -> None:
            self.case.lost.append(reason)
            original(reason)

        proto.connectionLost = lost  # type: ignore[method-assign]
        return proto


class _Refusing(RpcFactory):
    """Refuses every connection, and records for whom."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.asked: list[object] = []

    def buildProtocol(self, addr: object) -> None:  # type: ignore[override]
        self.asked.append(addr)


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.served: list[RpcProtocol] = []
        self.built: list[RpcProtocol] = []
        self.lost: list[Failure] = []

    def guard(self, tls: bool = False, limits: GuardLimits = LIMITS) -> GuardFactory:
        methods = MethodRegistry({"ping": lambda: "pong"})
        inner = _RecordingFactory(self.clock, methods, self)
        return GuardFactory(self.clock, inner, limits, tls=tls, role="test")

    def connect(self, factory: GuardFactory, port: int = 1) -> tuple[GuardProtocol, _Transport]:
        proto = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", port))
        assert proto is not None
        transport = _Transport(port)
        transport.protocol = proto
        proto.makeConnection(transport)
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

    def test_plainIsBuiltAtOnce(self) -> None:
        """On a plain link the protocol inside is made with the connection."""
        factory = self.guard()
        proto, _ = self.connect(factory)
        [inner] = self.built
        self.assertIs(proto.wrappedProtocol, inner)
        self.assertEqual(self.served, [inner])  # it reports the connection

    def test_tlsIsBuiltAtTheFirstBytes(self) -> None:
        factory = self.guard(tls=True)
        proto, transport = self.connect(factory)
        self.assertEqual(self.built, [])
        self.assertIsNone(proto.wrappedProtocol)
        self.assertEqual(factory.waiting, 1)
        proto.dataReceived(wire.encodeRequest(1, "ping", []))
        [inner] = self.built
        self.assertIs(proto.wrappedProtocol, inner)
        self.assertIs(inner.transport, proto)
        # built for the peer's address, connected, and given the bytes
        self.assertEqual(inner.peer, "192.0.2.1:1")
        self.assertIn(b"pong", transport.value())

    def test_idleTlsConnectionIsClosedWithNothingBuilt(self) -> None:
        factory = self.guard(tls=True)
        proto, transport = self.connect(factory)
        self.clock.advance(5)
        self.assertTrue(transport.aborted)
        self.assertEqual(factory.waiting, 0)
        self.assertEqual(self.built, [])
        self.assertIsNone(proto.wrappedProtocol)

    def test_innerProtocolSeesTheTransportsInterfaces(self) -> None:
        for secure in (False, True):
            proto, _ = self.connect(self.guard(tls=secure))
            proto.dataReceived(wire.encodeRequest(1, "ping", []))
            self.assertTrue(ITransport.providedBy(proto))
            self.assertTrue(IAdmission.providedBy(proto))

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
        proto, transport = self.connect(factory)
        proto.dataReceived(b"\x94")  # a handshake begun (not finished)
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
        [reason] = self.lost
        self.assertTrue(reason.check(GuardClosed))
        self.assertEqual(factory.waiting, 3)

    def test_lostConnectionIsForgotten(self) -> None:
        factory = self.guard(tls=True)
        proto, _ = self.connect(factory)
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(factory.waiting, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.built, [])

    def test_lostConnectionIsPassedOn(self) -> None:
        factory = self.guard()
        proto, _ = self.connect(factory)
        proto.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(factory.waiting, 0)
        [reason] = self.lost
        self.assertTrue(reason.check(ConnectionError))
        self.assertIsNone(proto.wrappedProtocol)

    def test_releasedOnEveryLoss(self) -> None:
        released: list[None] = []
        factory = GuardFactory(
            self.clock,
            _RecordingFactory(self.clock, MethodRegistry(), self),
            LIMITS,
            tls=True,
            released=lambda: released.append(None),
        )
        idle, _ = self.connect(factory, 1)
        begun, _ = self.connect(factory, 2)
        begun.dataReceived(b"\x94")
        idle.connectionLost(Failure(ConnectionError("gone")))
        begun.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(len(released), 2)

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
        factory = GuardFactory(self.clock, _Refusing(self.clock), LIMITS)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual(factory.waiting, 0)

    def test_refusalBehindTlsAtTheFirstBytes(self) -> None:
        """
        Behind TLS the wrapped factory is asked at the peer's first bytes:
        a refusal then closes the connection, as it would have at accept,
        and is not one of the guard's closures.
        """
        refusing = _Refusing(self.clock)
        asked = refusing.asked
        events: list[dict[str, object]] = []
        factory = GuardFactory(self.clock, refusing, LIMITS, tls=True)
        factory.log = Logger(observer=events.append)  # type: ignore[arg-type]
        proto, transport = self.connect(factory)
        self.assertEqual(asked, [])
        proto.dataReceived(wire.encodeRequest(1, "ping", []))
        self.assertEqual(asked, [IPv4Address("TCP", "192.0.2.1", 1)])
        self.assertTrue(transport.aborted)
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(proto.wrappedProtocol)
        self.assertEqual(factory.waiting, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # bytes still in the same read are dropped, the factory is not asked again
        proto.dataReceived(b"more")
        self.assertEqual(len(asked), 1)
        self.clock.advance(3600)
        self.assertEqual(events, [])


def _clientHello() -> bytes:
    """The first bytes of a TLS client."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class TlsGuardTests(SynchronousTestCase):
    """
    The guard before real TLS (OpenSSL in memory, a L{Clock}): the memory a
    connection costs before its admission, and what is logged when the
    guard closes one.

    The memory is Python's (tracemalloc).  A flood opens thousands of such
    connections; before the inner protocol was built lazily each cost some
    150 KiB (the RPC framer's unpacker alone over 100 KiB), freed only by
    the cyclic garbage collector.
    """

    COUNT = 200

    def setUp(self) -> None:
        station = makeStation(self, ("satellite-1",))
        credentials = tls.loadCredentials(
            str(station / "ca.pem"),
            str(station / "satellite-1.pem"),
            str(station / "satellite-1.key"),
        )
        self.clock = Clock()
        self.factory = GuardFactory(
            self.clock,
            tls.serverFactory(credentials, RpcFactory(self.clock)),
            GuardLimits(handshakeTimeout=5, maxUnauthenticated=self.COUNT),
            tls=True,
        )
        self.events = EventLoggingObserver()
        globalLogPublisher.addObserver(self.events)
        self.addCleanup(globalLogPublisher.removeObserver, self.events)

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def begin(self, port: int = 1) -> tuple[GuardProtocol, _Transport]:
        """A connection whose client has sent its ClientHello."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", port))
        assert proto is not None
        transport = _Transport(port)
        transport.protocol = proto
        proto.makeConnection(transport)
        proto.dataReceived(_clientHello())
        return proto, transport

    def test_handshakeCutShortByTheGuard(self) -> None:
        """
        The guard's deadline ends handshakes begun: TLS passes on its own
        reason, yet only the guard's counted lines are logged.
        """
        for port in range(3):
            self.begin(port)
        self.clock.advance(5)
        self.clock.advance(10)
        texts = self.texts()
        self.assertEqual([t for t in texts if "TLS handshake failed" in t], [])
        self.assertEqual(len([t for t in texts if "unauthenticated connection" in t]), 2)
        self.assertIn("closed 2 unauthenticated connection(s)", texts[-1])

    def test_handshakeCutShortByThePeerIsLogged(self) -> None:
        proto, _ = self.begin()
        proto.connectionLost(Failure(ConnectionLost("gone")))
        [text] = [t for t in self.texts() if "TLS handshake failed" in t]
        self.assertIn("192.0.2.1:1", text)

    def perConnection(
        self, first: bytes
    ) -> tuple[float, list[tuple[GuardProtocol, StringTransport]]]:
        """Bytes per connection that has received C{first}."""
        kept: list[tuple[GuardProtocol, StringTransport]] = []
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for port in range(self.COUNT):
            proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", port))
            assert proto is not None
            transport = StringTransport()
            proto.makeConnection(transport)
            if first:
                proto.dataReceived(first)
            kept.append((proto, transport))
        after = tracemalloc.get_traced_memory()[0]
        return (after - before) / self.COUNT, kept

    def test_idleConnection(self) -> None:
        cost, kept = self.perConnection(b"")
        self.assertEqual({p.wrappedProtocol for p, _ in kept}, {None})
        self.assertLess(cost, 4 << 10)

    def test_handshakeBegun(self) -> None:
        """TLS is built and answers; the RPC protocol buffers nothing yet."""
        cost, kept = self.perConnection(_clientHello())
        for proto, transport in kept:
            self.assertIsInstance(proto.wrappedProtocol, TLSMemoryBIOProtocol)
            self.assertTrue(transport.value().startswith(b"\x16\x03"))  # the ServerHello
        self.assertLess(cost, 32 << 10)
