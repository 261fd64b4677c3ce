"""
What a connection may cost before it has shown who it is.

The agent listens for its controller, and anyone on the network can open
connections to it.  L{GuardFactory} wraps the listening factory (outside
TLS, on the raw stream) and bounds every connection that is not admitted
yet:

  - the TLS handshake must complete within C{handshakeTimeout} seconds;
  - the first message must arrive within C{firstRequestTimeout} seconds
    after that (after the connection, on a plain link);
  - at most C{maxUnauthenticated} connections wait for admission at once;
    one more closes the I{oldest} waiting one, so a flood of idle sockets
    costs the flooder its own sockets and never locks out the controller,
    which passes through in milliseconds.

A connection is admitted once its first message arrives (after the
handshake); from then on the guard only passes bytes through.  The
protocol inside learns nothing of the guard except through L{IAdmission},
which L{admissionOf} finds on its transport chain.

Behind TLS, the protocol inside (OpenSSL's connection, the RPC protocol:
some 50 KiB a connection, 150 KiB before the RPC framer made its buffer
lazily) is built only when the peer's first bytes arrive, so an idle socket
costs a few KiB until it is closed.  A TLS server says nothing before the
client's hello, and the protocol above TLS hears of a connection only once
the handshake is done, so nothing changes for a peer that does send.  On a
plain link the protocol inside is made at once: it reports the connection
as it is made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, directlyProvides, implementer, providedBy


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """
    @ivar handshakeTimeout: seconds the TLS handshake may take.
    @ivar firstRequestTimeout: seconds from the connection (or the end of
        the handshake) to the first message.
    @ivar maxUnauthenticated: connections waiting for admission at once.
    @ivar reportInterval: seconds over which closed connections are
        counted into one log line.
    """

    handshakeTimeout: float = 5.0
    firstRequestTimeout: float = 10.0
    maxUnauthenticated: int = 64
    reportInterval: float = 10.0


class GuardClosed(ConnectionAborted):
    """The guard closed this connection before it was admitted (the reason)."""


class IAdmission(Interface):
    """The guard of one connection, told how far the peer has come."""

    closedFor: str | None = Attribute(
        "Why the guard closed this connection before its admission, or None."
        " (TLS passes its own reason for a handshake cut short, not GuardClosed.)"
    )

    def handshakeCompleted() -> None:
        """The TLS handshake is done: the peer showed a valid certificate."""

    def messageReceived() -> None:
        """A complete message arrived from the peer: the connection is admitted."""


def admissionOf(transport: Any) -> IAdmission | None:
    """The guard on C{transport}'s chain of wrappers, if there is one."""
    while transport is not None:
        if IAdmission.providedBy(transport):
            admission: IAdmission = transport
            return admission
        transport = (
            getattr(transport, "transport", None)
            if isinstance(transport, ProtocolWrapper)
            else None
        )
    return None


# stages of a connection
_HANDSHAKE = "handshake"
_FIRST = "first message"
_ADMITTED = "admitted"


