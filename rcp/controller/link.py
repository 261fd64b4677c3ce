"""
The main board's end of one satellite link: connecting, the start-up
machine, polling the agent's events, and the tunnel to the main board's
EVerest, plus the ``satellite`` implementation (link state, addresses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..everest.interface import IEverestModule
from ..halting import Haltable
from ..logtext import cut
from ..rpc import (
    CallTimeout,
    MethodRegistry,
    NotConnected,
    RemoteError,
    RpcFactory,
    RpcLimits,
    RpcProtocol,
)
from ..rtt import tcpRoundTrip
from ..summary import LinkSummary, SummaryTimer
from ..sync import TAKEN_OVER, ControllerSync, ControllerSyncCore, SyncTimings
from ..tunnel.controller import SATELLITE, ControllerTunnel
from ..tunnel.events import DEFAULT_HOLD
from ..tunnel.table import EXIT, I_AM_HERE, I_AM_READY, RETRIEVE

#: the upstream controller's pause between polls; used when the agent
#: answers empty polls at once (a C++ agent does not hold them)
POLL_INTERVAL = 0.025
#: how long ``exit`` may take when the controller stops
EXIT_TIMEOUT = 2.0


class ControllerLink(Haltable):
    """
    @param end: ends this process (or, in a simulation, restarts the
        station) with an exit code and a reason, after a loss of sync.
    """

    log = Logger()

    def __init__(
        self,
        everest: IEverestModule,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        end: Callable[[int, str], None],
        timings: SyncTimings | None = None,
        limits: RpcLimits | None = None,
        holdTime: float = DEFAULT_HOLD,
        summaryInterval: float = 0.0,
    ) -> None:
        """
        @param summaryInterval: seconds between one-line summaries of the
            synchronised link (0: none).
        """
        self.everest = everest
        self.clock = clock
        self.endpoint = endpoint
        self.timings = timings or SyncTimings()
        self.limits = limits or RpcLimits()
        self.holdTime = holdTime
        self._end = end
        self._proto: RpcProtocol | None = None
        self._hereCall: Deferred[Any] | None = None
        self._polling = False
        self._nextPoll: IDelayedCall | None = None
        self.synced = False
        self.ended: tuple[int, str] | None = None
        self.everestReady: Deferred[None] | None = None
        self.polls = 0
        self._takenOver: str | None = None
        self.tunnel = ControllerTunnel(everest, self._call, self._observe)
        self.summaries = SummaryTimer(clock, summaryInterval, self.log)
        self.sync = ControllerSync(
            ControllerSyncCore(
                clock=clock,
                timings=self.timings,
                connect=self.guard(self._connect),
                callHere=self.guard(self._callHere),
                cancelHere=self.guard(self._cancelHere),
                callReady=self.guard(self._callReady),
                dropConnection=self.guard(self._drop),
                linkSynced=self.guard(self._linkSynced),
                sayExit=self.guard(self._sayExit),
                end=self.guard(self._ended),
            )
        )
        self.tunnel.provide()
        self._provideSatellite()

    def start(self) -> None:
        self.sync.start()

    def halt(self) -> None:
        """
        The process dies (as on a crash or a restart of the main board): the
        connection drops at once, nothing more happens.
        """
        wasSynced, self.synced = self.synced, False
        self.halted = True
        self.summaries.stop()
        self._stopPolling()
        if not wasSynced:
            # The start-up machine's timers (i_am_here timeout, retry) die
            # with the process; its effects are no-ops from now on.
            self.sync.stop()
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.abort()

    def stop(self) -> Deferred[None]:
        """Shut down on purpose: tell a synchronised agent with ``exit``."""
        self._exitSaid: Deferred[None] = succeed(None)
        self._stopPolling()
        self.summaries.stop()
        self.sync.stop()
        return self._exitSaid

    # -- RPC plumbing -------------------------------------------------------

    def _call(self, method: str, *params: Any) -> Deferred[Any]:
        if not self.synced or self._proto is None:
            d: Deferred[Any] = Deferred()
            d.errback(NotConnected(f"{method}: the satellite link is not synchronised"))
            return d
        return self._proto.call(method, *params)

    def _connect(self) -> None:
        d = self.endpoint.connect(RpcFactory(self.clock, MethodRegistry(), self.limits))
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, proto: RpcProtocol) -> None:
        if self.halted:
            proto.abort()  # an attempt of a process that has died since
            return
        self._proto = proto
        proto.whenDisconnected().addCallback(lambda reason: self._lost(proto, reason))
        self.sync.connected()

    def _connectFailed(self, failure: Failure) -> None:
        self.sync.connectFailed(failure.getErrorMessage())

    def _lost(self, proto: RpcProtocol, reason: BaseException) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        self.synced = False
        self.summaries.stop()
        text = str(reason) or type(reason).__name__
        if self._takenOver is not None:
            text = f"{self._takenOver}: {text}"
        self.sync.lost(text)

    # -- effects of the start-up machine ------------------------------------

    def _callHere(self) -> None:
        assert self._proto is not None
        d = self._hereCall = self._proto.call(I_AM_HERE, timeout=None)
        d.addCallbacks(self._hereAnswered, self._startCallFailed)

    def _hereAnswered(self, seen: Any) -> None:
        if type(seen) is not bool:
            self.sync.callFailed(f"i_am_here answered {seen!r}, not a boolean")
            return
        self.log.info("controller: i_am_here answered {seen}", seen=seen)
        self.sync.hereAnswered(seen)

    def _startCallFailed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return  # a timed-out i_am_here, replaced by a new one
        if self._proto is None:
            return  # the connection is gone: lost() tells the machine
        self.sync.callFailed(failure.getErrorMessage())

    def _cancelHere(self) -> None:
        if self._hereCall is not None and not self._hereCall.called:
            self._hereCall.cancel()
        self._hereCall = None

    def _callReady(self) -> None:
        assert self._proto is not None
        d = self._proto.call(I_AM_READY, timeout=self.timings.here_timeout)
        d.addCallbacks(lambda _: self.sync.readyAnswered(), self._startCallFailed)

    def _drop(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            # not from inside the protocol's own dataReceived: a TLS
            # transport cannot be closed re-entrantly
            self.clock.callLater(0, proto.abort)

    def _linkSynced(self) -> None:
        self.synced = True
        self.log.info("controller: link synchronised with the agent")
        proto = self._proto
        if proto is not None:
            self.summaries.start(
                LinkSummary(
                    self.clock,
                    "controller",
                    f"the agent at {proto.peer}",
                    lambda: self.tunnel.delivered,
                    lambda: tcpRoundTrip(proto.transport),
                )
            )
        self.tunnel.subscribePush()
        self.everestReady = self.everest.signalReady()
        self._polling = True
        self._poll()

    def _sayExit(self) -> None:
        proto = self._proto
        if proto is None:
            return
        self._proto = None  # the loss that follows is ours
        self.synced = False
        d = proto.call(EXIT, timeout=EXIT_TIMEOUT)
        d.addBoth(lambda _: self.clock.callLater(0, proto.disconnect))
        # Fire in a later turn: whoever waits may stop the reactor, which
        # must not close this TLS connection from inside its dataReceived.
        self._exitSaid = d.addBoth(lambda _: deferLater(self.clock, 0, lambda: None))

    def _ended(self, code: int, reason: str) -> None:
        self.synced = False
        self.summaries.stop()
        self._stopPolling()
        self.ended = (code, reason)
        self.log.warn(
            "controller: link ended ({reason}); exit code {code}", reason=reason, code=code
        )
        self._drop()
        self._end(code, reason)

    # -- events from the agent ----------------------------------------------

    def _stopPolling(self) -> None:
        self._polling = False
        if self._nextPoll is not None and self._nextPoll.active():
            self._nextPoll.cancel()
        self._nextPoll = None

    def _poll(self) -> None:
        self._nextPoll = None
        if not self._polling or self._proto is None:
            return
        started = self.clock.seconds()
        d = self._proto.call(RETRIEVE, timeout=self.timings.poll_timeout)
        d.addCallbacks(self._polled, self._pollFailed, callbackArgs=(started,))

    def _polled(self, batch: Any, started: float) -> None:
        self.polls += 1
        try:
            count = self.tunnel.deliver(batch)
        except ValueError as e:
            self.log.error("controller: bad answer to a poll: {error}", error=str(e))
            count = 0
        if count == 0 and self.clock.seconds() - started < self.holdTime / 2:
            # The agent does not hold empty polls (a C++ agent): pace them.
            self._nextPoll = self.clock.callLater(POLL_INTERVAL, self._poll)
        else:
            self._poll()

    def _pollFailed(self, failure: Failure) -> None:
        if failure.check(RemoteError) and TAKEN_OVER in str(failure.value):
            self._takenOver = cut(str(failure.value), 200)
            self.log.error(
                "controller: losing the link to {peer}: {reason}",
                peer=self._proto.peer if self._proto is not None else "the agent",
                reason=self._takenOver,
            )
            return  # the agent closes the connection now
        if failure.check(CallTimeout):
            self.sync.pollOverdue()
        elif failure.check(ConnectionDone, ConnectionLost):
            pass  # the machine hears of it from the connection itself
        elif self._proto is not None and self._polling:
            self.log.error("controller: poll failed: {error}", error=failure.getErrorMessage())
            self._nextPoll = self.clock.callLater(1.0, self._poll)

    def _observe(self, rpcName: str, result: Any) -> None:
        if rpcName == "system_update_firmware" and result in ("Accepted", "AcceptedCanceled"):
            self.sync.disconnectExpected("firmware update accepted")
        elif rpcName == "sytem_reset":
            self.sync.disconnectExpected("reset requested")

    # -- the satellite interface ----------------------------------------------

    def _provideSatellite(self) -> None:
        self.everest.provideCommand(SATELLITE, "is_connected", lambda args: succeed(self.synced))
        self.everest.provideCommand(
            SATELLITE, "get_local_endpoint_address", lambda args: succeed(self._address("host"))
        )
        self.everest.provideCommand(
            SATELLITE, "get_remote_endpoint_address", lambda args: succeed(self._address("peer"))
        )

    def _address(self, which: str) -> str:
        proto = self._proto
        if proto is None or proto.transport is None:
            return ""
        address = proto.transport.getHost() if which == "host" else proto.transport.getPeer()
        return str(getattr(address, "host", ""))

    @property
    def localAddress(self) -> str:
        """The main board's address as the satellite sees it (for uploads)."""
        return self._address("host")
