"""
The main board's end of one satellite link: connecting, the start-up
machine, polling the agent's events, and the tunnel to the main board's
EVerest, plus the ``satellite`` implementation (link state, addresses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..everest.interface import IEverestModule, makeError
from ..halting import Haltable
from ..health.link import CONNECTING, ENDED, SYNCHRONISED, LinkHealth
from ..health.versions import (
    HELLO,
    PING,
    PING_INTERVAL,
    Hello,
    Mismatch,
    Versions,
    VersionsError,
    isMissingMethod,
)
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
from ..untrusted import PeerValueError, brief, errorText

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
        hello: Hello | None = None,
        health: LinkHealth | None = None,
        summaryInterval: float = 0.0,
    ) -> None:
        """
        @param hello: this end of the version exchange; L{None}: no
            exchange, upstream's behaviour only.
        @param health: where the link keeps its figures for C{rcp status}.
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
        self.hello = hello
        self.health = health or LinkHealth(clock, "satellite")
        self._pinger: IDelayedCall | None = None
        #: the agent's versions; L{None}: not known (yet), or a C++ agent
        self.peerVersions: Versions | None = None
        #: whether the agent is rcp (answered the version exchange)
        self.peerIsRcp = False
        self.mismatches: list[Mismatch] = []
        self._helloed: RpcProtocol | None = None
        self._said: set[str] = set()
        self._versionError: dict[str, Any] | None = None
        self._takenOver: str | None = None
        self.tunnel = ControllerTunnel(everest, self._call, self._observe)
        self.summaries = SummaryTimer(clock, summaryInterval, self.log)
        self._core = ControllerSyncCore(
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
        self.sync = ControllerSync(self._core)
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
        self.health.enter(CONNECTING)
        d = self.endpoint.connect(RpcFactory(self.clock, MethodRegistry(), self.limits))
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, proto: RpcProtocol) -> None:
        if self.halted:
            proto.abort()  # an attempt of a process that has died since
            return
        self._proto = proto
        self.health.connected(proto.peer)
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
        if self.hello is not None and self._helloed is not self._proto:
            # first the versions, once per connection; i_am_here's timeout covers both
            proto = self._proto
            d = self._hereCall = proto.call(HELLO, self.hello.ours.toWire(), timeout=None)
            d.addCallbacks(
                self._helloAnswered, self._helloFailed, callbackArgs=(proto,), errbackArgs=(proto,)
            )
            return
        d = self._hereCall = self._proto.call(I_AM_HERE, timeout=None)
        d.addCallbacks(self._hereAnswered, self._startCallFailed)

    @property
    def pollTimeout(self) -> float:
        """Seconds a poll may take: upstream's with a C++ agent, the liveness limit with rcp."""
        return self._core.timings.poll_timeout

    @pollTimeout.setter
    def pollTimeout(self, seconds: float) -> None:
        self._core.timings = replace(self._core.timings, poll_timeout=seconds)

    def _sayOnce(self, level: str, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            getattr(self.log, level)("controller: {text}", text=text)

    def _helloAnswered(self, answer: Any, proto: RpcProtocol) -> None:
        if proto is not self._proto:
            return
        assert self.hello is not None
        try:
            theirs = Versions.fromWire(answer)
        except VersionsError as e:
            self.sync.callFailed(f"{HELLO} answered unusable versions: {e}")
            return
        self._helloed, self.peerVersions, self.peerIsRcp = proto, theirs, True
        self.mismatches = self.hello.mismatches(theirs)
        self.health.peerVersions, self.health.peerIsRcp = theirs, True
        self.health.peerName = theirs.board
        self.health.mismatches = [str(m) for m in self.mismatches]
        self.pollTimeout = self.hello.liveness
        self._sayOnce(
            "info",
            f"the agent{' (' + theirs.board + ')' if theirs.board else ''} runs"
            f" {theirs.describe()}; liveness limit {self.pollTimeout:g} s",
        )
        if self.mismatches:
            self._versionMismatch(theirs)
            if self.hello.policy == "refuse":
                self.sync.callFailed(
                    "versions do not match (versions.policy: refuse): "
                    + "; ".join(str(m) for m in self.mismatches)
                )
                return
        else:
            self._clearVersionError()
        self._callHere()

    def _helloFailed(self, failure: Failure, proto: RpcProtocol) -> None:
        error = failure.value.error if isinstance(failure.value, RemoteError) else None
        if isMissingMethod(error):
            if proto is not self._proto:
                return
            # a C++ agent: upstream's behaviour, timings included
            self._helloed, self.peerVersions, self.peerIsRcp = proto, None, False
            self.mismatches = []
            self.health.peerVersions, self.health.peerIsRcp = None, False
            self.health.mismatches = []
            self.pollTimeout = self.timings.poll_timeout
            self._sayOnce(
                "info",
                "the agent does not tell its versions (a C++ agent): upstream's behaviour,"
                f" poll timeout {self.pollTimeout:g} s",
            )
            self._callHere()
            return
        if failure.check(RemoteError) and proto is self._proto:
            self.sync.callFailed(f"the agent refused the link: {errorText(failure.value)}")
            return
        self._startCallFailed(failure)

    def _versionMismatch(self, theirs: Versions) -> None:
        assert self.hello is not None
        text = "; ".join(str(m) for m in self.mismatches)
        refused = self.hello.policy == "refuse"
        self._sayOnce(
            "error" if refused else "warn",
            f"version mismatch with the agent: {text}"
            + (" (versions.policy: refuse: not synchronising)" if refused else ""),
        )
        if self._versionError is not None:
            return
        self._versionError = makeError(
            "generic/VendorWarning",
            self.everest.moduleId,
            SATELLITE,
            message=f"rcp version mismatch: {text}"[:500],
            subType="rcp/VersionMismatch",
            severity="Medium",
        )
        self.everest.raiseError(SATELLITE, self._versionError)

    def _clearVersionError(self) -> None:
        raised, self._versionError = self._versionError, None
        if raised is not None:
            self.everest.clearError(SATELLITE, {**raised, "state": "ClearedByModule"})

    def _hereAnswered(self, seen: Any) -> None:
        if type(seen) is not bool:
            self.sync.callFailed(f"i_am_here answered {brief(seen)}, not a boolean")
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
        self.health.enter(SYNCHRONISED)
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
        if self.peerIsRcp:
            self._pinger = self.clock.callLater(0, self._ping)

    def _ping(self) -> None:
        """An rcp agent answers rcp_ping at once: the link's round-trip time."""
        self._pinger = None
        proto = self._proto
        if not self._polling or proto is None:
            return
        started = self.clock.seconds()

        def answered(_: object) -> None:
            self.health.roundTrip(self.clock.seconds() - started)

        d = proto.call(PING, timeout=self.pollTimeout)
        d.addCallbacks(answered, lambda f: None)
        self._pinger = self.clock.callLater(PING_INTERVAL, self._ping)

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
        self.health.enter(ENDED, reason)
        self.log.warn(
            "controller: link ended ({reason}); exit code {code}", reason=reason, code=code
        )
        self._drop()
        self._end(code, reason)

    # -- events from the agent ----------------------------------------------

    def _stopPolling(self) -> None:
        self._polling = False
        if self._pinger is not None and self._pinger.active():
            self._pinger.cancel()
        self._pinger = None
        if self._nextPoll is not None and self._nextPoll.active():
            self._nextPoll.cancel()
        self._nextPoll = None

    def _poll(self) -> None:
        self._nextPoll = None
        if not self._polling or self._proto is None:
            return
        started = self.clock.seconds()
        d = self._proto.call(RETRIEVE, timeout=self.pollTimeout)
        d.addCallbacks(self._polled, self._pollFailed, callbackArgs=(started,))

    def _polled(self, batch: Any, started: float) -> None:
        self.polls += 1
        if not self._polling:
            return  # a late answer: the link has ended, or is ending
        if not self.peerIsRcp:
            # a C++ agent answers every poll at once: each one is a round trip
            self.health.roundTrip(self.clock.seconds() - started)
        try:
            count = self.tunnel.deliver(batch)
            self.health.polled(count)
        except PeerValueError as e:
            self._violation(errorText(e))
            return
        except Exception:
            # not the agent's fault: ours, or the main board's
            self.log.failure("controller: delivering the events of a poll failed")
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
        elif failure.check(RemoteError) and self._polling:
            # an agent that cannot answer a poll cannot be polled
            self._violation(f"an error answer: {errorText(failure.value)}")
        elif self._proto is not None and self._polling:
            self.log.error("controller: poll failed: {error}", error=errorText(failure.value))
            self._nextPoll = self.clock.callLater(1.0, self._poll)

    def _violation(self, problem: str) -> None:
        """The agent answered a poll with something unusable: the link ends."""
        peer = self._proto.peer if self._proto is not None else "(gone)"
        self._stopPolling()
        self.sync.protocolViolation(f"{RETRIEVE} from the agent at {peer}: {problem}")

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
