"""
msgpack-rpc over one stream connection, both ways: I/O only.

L{RpcProtocol} turns bytes into calls of L{MethodRegistry} handlers and
L{RpcProtocol.call} into bytes; it knows nothing about what the methods mean
or about the start-up of a link.  It defends itself: broken input, a silent
or slow peer and a peer that stops reading all end in an error response or
in closing this one connection, never in an exception that reaches the
reactor or in a caller that waits forever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from types import CoroutineType
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from ..untrusted import brief, cut
from . import wire
from .guard import GuardClosed, IAdmission, admissionOf
from .methods import MethodRegistry

#: how much of a peer's error text a L{RemoteError} keeps
ERROR_TEXT_LIMIT = 1000


class RpcError(Exception):
    """Base of the errors a call's Deferred fails with."""


class RemoteError(RpcError):
    """
    The peer answered with an error.

    @ivar error: the error value exactly as sent (rpclib sends a string, any
        msgpack value is allowed).
    """

    def __init__(self, error: Any) -> None:
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        # the peer's value, of any size and depth: cut, never raising
        error = self.error
        return cut(error, ERROR_TEXT_LIMIT) if isinstance(error, str) else brief(error)


class CallTimeout(RpcError):
    """No response arrived within the call's timeout."""


class NotConnected(RpcError):
    """The connection is closed; nothing was sent."""


class EncodeError(RpcError):
    """A parameter has no msgpack form; nothing was sent."""


class HandlerError(Exception):
    """
    Raise this from a handler to answer with C{error} exactly as given,
    instead of rpclib's "threw an exception" text.
    """

    def __init__(self, error: Any) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """
    How much one connection may cost, and how long its peer may take.

    @ivar maxMessageSize: bytes; a larger incoming message ends the
        connection.
    @ivar callTimeout: seconds a call waits for its response by default;
        L{None}: no default timeout.
    @ivar frameTimeout: seconds a started message may take to arrive
        completely (a peer sending a byte a minute).
    @ivar writeStallTimeout: seconds the peer may leave our responses
        unread while they pile up.
    @ivar maxConcurrentRequests: incoming requests (and notifications)
        being handled at once; beyond it, reading from this peer pauses.
    @ivar abandonedMemory: how many timed-out or cancelled msgids are
        remembered, so their late responses are dropped quietly.
    """

    maxMessageSize: int = wire.DEFAULT_MAX_MESSAGE_SIZE
    callTimeout: float | None = 30.0
    frameTimeout: float = 30.0
    writeStallTimeout: float = 60.0
    maxConcurrentRequests: int = 256
    abandonedMemory: int = 4096


_DEFAULT: Any = object()


def describePeer(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _Pending:
    method: str
    deferred: Deferred[Any]
    #: clock.seconds() by which the answer must come, or None
    deadline: float | None
    timeout: float | None


def _peerName(transport: object) -> str | None:
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    certificate = getPeerCertificate() if getPeerCertificate is not None else None
    if certificate is None:
        return None
    cn = certificate.get_subject().commonName
    return str(cn) if cn is not None else None


def _innermost(transport: Any) -> IConsumer:
    # TLSMemoryBIOProtocol (a ProtocolWrapper) holds loseConnection() back
    # for as long as any producer is registered with it, so a TLS link
    # closed with transport.loseConnection() (ClientService.stopService
    # does that) would never close.  The TCP transport underneath only waits
    # for a paused producer, and its write buffer is where a peer that stops
    # reading shows anyway: watch that one.
    while isinstance(transport, ProtocolWrapper) and transport.transport is not None:
        transport = transport.transport
    consumer: IConsumer = transport
    return consumer


def _tlsReason(reason: Failure) -> str:
    # OpenSSL errors are lists of (library, function, reason) tuples.
    value = reason.value
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][0], tuple):
        return "; ".join(str(entry[-1]) for entry in args[0])
    return reason.getErrorMessage()


