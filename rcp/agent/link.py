"""
The satellite's end of the link: RPC connections in, the start-up machine,
the tunnel to the board's EVerest.

Only the connection that called ``i_am_here`` first is the controller's;
the tunnelled methods exist on that connection alone, and only after that
call, as upstream requires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ..everest.interface import IEverestModule
from ..halting import Haltable
from ..rpc import HandlerError, MethodRegistry, RpcLimits, RpcProtocol
from ..rtt import tcpRoundTrip
from ..summary import LinkSummary, SummaryTimer
from ..sync import TAKEN_OVER, AgentSync, AgentSyncCore, SyncTimings
from ..tunnel.agent import AgentTunnel
from ..tunnel.events import DEFAULT_HOLD, DEFAULT_LIMIT, EventQueue
from ..tunnel.table import EXIT, I_AM_HERE, I_AM_READY, RETRIEVE

#: upstream resets the board about this long after refusing a controller
RESET_DELAY = 0.25


class AgentLink(Haltable):
    """
    @param resetBoard: soft-resets this board (called with the reason); the
        agent and its EVerest side start again from scratch.
    """

    log = Logger()

    def __init__(
        self,
        everest: IEverestModule,
        clock: IReactorTime,
        resetBoard: Callable[[str], None],
        timings: SyncTimings | None = None,
        limits: RpcLimits | None = None,
        queueLimit: int = DEFAULT_LIMIT,
        holdTime: float = DEFAULT_HOLD,
        summaryInterval: float = 0.0,
    ) -> None:
        """
        @param summaryInterval: seconds between one-line summaries of the
            synchronised link (0: none).
        """
        self.everest = everest
        self.clock = clock
        self.limits = limits or RpcLimits()
        self._resetBoard = resetBoard
        self.queue = EventQueue(clock, self._overflowed, queueLimit, holdTime)
        self.tunnel = AgentTunnel(everest, self.queue, self._observe)
        self.sync = AgentSync(
            AgentSyncCore(
                clock=clock,
                timings=timings or SyncTimings(),
                registerMethods=self.guard(self._registerMethods),
                linkSynced=self.guard(self._linkSynced),
                closeLink=self.guard(self._closeLink),
                resetBoard=self.guard(self._reset),
            )
        )
        self._session: RpcProtocol | None = None
        self._sessionMethods: MethodRegistry | None = None
        self._connections: set[RpcProtocol] = set()
        self._closed = False
        self.resetReason: str | None = None
        self._takenOverBy: str | None = None
        self._resetCall: IDelayedCall | None = None
        self.everestReady: Deferred[None] | None = None
        self.summaries = SummaryTimer(clock, summaryInterval, self.log)
        self.tunnel.provide()
        self.tunnel.subscribe()

    def halt(self) -> None:
        """
        The board goes down (reset, power loss): drop every connection at
        once and do nothing more, whatever timers were still running.
        """
        self.halted = True
        self._closed = True
        self.summaries.stop()
        self.queue.close()
        for proto in list(self._connections):
            proto.abort()
        if self._resetCall is not None and self._resetCall.active():
            self._resetCall.cancel()  # the board is down already
        self._resetCall = None

    # -- connections ----------------------------------------------------------

    def factory(self) -> Factory:
        """The protocol factory to listen with."""
        return _AgentFactory(self)

    def buildProtocol(self) -> RpcProtocol | None:
        if self._closed:
            return None  # refuses the connection
        methods = MethodRegistry()
        proto = RpcProtocol(self.clock, methods, self.limits, self._connected)
        methods.register(I_AM_HERE, lambda: self._here(proto, methods))
        methods.register(I_AM_READY, lambda: self._ready(proto))
        methods.register(EXIT, lambda: self._exit(proto))
        proto.whenDisconnected().addCallback(lambda reason: self._lost(proto, reason))
        return proto

    def _connected(self, proto: RpcProtocol) -> None:
        self._connections.add(proto)
        self.log.info("agent: connection from {peer}", peer=proto.peer)

    def _lost(self, proto: RpcProtocol, reason: BaseException) -> None:
        self._connections.discard(proto)
        if proto is self._session:
            self.summaries.stop()
            self.log.info(
                "agent: the controller at {peer} is gone ({reason})", peer=proto.peer, reason=reason
            )
            self.sync.linkLost()

    # -- the link's own methods ---------------------------------------------

    def _here(self, proto: RpcProtocol, methods: MethodRegistry) -> bool:
        if self._session is None:
            self._session, self._sessionMethods = proto, methods
        elif proto is not self._session and self._session in self._connections:
            self.log.warn(
                "agent: a second controller connected from {peer} while the controller at"
                " {first} was linked: {takenOver}; the board resets (upstream rule)",
                peer=proto.peer,
                first=self._session.peer,
                takenOver=TAKEN_OVER,
            )
            self._takenOverBy = proto.peer
        seen: bool = self.sync.hereCalled()
        self.log.info("agent: i_am_here from {peer}: answered {seen}", peer=proto.peer, seen=seen)
        return seen

    def _ready(self, proto: RpcProtocol) -> None:
        if proto is self._session:
            self.sync.readyCalled()

    def _exit(self, proto: RpcProtocol) -> None:
        if proto is self._session:
            self.sync.exitCalled()

    def _retrieve(self) -> Deferred[str]:
        self.sync.pollArrived()
        # A poll held when another controller takes over gets the reason,
        # a valid error answer, before the connection closes.
        return self.queue.retrieve().addCallback(self._unlessTakenOver)

    def _unlessTakenOver(self, batch: str) -> str:
        if self._takenOverBy is not None:
            raise HandlerError(f"{TAKEN_OVER} (i_am_here from {self._takenOverBy})")
        return batch

    # -- effects of the start-up machine ------------------------------------

    def _registerMethods(self) -> None:
        assert self._sessionMethods is not None
        self.tunnel.register(self._sessionMethods)
        self._sessionMethods.register(RETRIEVE, self._retrieve)

    def _linkSynced(self) -> None:
        self.log.info("agent: link synchronised with the controller")
        session = self._session
        if session is not None:
            self.summaries.start(
                LinkSummary(
                    self.clock,
                    "agent",
                    f"the controller at {session.peer}",
                    lambda: self.queue.delivered,
                    lambda: tcpRoundTrip(session.transport),
                )
            )
        self.everestReady = self.everest.signalReady()

    def _closeLink(self) -> None:
        self._closed = True
        self.summaries.stop()
        self.queue.close()
        # after the answer that is being written now
        for proto in list(self._connections):
            self.clock.callLater(0, proto.disconnect)

    def _reset(self, reason: str) -> None:
        self.resetReason = reason
        self.log.warn("agent: resetting the board: {reason}", reason=reason)
        self._resetCall = self.clock.callLater(RESET_DELAY, self._resetBoard, reason)

    def _overflowed(self) -> None:
        self.sync.queueOverflowed()

    def _observe(self, rpcName: str, result: Any) -> None:
        # Upstream lesson: expect the disconnect only once it is certain.
        if rpcName == "system_update_firmware" and result in ("Accepted", "AcceptedCanceled"):
            self.sync.disconnectExpected("firmware update accepted")
        elif rpcName == "sytem_reset":
            self.sync.disconnectExpected("reset requested")


class _AgentFactory(Factory):
    noisy = False

    def __init__(self, link: AgentLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress) -> RpcProtocol | None:  # type: ignore[override]
        return self.link.buildProtocol()
