"""
The satellite's end of the link: RPC connections in, the start-up machine,
the tunnel to the board's EVerest.

Only the connection that called ``i_am_here`` first is the controller's;
the tunnelled methods exist on that connection alone, and only after that
call, as upstream requires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ..everest.interface import IEverestModule
from ..halting import Haltable
from ..health.link import CONNECTING, ENDED, SYNCHRONISED, LinkHealth
from ..health.versions import HELLO, PING, Hello, Mismatch, Versions, VersionsError
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
        hello: Hello | None = None,
        health: LinkHealth | None = None,
        summaryInterval: float = 0.0,
    ) -> None:
        """
        @param hello: this end of the version exchange; L{None}: the agent
            offers none (as a C++ agent).
        @param health: where the link keeps its figures for C{rcp status}
            (one for the process: a reset board's new link goes on with it).
        @param summaryInterval: seconds between one-line summaries of the
            synchronised link (0: none).
        """
        self.everest = everest
        self.clock = clock
        self.limits = limits or RpcLimits()
        self._resetBoard = resetBoard
        self.queue = EventQueue(clock, self._overflowed, queueLimit, holdTime)
        self.tunnel = AgentTunnel(everest, self.queue, self._observe)
        self.hello = hello
        self.health = health or LinkHealth(clock, "controller")
        self.health.enter(CONNECTING)
        self.health.watchQueue(self.queue)
        self._answeredAt: float | None = None
        #: the controller's versions; L{None}: not known (yet), or a C++ controller
        self.peerVersions: Versions | None = None
        self.mismatches: list[Mismatch] = []
        self._hellos: dict[RpcProtocol, Versions] = {}
        self._core = AgentSyncCore(
            clock=clock,
            timings=timings or SyncTimings(),
            registerMethods=self.guard(self._registerMethods),
            linkSynced=self.guard(self._linkSynced),
            closeLink=self.guard(self._closeLink),
            resetBoard=self.guard(self._reset),
        )
        self.sync = AgentSync(self._core)
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
        if self.hello is not None:
            methods.register(HELLO, lambda versions: self._hello(proto, versions))
            methods.register(PING, lambda: True)
        proto.whenDisconnected().addCallback(lambda reason: self._lost(proto, reason))
        return proto

    def _connected(self, proto: RpcProtocol) -> None:
        self._connections.add(proto)
        self.log.info("agent: connection from {peer}", peer=proto.peer)

    def _lost(self, proto: RpcProtocol, reason: BaseException) -> None:
        self._connections.discard(proto)
        self._hellos.pop(proto, None)
        if proto is self._session:
            self.summaries.stop()
            self.log.info(
                "agent: the controller at {peer} is gone ({reason})", peer=proto.peer, reason=reason
            )
            self.sync.linkLost()

    # -- the link's own methods ---------------------------------------------

    def _hello(self, proto: RpcProtocol, versions: Any) -> dict[str, Any]:
        assert self.hello is not None
        try:
            theirs = Versions.fromWire(versions)
        except VersionsError as e:
            raise HandlerError(f"{HELLO}: {e}") from None
        mismatches = self.hello.mismatches(theirs)
        if mismatches:
            text = "; ".join(str(m) for m in mismatches)
            if self.hello.policy == "refuse":
                self.log.error(
                    "agent: version mismatch with the controller at {peer}: {text}"
                    " (versions.policy: refuse: not synchronising)",
                    peer=proto.peer,
                    text=text,
                )
                raise HandlerError(f"version mismatch (versions.policy: refuse): {text}")
            self.log.warn(
                "agent: version mismatch with the controller at {peer}: {text}",
                peer=proto.peer,
                text=text,
            )
        self._hellos[proto] = theirs
        return self.hello.ours.toWire()

    def _here(self, proto: RpcProtocol, methods: MethodRegistry) -> bool:
        if self._session is None:
            self._session, self._sessionMethods = proto, methods
            self.health.connected(proto.peer)
            self._learnController(proto)
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

    def _learnController(self, proto: RpcProtocol) -> None:
        theirs = self._hellos.get(proto)
        if self.hello is None:
            return
        if theirs is None:
            self.log.info(
                "agent: the controller did not tell its versions (a C++ controller):"
                " upstream's behaviour, poll watchdog {seconds:g} s",
                seconds=self._core.timings.poll_watchdog,
            )
            return
        self.peerVersions = theirs
        self.mismatches = self.hello.mismatches(theirs)
        self.health.peerVersions, self.health.peerIsRcp = theirs, True
        self.health.peerName = theirs.board
        self.health.mismatches = [str(m) for m in self.mismatches]
        self._core.timings = replace(self._core.timings, poll_watchdog=self.hello.liveness)
        self.log.info(
            "agent: the controller{board} runs {versions}; liveness limit {seconds:g} s",
            board=f" ({theirs.board})" if theirs.board else "",
            versions=theirs.describe(),
            seconds=self.hello.liveness,
        )

    def _ready(self, proto: RpcProtocol) -> None:
        if proto is self._session:
            self.sync.readyCalled()

    def _exit(self, proto: RpcProtocol) -> None:
        if proto is self._session:
            self.sync.exitCalled()

    def _retrieve(self) -> Deferred[str]:
        self.sync.pollArrived()
        now = self.clock.seconds()
        if self._answeredAt is not None:
            # the controller polls again as soon as it has the answer
            self.health.roundTrip(now - self._answeredAt)
            self._answeredAt = None
        self.health.polled(0)
        # A poll held when another controller takes over gets the reason,
        # a valid error answer, before the connection closes.
        d = self.queue.retrieve().addCallback(self._unlessTakenOver)
        d.addCallback(self._answered)
        return d

    def _answered(self, answer: str) -> str:
        self._answeredAt = self.clock.seconds()
        return answer

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
        self.health.enter(SYNCHRONISED)
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
        self.health.enter(ENDED, reason)
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
