"""
One MQTT client connection, driven by the Twisted reactor.

paho-mqtt does the protocol; this module only runs paho's *external loop*
API from the reactor: paho's socket is added to the reactor as a reader
(and as a writer while paho has bytes to send) through paho's socket
callbacks, C{loop_read}/C{loop_write} run when the reactor says the socket
is ready, and a L{LoopingCall} runs C{loop_misc} (keepalive pings) once a
second.  No paho thread is ever started.

paho calls its own callbacks (connect, message, subscribe acknowledged,
disconnect, ...) with an internal lock held; calling back into paho from
there can deadlock.  So those callbacks only queue what happened, and the
queue is worked off after the paho call that produced it has returned.

Limitation: paho opens the TCP connection with a blocking
C{socket.create_connection} (bounded by C{connectTimeout}).  That is
immediate for a broker on the same board, which is how EVerest runs; a
remote, slow broker would block the reactor for up to that long.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from paho.mqtt.client import (
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    topic_matches_sub,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFDSet,
    IReactorTime,
    IReadDescriptor,
    IWriteDescriptor,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ...untrusted import cut

#: connection states
IDLE: Final = "idle"  # not started
CONNECTING: Final = "connecting"  # TCP connected, CONNECT sent, waiting for CONNACK
WAITING: Final = "waiting"  # between two connection attempts
CONNECTED: Final = "connected"
DISCONNECTING: Final = "disconnecting"  # disconnect() asked for, socket still open
STOPPED: Final = "stopped"  # disconnect() done, or lost without reconnecting


class IMqttReactor(IReactorFDSet, IReactorTime):
    """What L{MqttConnection} uses of the reactor: file descriptors and time."""


@dataclass(frozen=True)
class MqttMessage:
    """One message received from the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


MessageCallback = Callable[[MqttMessage], None]


class NotConnected(Exception):
    """A publication was asked for while the connection is not up."""


class SubscriptionRefused(Exception):
    """The broker refused a subscription."""


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """paho's socket as the reactor sees it."""

    def __init__(self, connection: MqttConnection, fileno: int) -> None:
        self._connection = connection
        self._fileno = fileno

    def fileno(self) -> int:
        return self._fileno

    def closed(self) -> None:
        self._fileno = -1

    def doRead(self) -> None:
        self._connection._readable()

    def doWrite(self) -> None:
        self._connection._writable()

    def connectionLost(self, reason: Failure) -> None:
        # Only when the reactor itself drops the descriptor (e.g. reactor
        # shutdown); paho notices through the socket.
        self._connection._descriptorLost(reason)

    def logPrefix(self) -> str:
        return "MQTT"


@dataclass
class _Subscription:
    qos: int
    callbacks: list[MessageCallback] = field(default_factory=list)
    acknowledged: bool = False
    waiters: list[Deferred[None]] = field(default_factory=list)