@implementer(IPushProducer, IHandshakeListener)
class RpcProtocol(Protocol):
    """
    One msgpack-rpc connection; either side may call the other.

    @param clock: time source for timeouts.
    @param methods: what the peer may call here.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        methods: MethodRegistry | None = None,
        limits: RpcLimits = RpcLimits(),
        onConnect: Callable[[RpcProtocol], None] | None = None,
    ) -> None:
        self.clock = clock
        self.methods = methods if methods is not None else MethodRegistry()
        self.limits = limits
        self._onConnect = onConnect
        self.peer = "(not connected)"
        self.connected = False
        self._framer = wire.Framer(limits.maxMessageSize)
        self._nextMsgid = 1
        self._pending: dict[int, _Pending] = {}
        # (deadline, msgid) of calls with a timeout, a heap; entries of
        # answered calls are dropped lazily.  One timer, for the earliest.
        self._deadlines: list[tuple[float, int]] = []
        self._timedCalls = 0
        self._deadlineTimer: IDelayedCall | None = None
        self._abandoned: dict[int, None] = {}
        self._inflight = 0
        self._pausedFor: set[str] = set()
        # complete messages read but not handled yet (reading is paused)
        self._backlog: deque[bytes] = deque()
        self._dispatching = False
        self._consumer: IConsumer | None = None
        self._frameTimer: IDelayedCall | None = None
        self._stallTimer: IDelayedCall | None = None
        self._closeTimer: IDelayedCall | None = None
        self._closing = False
        # closing once the requests being handled are answered
        self._draining = False
        self._lostWaiters: list[Deferred[BaseException]] = []
        self._lostReason: BaseException | None = None
        self._tls = False
        self._handshakeDone = False
        # the guard of an unauthenticated connection, until the first message
        self._admission: IAdmission | None = None
        #: the common name of the peer's certificate once TLS is established
        self.peerIdentity: str | None = None

    # -- IProtocol ---------------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.connected = True
        self.peer = describePeer(self.transport.getPeer())
        self._admission = admissionOf(self.transport)
        # Over TLS, the peer is who it claims only once the handshake is done.
        self._tls = ISSLTransport.providedBy(self.transport)
        # The transport tells us when the peer stops reading our writes.
        self._consumer = _innermost(self.transport)
        self._consumer.registerProducer(self, True)
        # Small messages go out at once: Nagle's algorithm and the peer's
        # delayed ACK would hold a lone event back by ~40 ms.
        setNoDelay = getattr(self._consumer, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        if not self._tls and self._onConnect is not None:
            self._onConnect(self)

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: the TLS peer proved its identity."""
        if getattr(self.transport, "disconnecting", False):
            # Twisted up to 25.5 (the boards' Yocto images) reports the
            # handshake even when the peer's name did not verify and it
            # aborted the connection: connectionLost logs that failure.
            return
        self._handshakeDone = True
        self.peerIdentity = _peerName(self.transport)
        if self._admission is not None:
            self._admission.handshakeCompleted()
        self.log.info(
            "{peer}: TLS established with {identity}", peer=self.peer, identity=self.peerIdentity
        )
        if self._onConnect is not None and self.connected:
            self._onConnect(self)

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._draining:
            return
        try:
            frames = self._framer.feed(data)
        except wire.FramingError as e:
            # The messages before the bad bytes came first: they are still
            # handled and answered, then the connection closes.
            self._backlog.extend(e.frames)
            self._endInput(str(e))
            return
        if frames and self._admission is not None:
            self._admission.messageReceived()
            self._admission = None
        self._backlog.extend(frames)
        self._dispatch()
        if not self._closing:
            self._watchPartialFrame(progress=bool(frames))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        admission, self._admission = self._admission, None
        if reason.check(GuardClosed) or (admission is not None and admission.closedFor):
            pass  # the guard counts these into its own log lines
        elif self._tls and not self._handshakeDone:
            self.log.warn(
                "{peer}: TLS handshake failed: {reason}",
                peer=self.peer,
                reason=_tlsReason(reason),
            )
        self.connected = False
        self._closing = True
        self._draining = False
        self._backlog.clear()
        for timer in (self._frameTimer, self._stallTimer, self._closeTimer, self._deadlineTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._frameTimer = self._stallTimer = self._closeTimer = self._deadlineTimer = None
        self._deadlines = []
        self._timedCalls = 0
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.deferred.errback(reason)
        lost = reason.value if reason.value is not None else ConnectionDone()
        self._lostReason = lost
        waiters, self._lostWaiters = self._lostWaiters, []
        for d in waiters:
            d.callback(lost)

    # -- IPushProducer: the transport's write buffer -------------------------

    def pauseProducing(self) -> None:
        # Our writes pile up: the peer is not reading.  Stop reading its
        # requests (so we make no more answers) and give it a deadline.
        # During a TLS handshake, writes wait for the handshake, which needs
        # reading: only the deadline applies then.
        if self._handshakeDone or not self._tls:
            self._pauseReading("write")
        if self._stallTimer is None:
            self._stallTimer = self.clock.callLater(
                self.limits.writeStallTimeout, self._writeStalled
            )

    def resumeProducing(self) -> None:
        if self._stallTimer is not None:
            if self._stallTimer.active():
                self._stallTimer.cancel()
            self._stallTimer = None
        if getattr(self._consumer, "disconnecting", False):
            # loseConnection() came while we were paused: a TCP transport
            # closes only once its paused producer goes away.
            assert self._consumer is not None
            self._consumer.unregisterProducer()
            return
        self._resumeReading("write")

    def stopProducing(self) -> None:
        pass

    # -- public API ---------------------------------------------------------

    def call(self, method: str, *params: Any, timeout: float | None = _DEFAULT) -> Deferred[Any]:
        """
        Call C{method} on the peer.

        @param timeout: seconds to wait for the response; the default is
            L{RpcLimits.callTimeout}, L{None} waits as long as the
            connection lasts.
        @return: a Deferred that fires with the result, or fails with
            L{RemoteError}, L{CallTimeout}, L{NotConnected},
            L{EncodeError} or the reason the connection was lost.
            Cancelling it abandons the call.
        """
        if not self.connected or self._closing or self._draining:
            return _failed(NotConnected(f"cannot call {method}: not connected"))
        msgid = self._allocateMsgid()
        try:
            data = wire.encodeRequest(msgid, method, list(params))
        except (TypeError, ValueError, OverflowError) as e:
            return _failed(EncodeError(f"cannot encode the params of {method}: {e}"))
        d: Deferred[Any] = Deferred(lambda _: self._abandon(msgid))
        if timeout is _DEFAULT:
            timeout = self.limits.callTimeout
        deadline = None
        if timeout is not None:
            deadline = self.clock.seconds() + timeout
            self._addDeadline(deadline, msgid, timeout)
        self._pending[msgid] = _Pending(method, d, deadline, timeout)
        self._write(data)
        return d

    def notify(self, method: str, *params: Any) -> None:
        """
        Send a notification (no response).

        @raise NotConnected: the connection is closed.
        @raise EncodeError: a parameter has no msgpack form.
        """
        if not self.connected or self._closing or self._draining:
            raise NotConnected(f"cannot notify {method}: not connected")
        try:
            data = wire.encodeNotification(method, list(params))
        except (TypeError, ValueError, OverflowError) as e:
            raise EncodeError(f"cannot encode the params of {method}: {e}") from None
        self._write(data)

    def whenDisconnected(self) -> Deferred[BaseException]:
        """
        A new Deferred that fires, once the connection is lost, with the
        exception that ended it (L{ConnectionDone} for a clean close).
        """
        d: Deferred[BaseException] = Deferred()
        if self._lostReason is not None:
            d.callback(self._lostReason)
        else:
            self._lostWaiters.append(d)
        return d

    def disconnect(self) -> None:
        """
        Close the connection after what is written so far; abort it if
        that takes longer than L{RpcLimits.writeStallTimeout} (a peer that
        does not read, or never answers a TLS close).
        """
        if self.transport is not None and not self._closing:
            self._closing = True
            if self._closeTimer is None:
                self._closeTimer = self.clock.callLater(self.limits.writeStallTimeout, self.abort)
            self.transport.loseConnection()

    def abort(self) -> None:
        """Close the connection at once, dropping unsent data."""
        self._closing = True
        # Once lost, there is nothing to abort (a TLS transport would raise).
        if self.transport is not None and self.connected:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    @property
    def pendingCalls(self) -> int:
        return len(self._pending)

    # -- incoming messages --------------------------------------------------

    def _dispatch(self) -> None:
        # Handle complete messages in order, none while reading is paused:
        # however many requests one read brought, no more are started than
        # the limits allow.
        if self._dispatching:
            return  # a call further up the stack is in the loop below
        self._dispatching = True
        try:
            while self._backlog and not self._pausedFor and not self._closing:
                self._handleFrame(self._backlog.popleft())
        finally:
            self._dispatching = False
        self._closeIfAnswered()

    def _handleFrame(self, frame: bytes) -> None:
        try:
            message = wire.decode(frame)
        except wire.BadMessage as e:
            self._badMessage(e)
            return
        if type(message) is wire.Request:
            self._handleRequest(message)
        elif type(message) is wire.Response:
            self._handleResponse(message)
        else:
            self._handleNotification(message)  # type: ignore[arg-type]

    def _handleRequest(self, request: wire.Request) -> None:
        msgid, name, params = request.msgid, request.method, request.params
        method = self.methods.get(name)
        if method is None:
            self._respond(msgid, wire.noSuchFunction(name, len(params)), None)
            return
        if not method.accepts(len(params)):
            argc = len(params)
            takes = method.minArgs if argc < method.minArgs else method.maxArgs
            assert takes is not None
            self._respond(msgid, wire.wrongArgumentCount(name, sent=argc, takes=takes), None)
            return
        self._requestStarted()
        argc = len(params)
        try:
            result = method.handler(*params)
        except BaseException:
            result = Failure()
        if isinstance(result, Failure):
            self._handlerFailed(result, msgid, name, argc)
        elif isinstance(result, Deferred) or type(result) is CoroutineType:
            d = result if isinstance(result, Deferred) else Deferred.fromCoroutine(result)
            d.addCallbacks(
                self._answered,
                self._handlerFailed,
                callbackArgs=(msgid, name, argc),
                errbackArgs=(msgid, name, argc),
            )
        else:
            self._answered(result, msgid, name, argc)

    def _answered(self, result: Any, msgid: int, name: str, argc: int) -> None:
        try:
            data = wire.encodeResponse(msgid, None, result)
        except (TypeError, ValueError, OverflowError) as e:
            self.log.error(
                "{peer}: result of {method} cannot be encoded: {error}",
                peer=self.peer,
                method=name,
                error=str(e),
            )
            data = wire.encodeResponse(
                msgid, wire.handlerFailed(name, argc, f"result cannot be encoded: {e}"), None
            )
        # Resuming may handle queued requests: their answers come after.
        try:
            self._write(data)
        finally:
            self._requestDone()

    def _handlerFailed(self, failure: Failure, msgid: int, name: str, argc: int) -> None:
        if failure.check(HandlerError):
            error = failure.value.error  # type: ignore[union-attr]
            if error is None:
                # A nil error reads as success to every msgpack-rpc client.
                error = wire.handlerFailed(name, argc, _exceptionText(failure))
        elif failure.check(RecursionError):
            # arguments nested too deep for the handler: bad input, not a bug
            self.log.warn(
                "{peer}: {method} refused arguments nested too deep", peer=self.peer, method=name
            )
            error = wire.handlerFailed(name, argc, "arguments nested too deep")
        else:
            self.log.failure(
                "{peer}: {method} with {argc} arg(s) failed",
                failure,
                peer=self.peer,
                method=name,
                argc=argc,
            )
            error = wire.handlerFailed(name, argc, _exceptionText(failure))
        try:
            data = wire.encodeResponse(msgid, error, None)
        except (TypeError, ValueError, OverflowError):
            data = wire.encodeResponse(msgid, wire.handlerFailed(name, argc, repr(error)), None)
        try:
            self._write(data)
        finally:
            self._requestDone()

    def _requestStarted(self) -> None:
        self._inflight += 1
        if self._inflight >= self.limits.maxConcurrentRequests:
            self._pauseReading("inflight")

    def _requestDone(self) -> None:
        self._inflight -= 1
        if self._inflight < self.limits.maxConcurrentRequests:
            self._resumeReading("inflight")
        self._closeIfAnswered()

    def _handleResponse(self, response: wire.Response) -> None:
        pending = self._pending.pop(response.msgid, None)
        if pending is None:
            if self._abandoned.pop(response.msgid, False) is None:
                self.log.debug(
                    "{peer}: late response to abandoned call {msgid} dropped",
                    peer=self.peer,
                    msgid=response.msgid,
                )
                return
            self._violation(f"response to msgid {response.msgid}, which was never sent")
            return
        if pending.deadline is not None:
            self._untimed()
        if response.error is None:
            pending.deferred.callback(response.result)
        else:
            pending.deferred.errback(RemoteError(response.error))

    def _handleNotification(self, notification: wire.Notification) -> None:
        name, params = notification.method, notification.params
        method = self.methods.get(name)
        if method is None or not method.accepts(len(params)):
            self.log.warn(
                "{peer}: ignored notification {method} with {argc} arg(s): no such method",
                peer=self.peer,
                method=cut(name),
                argc=len(params),
            )
            return
        self._requestStarted()
        d = maybeDeferred(method.handler, *params)
        d.addErrback(self._notificationFailed, name)
        d.addBoth(lambda _: self._requestDone())

    def _notificationFailed(self, failure: Failure, name: str) -> None:
        if failure.check(HandlerError, RecursionError):
            # the handler refused the peer's params: bad input, not a bug
            value = failure.value
            error = value.error if isinstance(value, HandlerError) else "params nested too deep"
            self.log.warn(
                "{peer}: notification {method} refused: {error}",
                peer=self.peer,
                method=name,
                error=cut(error) if isinstance(error, str) else brief(error),
            )
        else:
            self.log.failure(
                "{peer}: notification {method} failed", failure, peer=self.peer, method=name
            )

    def _badMessage(self, e: wire.BadMessage) -> None:
        if e.msgid is None:
            self._violation(e.problem)
            return
        self.log.warn(
            "{peer}: malformed request {msgid} answered with an error: {problem}",
            peer=self.peer,
            msgid=e.msgid,
            problem=e.problem,
        )
        self._respond(e.msgid, f"rcp: malformed request: {e.problem}", None)

    # -- time and flow ------------------------------------------------------

    def _watchPartialFrame(self, progress: bool) -> None:
        # While we do not read, the peer cannot finish its message: no timer.
        if self._framer.pending == 0 or self._pausedFor or self._draining:
            if self._frameTimer is not None:
                self._frameTimer.cancel()
                self._frameTimer = None
            return
        if progress and self._frameTimer is not None:
            self._frameTimer.reset(self.limits.frameTimeout)
        elif self._frameTimer is None:
            self._frameTimer = self.clock.callLater(self.limits.frameTimeout, self._frameTimedOut)

    def _frameTimedOut(self) -> None:
        self._frameTimer = None
        self._violation(
            f"a message stayed incomplete for {self.limits.frameTimeout:g} s"
            f" ({self._framer.pending} bytes received)"
        )

    def _writeStalled(self) -> None:
        self._stallTimer = None
        self.log.warn(
            "{peer}: peer has not read our data for {timeout} s; closing the connection",
            peer=self.peer,
            timeout=self.limits.writeStallTimeout,
        )
        self.abort()

    def _pauseReading(self, reason: str) -> None:
        if not self._pausedFor and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._pausedFor.add(reason)
        self._watchPartialFrame(progress=False)

    def _resumeReading(self, reason: str) -> None:
        if reason not in self._pausedFor:
            return
        self._pausedFor.discard(reason)
        if self._pausedFor or self._closing:
            return
        # Messages read before the pause come first; they may pause again.
        self._dispatch()
        if (
            not self._pausedFor
            and not self._closing
            and not self._draining
            and self.transport is not None
        ):
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._watchPartialFrame(progress=False)

    def _addDeadline(self, deadline: float, msgid: int, timeout: float) -> None:
        heappush(self._deadlines, (deadline, msgid))
        self._timedCalls += 1
        timer = self._deadlineTimer
        if timer is None:
            self._deadlineTimer = self.clock.callLater(timeout, self._expireCalls)
        elif deadline < timer.getTime():
            timer.reset(timeout)
        elif len(self._deadlines) > 2 * self._timedCalls + 64:
            # answered calls' entries: drop them in one go
            pending = self._pending
            self._deadlines = [
                (t, m)
                for t, m in self._deadlines
                if (p := pending.get(m)) is not None and p.deadline == t
            ]
            heapify(self._deadlines)

    def _untimed(self) -> None:
        # A call with a deadline left: with none left, no timer either.
        self._timedCalls -= 1
        if self._timedCalls == 0:
            self._deadlines = []
            if self._deadlineTimer is not None:
                self._deadlineTimer.cancel()
                self._deadlineTimer = None

    def _expireCalls(self) -> None:
        self._deadlineTimer = None
        now = self.clock.seconds()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now and not self._closing:
            deadline, msgid = heappop(deadlines)
            pending = self._pending.get(msgid)
            if pending is None or pending.deadline != deadline:
                continue  # answered, or the msgid now belongs to a later call
            del self._pending[msgid]
            self._timedCalls -= 1
            self._remember(msgid)
            pending.deferred.errback(
                CallTimeout(
                    f"{pending.method}: no response from {self.peer} within {pending.timeout:g} s"
                )
            )
            deadlines = self._deadlines  # an errback may have emptied it
        if self._timedCalls == 0:
            self._deadlines = []
        elif deadlines and self._deadlineTimer is None and not self._closing:
            self._deadlineTimer = self.clock.callLater(
                max(0.0, deadlines[0][0] - now), self._expireCalls
            )

    def _abandon(self, msgid: int) -> None:
        # Deferred canceller: the caller gave up on this call.
        pending = self._pending.pop(msgid, None)
        if pending is not None:
            if pending.deadline is not None:
                self._untimed()
            self._remember(msgid)

    def _remember(self, msgid: int) -> None:
        self._abandoned[msgid] = None
        if len(self._abandoned) > self.limits.abandonedMemory:
            del self._abandoned[next(iter(self._abandoned))]

    # -- plumbing -----------------------------------------------------------

    def _allocateMsgid(self) -> int:
        msgid = self._nextMsgid
        while msgid in self._pending:
            msgid = (msgid + 1) % wire.MSGID_MODULUS
        self._nextMsgid = (msgid + 1) % wire.MSGID_MODULUS
        self._abandoned.pop(msgid, None)
        return msgid

    def _respond(self, msgid: int, error: Any, result: Any) -> None:
        self._write(wire.encodeResponse(msgid, error, result))

    def _write(self, data: bytes) -> None:
        if self.connected and self.transport is not None:
            self.transport.write(data)

    def _violation(self, problem: str) -> None:
        # What came after the violation is dropped unread.
        self._backlog.clear()
        self._endInput(problem)

    def _endInput(self, problem: str) -> None:
        # Nothing more is read from this peer.  The requests it sent before
        # the problem are still answered, then the connection closes after
        # those answers; within writeStallTimeout, else it is aborted.
        self.log.warn(
            "{peer}: protocol violation, closing the connection: {problem}",
            peer=self.peer,
            problem=problem,
        )
        if self._closing or self._draining:
            return
        self._draining = True
        if self._frameTimer is not None:
            self._frameTimer.cancel()
            self._frameTimer = None
        self._closeTimer = self.clock.callLater(self.limits.writeStallTimeout, self.abort)
        self._dispatch()
        self._closeIfAnswered()

    def _closeIfAnswered(self) -> None:
        if self._draining and not self._backlog and not self._inflight and not self._closing:
            self._closing = True
            if self.transport is not None and self.connected:
                self.transport.loseConnection()


def _exceptionText(failure: Failure) -> str:
    text = str(failure.value)
    return text if text else type(failure.value).__name__


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


class RpcFactory(Factory):
    """
    Builds an L{RpcProtocol} per connection, all sharing one method table.

    @param connected: called with each new protocol once its connection is
        made (after the TLS handshake when TLS is used).
    """

    protocol = RpcProtocol
    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        methods: MethodRegistry | None = None,
        limits: RpcLimits = RpcLimits(),
        connected: Callable[[RpcProtocol], None] | None = None,
    ) -> None:
        self.clock = clock
        self.methods = methods if methods is not None else MethodRegistry()
        self.limits = limits
        self._connected = connected

    def buildProtocol(self, addr: IAddress | None) -> RpcProtocol:
        proto = RpcProtocol(self.clock, self.methods, self.limits, self._connected)
        proto.factory = self
        return proto


__all__ = [
    "CallTimeout",
    "CancelledError",
    "EncodeError",
    "HandlerError",
    "NotConnected",
    "RemoteError",
    "RpcError",
    "RpcFactory",
    "RpcLimits",
    "RpcProtocol",
]