@implementer(IAdmission)
class GuardProtocol(ProtocolWrapper):
    """
    One connection's guard.  Behind TLS its C{wrappedProtocol} is L{None}
    until the peer's first bytes arrive; then the wrapped factory builds it
    (a refusal closes the connection).
    """

    factory: GuardFactory
    wrappedProtocol: Any

    def __init__(self, factory: GuardFactory, addr: IAddress, wrappedProtocol: Any = None) -> None:
        super().__init__(factory, wrappedProtocol)  # type: ignore[arg-type]
        self.addr = addr
        self.stage = _HANDSHAKE if factory.tls else _FIRST
        self._timer: IDelayedCall | None = None
        self.closedFor: str | None = None
        self._refused = False

    def logPrefix(self) -> str:
        if self.wrappedProtocol is None:
            return self.__class__.__name__
        prefix: str = super().logPrefix()
        return prefix

    def makeConnection(self, transport: Any) -> None:
        Protocol.makeConnection(self, transport)
        if self.wrappedProtocol is not None:
            self._connectWrapped()

    def connectionMade(self) -> None:
        limits = self.factory.limits
        timeout = (
            limits.handshakeTimeout if self.stage == _HANDSHAKE else limits.firstRequestTimeout
        )
        self._timer = self.factory.clock.callLater(timeout, self._expired)

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is None and not self._build():
            return
        self.wrappedProtocol.dataReceived(data)

    def _build(self) -> bool:
        """Build and connect the wrapped protocol; C{False}: refused, closed."""
        if self.closedFor is not None or self._refused:
            return False
        wrapped = self.factory.wrappedFactory.buildProtocol(self.addr)
        if wrapped is None:
            # the wrapped factory refuses (it is closing): as if at accept
            self._refused = True
            self._cancelTimer()
            self.factory.refused(self)
            transport: Any = self.transport
            if transport is not None:
                transport.abortConnection()
            return False
        self.wrappedProtocol = wrapped
        self._connectWrapped()
        return True

    def _connectWrapped(self) -> None:
        # the wrapped protocol sees the interfaces of the real transport
        directlyProvides(self, providedBy(self.transport))
        self.wrappedProtocol.makeConnection(self)

    def handshakeCompleted(self) -> None:
        if self.stage != _HANDSHAKE:
            return
        self.stage = _FIRST
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.factory.limits.firstRequestTimeout)

    def messageReceived(self) -> None:
        if self.stage == _ADMITTED:
            return
        self.stage = _ADMITTED
        self._cancelTimer()
        self.factory.admitted(self)

    def close(self, why: str) -> None:
        """Close this connection at once, before its admission."""
        if self.closedFor is not None:
            return
        self.closedFor = why
        self._cancelTimer()
        self.factory.closed(self, why)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelTimer()
        self.factory.forget(self)
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None
        if wrapped is None:
            return  # the peer never sent a byte: nothing was built
        if self.closedFor is not None:
            reason = Failure(GuardClosed(self.closedFor))
        wrapped.connectionLost(reason)

    def _expired(self) -> None:
        self._timer = None
        if self.stage == _HANDSHAKE:
            self.close(f"TLS handshake not done within {self.factory.limits.handshakeTimeout:g} s")
        else:
            self.close(f"no request within {self.factory.limits.firstRequestTimeout:g} s")

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class GuardFactory(WrappingFactory):
    """
    Wraps a server factory with the limits of L{GuardLimits}.

    @param tls: the wrapped factory speaks TLS (the handshake deadline
        applies first).
    @param role: names the process in log lines.
    @param released: called when a connection has gone (see L{rcp.trim}).
    @param stopped: called when the factory stops (its last port closed).
    """

    protocol = GuardProtocol
    noisy = False
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        wrappedFactory: IProtocolFactory,
        limits: GuardLimits = GuardLimits(),
        tls: bool = False,
        role: str = "rcp",
        released: Callable[[], None] | None = None,
        stopped: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(wrappedFactory)
        self._released = released
        self._stopped = stopped
        self.clock = clock
        self.limits = limits
        self.tls = tls
        self.role = role
        # waiting for admission, oldest first (dicts keep insertion order)
        self._waiting: dict[GuardProtocol, None] = {}
        self._closedCounts: Counter[str] = Counter()
        self._reportTimer: IDelayedCall | None = None

    @property
    def waiting(self) -> int:
        """Connections waiting for admission now."""
        return len(self._waiting)

    def buildProtocol(self, addr: IAddress) -> GuardProtocol | None:  # type: ignore[override]
        wrapped = None
        if not self.tls:
            # plain: made at once (behind TLS: at the peer's first bytes)
            wrapped = self.wrappedFactory.buildProtocol(addr)
            if wrapped is None:
                return None  # the wrapped factory refuses: so do we
        while len(self._waiting) >= self.limits.maxUnauthenticated:
            oldest = next(iter(self._waiting))
            oldest.close(
                f"the oldest of {self.limits.maxUnauthenticated} unauthenticated connections"
            )
        proto = GuardProtocol(self, addr, wrapped)
        self._waiting[proto] = None
        return proto

    def registerProtocol(self, p: Any) -> None:
        pass  # L{_waiting} is all we keep

    def unregisterProtocol(self, p: Any) -> None:
        pass

    def admitted(self, proto: GuardProtocol) -> None:
        self._waiting.pop(proto, None)

    def refused(self, proto: GuardProtocol) -> None:
        """The wrapped factory built no protocol for C{proto}: it is closed."""
        self._waiting.pop(proto, None)

    def forget(self, proto: GuardProtocol) -> None:
        self._waiting.pop(proto, None)
        if self._released is not None:
            self._released()

    def closed(self, proto: GuardProtocol, why: str) -> None:
        """C{proto} is being closed for C{why}: counted into one log line."""
        self._waiting.pop(proto, None)
        first = not self._closedCounts and self._reportTimer is None
        self._closedCounts[why] += 1
        if first:
            self.log.warn(
                "{role}: closed an unauthenticated connection from {peer}: {why}",
                role=self.role,
                peer=_peer(proto),
                why=why,
            )
            self._closedCounts.clear()
        if self._reportTimer is None:
            self._reportTimer = self.clock.callLater(self.limits.reportInterval, self._report)

    def _report(self) -> None:
        self._reportTimer = None
        if not self._closedCounts:
            return
        self.log.warn(
            "{role}: closed {count} unauthenticated connection(s) in {interval:g} s: {reasons}",
            role=self.role,
            count=sum(self._closedCounts.values()),
            interval=self.limits.reportInterval,
            reasons="; ".join(f"{n} x {why}" for why, n in sorted(self._closedCounts.items())),
        )
        self._closedCounts.clear()
        self._reportTimer = self.clock.callLater(self.limits.reportInterval, self._report)

    def doStop(self) -> None:
        if self._reportTimer is not None and self._reportTimer.active():
            self._reportTimer.cancel()
        self._reportTimer = None
        if self._stopped is not None:
            self._stopped()
        super().doStop()


def _peer(proto: GuardProtocol) -> str:
    transport = proto.transport
    peer = transport.getPeer() if transport is not None else None
    host = getattr(peer, "host", None)
    return f"{host}:{getattr(peer, 'port', '?')}" if host is not None else str(peer)