class MqttConnection:
    """
    An MQTT 3.1.1 client connection with clean sessions.

    L{start} connects and keeps trying (with a capped exponential back-off)
    until the broker answers: the broker may come up after us.  Once
    connected, a lost connection is reported to every L{whenLost} waiter; with
    C{reconnect} the connection then tries again and restores its
    subscriptions, without it the connection stays down (what an EVerest
    module does: it exits).

    @param reactor: file descriptors and time.
    @param host: the broker's address.
    @param port: the broker's port.
    @param clientId: the MQTT client id; by default a random one.
    @param keepalive: seconds; paho pings the broker when idle that long.
    @param reconnect: reconnect after a connection that was up was lost.
    @param connectTimeout: seconds for the TCP connection and for the
        broker's CONNACK.
    @param initialDelay: seconds before the second connection attempt.
    @param maxDelay: the longest pause between two attempts.
    """

    log = Logger()

    #: seconds between two runs of paho's loop_misc (keepalive)
    miscInterval = 1.0

    def __init__(
        self,
        reactor: IMqttReactor,
        host: str = "localhost",
        port: int = 1883,
        *,
        clientId: str | None = None,
        keepalive: int = 20,
        reconnect: bool = False,
        connectTimeout: float = 5.0,
        initialDelay: float = 0.5,
        maxDelay: float = 10.0,
    ) -> None:
        if initialDelay <= 0 or maxDelay < initialDelay:
            raise ValueError("need 0 < initialDelay <= maxDelay")
        self.reactor = reactor
        self.host = host
        self.port = port
        self.clientId = clientId if clientId is not None else f"rcp-{uuid.uuid4().hex[:16]}"
        self.keepalive = keepalive
        self.reconnect = reconnect
        self.connectTimeout = connectTimeout
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay

        #: one of the state constants of this module
        self.state: str = IDLE
        #: why the connection went down last (None while it never did)
        self.lostReason: str | None = None
        #: connections made so far
        self.connectionCount = 0

        client = Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.clientId,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        client.connect_timeout = connectTimeout
        client.on_socket_open = self._socketOpened
        client.on_socket_close = self._socketClosed
        client.on_socket_register_write = self._wantWrite
        client.on_socket_unregister_write = self._doneWriting
        client.on_connect = self._pahoConnected
        client.on_disconnect = self._pahoDisconnected
        client.on_message = self._pahoMessage
        client.on_subscribe = self._pahoSubscribed
        client.on_publish = self._pahoPublished
        self._client = client

        self._socket: _PahoSocket | None = None
        self._socketObject: Any = None
        self._writing = False
        self._misc: LoopingCall | None = None
        self._events: list[Callable[[], None]] = []
        self._working = False
        self._attempts = 0
        self._retry: IDelayedCall | None = None
        self._connackTimer: IDelayedCall | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self._subscribing: dict[int, str] = {}
        self._publishing: dict[int, Deferred[None]] = {}
        self._connectedWaiters: list[Deferred[None]] = []
        self._lostWaiters: list[Deferred[str]] = []
        self._disconnectWaiters: list[Deferred[None]] = []
        self._down: str | None = None  # the reason, while down after a loss

    def __repr__(self) -> str:
        return f"<MqttConnection {self.clientId} {self.host}:{self.port} {self.state}>"

    # -- public API ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def start(self) -> None:
        """Start connecting (once)."""
        if self.state != IDLE:
            raise RuntimeError(f"{self!r} started twice")
        self._client.connect_async(self.host, self.port, self.keepalive)
        self._attempt()

    def whenConnected(self) -> Deferred[None]:
        """A new Deferred that fires when the connection is (or next becomes) up."""
        if self.state == CONNECTED:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._connectedWaiters.append(d)
        return d

    def whenLost(self) -> Deferred[str]:
        """
        A new Deferred that fires with the reason text when a connection that
        was up is lost; at once if it is down now after having been up.  A
        L{disconnect} asked for is not a loss: it never fires then.
        """
        if self._down is not None:
            return succeed(self._down)
        d: Deferred[str] = Deferred()
        self._lostWaiters.append(d)
        return d

    def subscribe(
        self, topicFilter: str, callback: MessageCallback, qos: int = 2
    ) -> Deferred[None]:
        """
        Call C{callback} with every message whose topic matches C{topicFilter}
        (MQTT wildcards allowed).  The subscription is kept across
        reconnections.

        @return: a new Deferred that fires when the broker acknowledged the
            subscription; it fails with L{SubscriptionRefused}.
        """
        entry = self._subscriptions.get(topicFilter)
        if entry is None:
            entry = _Subscription(qos)
            self._subscriptions[topicFilter] = entry
            if self.state == CONNECTED:
                self._sendSubscribe(topicFilter, entry)
        entry.callbacks.append(callback)
        if entry.acknowledged:
            return succeed(None)
        d: Deferred[None] = Deferred()
        entry.waiters.append(d)
        return d

    def whenSubscribed(self, topicFilter: str) -> Deferred[None]:
        """
        A new Deferred that fires when the broker acknowledged the
        subscription C{topicFilter} (at once if it has).

        @raise KeyError: nothing subscribes C{topicFilter}.
        """
        entry = self._subscriptions[topicFilter]
        if entry.acknowledged:
            return succeed(None)
        d: Deferred[None] = Deferred()
        entry.waiters.append(d)
        return d

    def unsubscribe(self, topicFilter: str, callback: MessageCallback | None = None) -> None:
        """Stop calling C{callback} (default: every callback) for C{topicFilter}."""
        entry = self._subscriptions.get(topicFilter)
        if entry is None:
            return
        if callback is None:
            entry.callbacks.clear()
        elif callback in entry.callbacks:
            entry.callbacks.remove(callback)
        if entry.callbacks:
            return
        del self._subscriptions[topicFilter]
        if self.state == CONNECTED:
            self._client.unsubscribe(topicFilter)

    def publish(
        self, topic: str, payload: bytes, qos: int = 2, retain: bool = False
    ) -> Deferred[None]:
        """
        Publish C{payload} on C{topic}.

        @return: a new Deferred that fires when the broker took the message
            (for QoS 0: when it was written).  When the connection is lost
            first it never fires; watch L{whenLost}.
        @raise NotConnected: when the connection is not up.
        """
        if self.state != CONNECTED:
            raise NotConnected(f"cannot publish on {cut(topic)}: {self!r}")
        d: Deferred[None] = Deferred()
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(f"cannot publish on {cut(topic)}: paho error {info.rc}")
        if info.is_published():
            d.callback(None)
        else:
            self._publishing[info.mid] = d
        self._work()
        return d

    def disconnect(self) -> Deferred[None]:
        """
        Stop: no more attempts, say goodbye to the broker and close.

        @return: a new Deferred that fires when the socket is closed.
        """
        self._cancelRetry()
        self._cancelConnackTimer()
        if self.state in (IDLE, WAITING, STOPPED):
            self.state = STOPPED
            self._stopMisc()
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._disconnectWaiters.append(d)
        if self.state == DISCONNECTING:
            return d
        wasConnected = self.state == CONNECTED
        self.state = DISCONNECTING
        if wasConnected:
            self._client.disconnect()
            # a broker that does not close the socket within the timeout is
            # cut off
            self._connackTimer = self.reactor.callLater(self.connectTimeout, self._abort)
        else:
            self._abort()
        self._work()
        return d

    # -- connecting ----------------------------------------------------------

    def _attempt(self) -> None:
        self._retry = None
        self.state = CONNECTING
        self._attempts += 1
        try:
            rc = self._client.reconnect()
        except OSError as e:
            self.log.info(
                "MQTT broker {host}:{port} not reachable (attempt {attempt}): {error}",
                host=self.host,
                port=self.port,
                attempt=self._attempts,
                error=str(e) or e.__class__.__name__,
            )
            self._scheduleRetry()
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.log.warn(
                "could not send CONNECT to {host}:{port}: {rc}",
                host=self.host,
                port=self.port,
                rc=rc,
            )
            self._abort()
            return
        self._connackTimer = self.reactor.callLater(self.connectTimeout, self._connackTimeout)
        self._work()

    def _scheduleRetry(self) -> None:
        if self.state in (DISCONNECTING, STOPPED):
            return
        delay = min(self.maxDelay, self.initialDelay * 2 ** max(0, self._attempts - 1))
        self.state = WAITING
        self._retry = self.reactor.callLater(delay, self._attempt)

    def _cancelRetry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _cancelConnackTimer(self) -> None:
        if self._connackTimer is not None and self._connackTimer.active():
            self._connackTimer.cancel()
        self._connackTimer = None

    def _connackTimeout(self) -> None:
        self._connackTimer = None
        self.log.warn(
            "MQTT broker {host}:{port} did not answer CONNECT in {timeout} s",
            host=self.host,
            port=self.port,
            timeout=self.connectTimeout,
        )
        self._abort()

    def _abort(self) -> None:
        """
        Cut the connection.  The socket is shut down, not closed: paho reads
        the end of the stream in the next C{loop_read}, closes the socket and
        reports the disconnection the usual way.
        """
        self._connackTimer = None
        sock = self._socketObject
        if sock is None:
            self._finished("aborted")
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # Usually this one read sees the end; if buffered packets come
        # first, the reactor reports the socket readable again.
        self._client.loop_read()
        self._work()

    # -- paho socket callbacks (no paho lock held, run directly) --------------

    def _socketOpened(self, client: Client, userdata: Any, sock: Any) -> None:
        self._socketObject = sock
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # MQTT is small request/answer packets: without this, Nagle and
            # delayed ACKs hold a packet back ~40 ms (paho does not set it)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket = _PahoSocket(self, sock.fileno())
        self._writing = False
        self.reactor.addReader(self._socket)
        misc = LoopingCall(self._runMisc)
        misc.clock = self.reactor
        self._misc = misc
        misc.start(self.miscInterval, now=False).addErrback(self._miscFailed)

    def _socketClosed(self, client: Client, userdata: Any, sock: Any) -> None:
        descriptor, self._socket = self._socket, None
        self._socketObject = None
        self._stopMisc()
        if descriptor is None:
            return
        self.reactor.removeReader(descriptor)
        if self._writing:
            self.reactor.removeWriter(descriptor)
            self._writing = False
        descriptor.closed()

    def _wantWrite(self, client: Client, userdata: Any, sock: Any) -> None:
        if self._socket is not None and not self._writing:
            self._writing = True
            self.reactor.addWriter(self._socket)

    def _doneWriting(self, client: Client, userdata: Any, sock: Any) -> None:
        if self._socket is not None and self._writing:
            self._writing = False
            self.reactor.removeWriter(self._socket)

    def _stopMisc(self) -> None:
        misc, self._misc = self._misc, None
        if misc is not None and misc.running:
            misc.stop()

    def _miscFailed(self, failure: Failure) -> None:
        self.log.failure("MQTT keepalive loop failed", failure)

    # -- reactor side ---------------------------------------------------------

    def _readable(self) -> None:
        if self._socket is not None:
            self._client.loop_read()
        self._work()

    def _writable(self) -> None:
        if self._socket is not None:
            self._client.loop_write()
        self._work()

    def _runMisc(self) -> None:
        if self._socket is not None:
            self._client.loop_misc()
        self._work()

    def _descriptorLost(self, reason: Failure) -> None:
        self.log.info("reactor dropped the MQTT socket: {reason}", reason=reason.getErrorMessage())
        if self._socket is not None:
            self._writing = False
            self._socket = None
            self._abort()

    # -- paho protocol callbacks (paho lock held: only queue) ----------------

    def _pahoConnected(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reasonCode: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._events.append(lambda: self._connackReceived(reasonCode))

    def _pahoDisconnected(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reasonCode: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._events.append(lambda: self._finished(str(reasonCode)))

    def _pahoMessage(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self._events.append(lambda: self.log.warn("dropped a message with a topic not UTF-8"))
            return
        received = MqttMessage(topic, bytes(message.payload), message.qos, bool(message.retain))
        self._events.append(lambda: self._dispatch(received))

    def _pahoSubscribed(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasonCodes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = any(code.is_failure for code in reasonCodes)
        self._events.append(lambda: self._subscribed(mid, refused))

    def _pahoPublished(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasonCode: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._events.append(lambda: self._published(mid))

    # -- what happened -------------------------------------------------------

    def _work(self) -> None:
        """Work off what paho reported, in order; never re-entered."""
        if self._working:
            return
        self._working = True
        try:
            while self._events:
                event = self._events.pop(0)
                try:
                    event()
                except Exception:
                    self.log.failure("MQTT event handling failed")
        finally:
            self._working = False

    def _connackReceived(self, reasonCode: ReasonCode) -> None:
        self._cancelConnackTimer()
        if reasonCode.is_failure:
            self.log.warn(
                "MQTT broker {host}:{port} refused the connection: {reason}",
                host=self.host,
                port=self.port,
                reason=str(reasonCode),
            )
            return  # paho closes the socket; _finished retries
        if self.state != CONNECTING:
            return
        self.state = CONNECTED
        self._attempts = 0
        self._down = None
        self.connectionCount += 1
        self.log.info(
            "connected to MQTT broker {host}:{port} as {clientId}",
            host=self.host,
            port=self.port,
            clientId=self.clientId,
        )
        # a clean session: the broker forgot every subscription
        for topicFilter, entry in self._subscriptions.items():
            entry.acknowledged = False
            self._sendSubscribe(topicFilter, entry)
        waiters, self._connectedWaiters = self._connectedWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _finished(self, reason: str) -> None:
        """The socket is closed, for whatever reason."""
        self._cancelConnackTimer()
        self._stopMisc()
        self._subscribing.clear()
        self._publishing.clear()
        previous = self.state
        if previous in (STOPPED, WAITING, IDLE):
            return
        if previous == DISCONNECTING:
            self.state = STOPPED
            self._down = None
            self.log.info(
                "disconnected from MQTT broker {host}:{port}", host=self.host, port=self.port
            )
            waiters, self._disconnectWaiters = self._disconnectWaiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        if previous == CONNECTING:
            self.log.info(
                "MQTT connection to {host}:{port} failed before CONNACK: {reason}",
                host=self.host,
                port=self.port,
                reason=reason,
            )
            self._scheduleRetry()
            return
        # CONNECTED: a loss
        self.lostReason = self._down = reason
        self.log.warn(
            "lost the MQTT broker {host}:{port}: {reason}",
            host=self.host,
            port=self.port,
            reason=reason,
        )
        if self.reconnect:
            self._scheduleRetry()
        else:
            self.state = STOPPED
        lostWaiters, self._lostWaiters = self._lostWaiters, []
        for lost in lostWaiters:
            lost.callback(reason)

    def _sendSubscribe(self, topicFilter: str, entry: _Subscription) -> None:
        rc, mid = self._client.subscribe(topicFilter, entry.qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            self.log.warn("could not subscribe {filter}: {rc}", filter=topicFilter, rc=rc)
            return
        self._subscribing[mid] = topicFilter

    def _subscribed(self, mid: int, refused: bool) -> None:
        topicFilter = self._subscribing.pop(mid, None)
        if topicFilter is None:
            return
        entry = self._subscriptions.get(topicFilter)
        if entry is None:
            return
        waiters, entry.waiters = entry.waiters, []
        if refused:
            self.log.warn("the broker refused the subscription {filter}", filter=topicFilter)
            for waiter in waiters:
                waiter.errback(SubscriptionRefused(topicFilter))
            return
        entry.acknowledged = True
        for waiter in waiters:
            waiter.callback(None)

    def _published(self, mid: int) -> None:
        d = self._publishing.pop(mid, None)
        if d is not None:
            d.callback(None)

    def _dispatch(self, message: MqttMessage) -> None:
        matched = False
        for topicFilter, entry in list(self._subscriptions.items()):
            if not topic_matches_sub(topicFilter, message.topic):
                continue
            matched = True
            for callback in list(entry.callbacks):
                try:
                    callback(message)
                except Exception:
                    self.log.failure(
                        "a subscriber of {filter} failed on {topic}",
                        filter=topicFilter,
                        topic=message.topic,
                    )
        if not matched:
            self.log.debug("no subscriber for {topic}", topic=message.topic)
