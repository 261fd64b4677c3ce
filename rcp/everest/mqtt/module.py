"""
One EVerest module over MQTT: L{IEverestModule} as a standalone module
of a real EVerest, speaking the framework's own protocol through an
L{MqttConnection}.

Life cycle, as the framework's modules do it:

1. L{MqttModule.start}: when the connection is up, ask the manager for the
   module's configuration (again and again until it answers: the manager
   may come up later), announce the metadata, subscribe to the commands
   and to global ready;
2. the module's code offers commands, subscribes variables and errors;
3. L{MqttModule.signalReady}: once every subscription is acknowledged,
   tell the manager (only ever once per module id and process: a second
   ModuleReady makes the manager repeat global ready, which kills
   framework modules); the Deferred fires on global ready.

Input from the bus is never trusted: a malformed call is answered with
the proper error where an answer can be addressed, anything else
malformed is dropped with a log line.  A lost broker connection stops
the module (as a framework module exits) and fires L{MqttModule.whenLost}.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ...untrusted import cut, errorText
from ..interface import (
    ERROR_KINDS,
    CommandError,
    CommandHandler,
    ErrorCallback,
    IEverestModule,
    VarCallback,
)
from . import wire
from .connection import MqttConnection, MqttMessage, NotConnected
from .wire import MalformedMessage, ModuleConfig, SchemaError, Topics

#: what a C++ caller waits for a command result, seconds
DEFAULT_COMMAND_TIMEOUT: Final = 300.0

#: seconds between two config requests while the manager does not answer
DEFAULT_CONFIG_RETRY: Final = 2.0

#: (broker host, broker port, everest prefix, module id) of every module
#: that announced itself ready in this process (see L{MqttModule.signalReady})
ANNOUNCED: set[tuple[str, int, str, str]] = set()


@dataclass
class _PendingCall:
    result: Deferred[Any]
    timer: IDelayedCall
    label: str


@implementer(IEverestModule)
class MqttModule:
    """
    One standalone EVerest module on an MQTT broker.

    @param connection: the broker connection (started by the caller; it may
        still be connecting).
    @param moduleId: the module id in the EVerest config.
    @param prefix: the everest prefix (C{/} appended when missing).
    @param clock: time for timeouts and retries; default: the connection's
        reactor.
    @param provides: the interface of each implementation, for the metadata.
    @param arguments: the argument names of provided commands, by
        implementation and command; calls of those commands with missing
        or unexpected arguments are answered C{SchemaValidationError}.
    @param commandTimeout: seconds a call waits for its result.
    @param handlerTimeout: seconds a provided command's handler may take
        before the call is answered C{CmdTimeout}; C{None}: no limit.
    @param configRetry: seconds between two config requests.
    @param announced: the record of modules that announced themselves ready;
        default: the process-wide L{ANNOUNCED}.
    """

    log = Logger()

    def __init__(
        self,
        connection: MqttConnection,
        moduleId: str,
        prefix: str = wire.DEFAULT_PREFIX,
        clock: IReactorTime | None = None,
        *,
        provides: Mapping[str, str] | None = None,
        arguments: Mapping[str, Mapping[str, Collection[str]]] | None = None,
        commandTimeout: float = DEFAULT_COMMAND_TIMEOUT,
        handlerTimeout: float | None = None,
        configRetry: float = DEFAULT_CONFIG_RETRY,
        announced: set[tuple[str, int, str, str]] | None = None,
    ) -> None:
        if not wire.isTopicLevel(moduleId):
            raise ValueError(f"module id {moduleId!r} cannot be a topic level")
        self.connection = connection
        self.moduleId = moduleId
        self.topics = Topics(prefix)
        self.prefix = self.topics.prefix
        self.clock: IReactorTime = clock if clock is not None else connection.reactor
        self.provides = dict(provides or {})
        self.commandTimeout = commandTimeout
        self.handlerTimeout = handlerTimeout
        self.configRetry = configRetry
        self._announced = ANNOUNCED if announced is None else announced

        #: the configuration from the manager, once L{start} got it
        self.moduleConfig: ModuleConfig | None = None
        #: whether the manager said everyone is ready
        self.globallyReady = False
        #: why the module stopped, once it has
        self.stoppedReason: str | None = None

        self._arguments: dict[tuple[str, str], frozenset[str]] = {
            (impl, cmd): frozenset(names)
            for impl, commands in (arguments or {}).items()
            for cmd, names in commands.items()
        }
        self._handlers: dict[tuple[str, str], CommandHandler] = {}
        self._pending: dict[str, _PendingCall] = {}
        self._responseTopics: set[str] = set()
        self._errorCallbacks: list[ErrorCallback] = []
        self._subscriptions: list[Deferred[bool]] = []
        self._readyWaiters: list[Deferred[None]] = []
        self._readySignalled = False
        self._starting: Deferred[None] | None = None
        self._configWaiter: Deferred[ModuleConfig] | None = None
        self._configTimer: IDelayedCall | None = None
        self._configRequests = 0
        self._lostWaiters: list[Deferred[str]] = []
        self._lostReason: str | None = None
        connection.whenLost().addCallback(self._connectionLost)

    def __repr__(self) -> str:
        return f"<MqttModule {self.prefix}{self.moduleId}>"

    # -- life cycle ------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self.stoppedReason is not None

    def start(self) -> Deferred[None]:
        """
        Get the configuration, announce the metadata and subscribe to the
        commands and to global ready.

        @return: a Deferred that fires when done; it fails with
            L{ConnectionLost} when the broker is lost first, with
            L{CancelledError} when L{stop} comes first.
        """
        if self._starting is not None:
            raise RuntimeError(f"{self!r} started twice")
        if self.stopped:
            return fail(RuntimeError(f"{self!r} is stopped"))
        self._starting = Deferred.fromCoroutine(self._start())
        return self._starting

    async def _start(self) -> None:
        try:
            await self.connection.whenConnected()
            responseTopic = self.topics.moduleResponse(self.moduleId)
            await self.connection.subscribe(responseTopic, self._configMessage)
            waiter: Deferred[ModuleConfig] = Deferred()
            self._configWaiter = waiter
            self._requestConfig()
            config = await waiter
        except CancelledError:
            if self._lostReason is not None:
                raise ConnectionLost(self._lostReason) from None
            raise
        finally:
            self._configWaiter = None
            self._cancelConfigTimer()
        self.connection.unsubscribe(responseTopic, self._configMessage)
        self.moduleConfig = config
        self.log.info(
            "{module}: configuration received ({name}, requirements {requirements})",
            module=self.moduleId,
            name=config.moduleName,
            requirements=sorted(config.connections),
        )
        self._publish(
            self.topics.metadata(self.moduleId),
            wire.metadata(config.moduleName, self.provides),
        )
        # commands first: a handler offered later is found by the wildcard
        for topicFilter, callback in (
            (self.topics.allCommands(self.moduleId), self._commandMessage),
            (self.topics.globalReady(), self._globalReadyMessage),
        ):
            self._track(self.connection.subscribe(topicFilter, callback), topicFilter)
        try:
            await DeferredList(list(self._subscriptions))
        except CancelledError:
            if self._lostReason is not None:
                raise ConnectionLost(self._lostReason) from None
            raise

    def stop(self, reason: str = "stopped") -> None:
        """
        Stop: calls waiting for results fail (C{Shutdown}), calls arriving
        are answered C{Shutdown}, nothing is published any more.  The
        connection stays as it is (it belongs to the caller).
        """
        if self.stopped:
            return
        self.stoppedReason = reason
        self._cancelConfigTimer()
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.timer.active():
                call.timer.cancel()
            call.result.errback(CommandError("Shutdown", f"{self.moduleId} is {reason}"))

    def whenLost(self) -> Deferred[str]:
        """
        A new Deferred that fires with the reason when the broker connection
        is lost (the module is stopped then); at once if it was.
        """
        if self._lostReason is not None:
            return succeed(self._lostReason)
        d: Deferred[str] = Deferred()
        self._lostWaiters.append(d)
        return d

    def _connectionLost(self, reason: str) -> None:
        self._lostReason = reason
        self.log.warn(
            "{module}: lost the MQTT broker ({reason})", module=self.moduleId, reason=reason
        )
        self.stop(f"disconnected from the MQTT broker ({reason})")
        waiters, self._lostWaiters = self._lostWaiters, []
        for waiter in waiters:
            waiter.callback(reason)

    # -- configuration ---------------------------------------------------------

    def _requestConfig(self) -> None:
        self._configTimer = None
        if self.stopped or self._configWaiter is None:
            return
        self._configRequests += 1
        if self._configRequests > 1:
            self.log.info(
                "{module}: no configuration from the manager yet, asking again ({count})",
                module=self.moduleId,
                count=self._configRequests,
            )
        self._publish(self.topics.configRequest(), wire.configRequest(self.moduleId))
        self._configTimer = self.clock.callLater(self.configRetry, self._requestConfig)

    def _cancelConfigTimer(self) -> None:
        if self._configTimer is not None and self._configTimer.active():
            self._configTimer.cancel()
        self._configTimer = None

    def _configMessage(self, message: MqttMessage) -> None:
        waiter = self._configWaiter
        if waiter is None or waiter.called:
            return
        try:
            config = wire.parseConfigResponse(message.payload)
        except MalformedMessage as e:
            self.log.warn(
                "{module}: unusable configuration answer ({problem}); asking again",
                module=self.moduleId,
                problem=str(e),
            )
            return
        if config.moduleId != self.moduleId:
            self.log.warn(
                "{module}: dropped the configuration of {other}",
                module=self.moduleId,
                other=config.moduleId,
            )
            return
        waiter.callback(config)

    def _requireConfig(self) -> ModuleConfig:
        if self.moduleConfig is None:
            raise RuntimeError(f"{self!r} has no configuration yet: start() it first")
        return self.moduleConfig

    def connections(self, requirement: str) -> int:
        return len(self._requireConfig().connections.get(requirement, ()))

    def connectedModules(self, requirement: str) -> list[str]:
        return [moduleId for moduleId, _ in self._requireConfig().connections.get(requirement, ())]

    def mapping(self) -> dict[str, int] | None:
        return self._requireConfig().moduleMapping()

    def implementationMapping(self, implementation: str) -> dict[str, int] | None:
        """The EVSE mapping of one of our implementations (else the module's)."""
        return self._requireConfig().implementationMapping(implementation)

    def requirementMapping(self, requirement: str, index: int = 0) -> dict[str, int] | None:
        """The EVSE mapping of the module connected to C{requirement}."""
        moduleId, _ = self._endpoint(requirement, index)
        return self._requireConfig().mappingOf(moduleId)

    def config(self) -> dict[str, Any]:
        return dict(self._requireConfig().parameters.get("!module", {}))

    def implementationConfig(self, implementation: str) -> dict[str, Any]:
        """The configuration parameters of one of our implementations."""
        return dict(self._requireConfig().parameters.get(implementation, {}))

    def _endpoint(self, requirement: str, index: int) -> tuple[str, str]:
        try:
            return self._requireConfig().connections[requirement][index]
        except (KeyError, IndexError):
            raise CommandError(
                "HandlerException", f"{self.moduleId} has no connection {requirement}[{index}]"
            ) from None

    # -- ready ----------------------------------------------------------------

    def signalReady(self) -> Deferred[None]:
        """
        Announce this module ready, once its subscriptions are in place.

        A module id announces itself only once per process: a second
        call (on this or on a new L{MqttModule} for the same module id,
        broker and prefix) fails with L{RuntimeError} and publishes nothing.

        @return: a Deferred that fires on global ready.
        """
        key = (self.connection.host, self.connection.port, self.prefix, self.moduleId)
        if self._readySignalled or key in self._announced:
            self.log.error(
                "{module}: refused to signal ready twice (the manager would repeat "
                "global ready, which aborts framework modules)",
                module=self.moduleId,
            )
            return fail(RuntimeError(f"{self.moduleId} signalled ready twice"))
        if self.stopped:
            return fail(RuntimeError(f"{self!r} is {self.stoppedReason}"))
        if self._starting is None or not self._starting.called or self.moduleConfig is None:
            return fail(RuntimeError(f"{self!r} is not started"))
        self._readySignalled = True
        self._announced.add(key)
        d: Deferred[None] = Deferred()
        self._readyWaiters.append(d)
        DeferredList(list(self._subscriptions)).addCallback(self._announce)
        return d

    def _announce(self, _: object) -> None:
        if self.stopped:
            return
        self.log.info("{module}: ready", module=self.moduleId)
        self._publish(self.topics.moduleReady(self.moduleId), wire.encode("ModuleReady", True))

    def _globalReadyMessage(self, message: MqttMessage) -> None:
        if not message.payload:
            return  # a retained topic being cleared
        try:
            ready = wire.parseGlobalReady(message.payload)
        except MalformedMessage as e:
            self.log.warn(
                "{module}: dropped a global ready message: {problem}",
                module=self.moduleId,
                problem=str(e),
            )
            return
        if not ready:
            self.log.warn("{module}: global ready false ignored", module=self.moduleId)
            return
        if not self._readySignalled:
            self.log.warn(
                "{module}: global ready before this module signalled ready; ignored",
                module=self.moduleId,
            )
            return
        if self.globallyReady:
            self.log.warn("{module}: repeated global ready ignored", module=self.moduleId)
            return
        self.globallyReady = True
        self.log.info("{module}: EVerest is ready", module=self.moduleId)
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- commands we provide ----------------------------------------------------

    def provideCommand(
        self,
        implementation: str,
        command: str,
        handler: CommandHandler,
        arguments: Collection[str] | None = None,
    ) -> None:
        """
        Answer calls of C{command} on our C{implementation} with C{handler},
        called with the arguments by name (C{{}} when sent as null).

        @param arguments: the command's argument names, if known (see the
            constructor's C{arguments}).
        """
        # check the names make a topic
        self.topics.command(self.moduleId, implementation, command)
        self._handlers[(implementation, command)] = handler
        if arguments is not None:
            self._arguments[(implementation, command)] = frozenset(arguments)

    def _commandMessage(self, message: MqttMessage) -> None:
        parsed = self.topics.parseCommand(message.topic)
        if parsed is None or parsed[0] != self.moduleId:
            return
        _, implementation, command = parsed
        label = cut(f"{implementation}.{command}")
        if message.retain:
            # the framework never retains a call: a stale one on the broker
            # would run again at every start
            self._dropCall(label, "retained")
            return
        try:
            payload = wire.loads(message.payload)
        except MalformedMessage as e:
            self._dropCall(label, str(e))
            return
        origin, requestId = wire.commandOrigin(payload)
        if origin is None:
            self._dropCall(label, "no origin to answer to")
            return

        def answerError(kind: str, text: str) -> None:
            self.log.warn(
                "{module}: call of {command} from {origin} answered {kind}: {text}",
                module=self.moduleId,
                command=label,
                origin=cut(origin),
                kind=kind,
                text=cut(text),
            )
            self._answer(
                implementation,
                command,
                origin,
                wire.commandError(requestId or "", kind, text, self.moduleId),
            )

        try:
            request = wire.parseCommand(payload)
        except SchemaError as e:
            answerError("SchemaValidationError", str(e))
            return
        except MalformedMessage as e:
            answerError("MessageParsingError", str(e))
            return
        if self.stopped:
            answerError("Shutdown", f"{self.moduleId} is {self.stoppedReason}")
            return
        handler = self._handlers.get((implementation, command))
        if handler is None:
            if not self._readySignalled:
                answerError("NotReady", f"{self.moduleId} offers no {label} (yet)")
            else:
                answerError("HandlerException", f"{self.moduleId} provides no command {label}")
            return
        args = request.args or {}
        expected = self._arguments.get((implementation, command))
        if expected is not None and set(args) != expected:
            missing = sorted(expected - set(args))
            unexpected = sorted(set(args) - expected)
            answerError(
                "SchemaValidationError",
                f"arguments of {label}: missing {missing}, unexpected {unexpected}",
            )
            return
        self._run(handler, implementation, command, request, dict(args))

    def _dropCall(self, label: str, problem: str) -> None:
        self.log.warn(
            "{module}: dropped a call of {command}: {problem}",
            module=self.moduleId,
            command=label,
            problem=problem,
        )

    def _run(
        self,
        handler: CommandHandler,
        implementation: str,
        command: str,
        request: wire.CommandRequest,
        args: dict[str, Any],
    ) -> None:
        label = f"{implementation}.{command}"
        outcome = maybeDeferred(handler, args)
        timer: IDelayedCall | None = None
        if self.handlerTimeout is not None and not outcome.called:
            timer = self.clock.callLater(self.handlerTimeout, outcome.cancel)

        def finished(result: Any) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            if self.stopped:
                payload = wire.commandError(
                    request.requestId,
                    "Shutdown",
                    f"{self.moduleId} is {self.stoppedReason}",
                    self.moduleId,
                )
            elif isinstance(result, Failure):
                kind, text = self._failureKind(result, label)
                payload = wire.commandError(request.requestId, kind, text, self.moduleId)
            else:
                try:
                    payload = wire.commandResult(request.requestId, result, self.moduleId)
                except (TypeError, ValueError) as e:
                    self.log.error(
                        "{module}: {command} returned a result that is not JSON: {problem}",
                        module=self.moduleId,
                        command=label,
                        problem=str(e),
                    )
                    payload = wire.commandError(
                        request.requestId,
                        "HandlerException",
                        f"result is not JSON: {e}",
                        self.moduleId,
                    )
            self._answer(implementation, command, request.origin, payload)

        outcome.addBoth(finished)

    def _failureKind(self, failure: Failure, label: str) -> tuple[str, str]:
        if failure.check(CancelledError) and self.handlerTimeout is not None:
            return "CmdTimeout", f"{label} took longer than {self.handlerTimeout} s"
        error = failure.value
        if isinstance(error, CommandError):
            kind = error.kind if error.kind in ERROR_KINDS else "HandlerException"
            self.log.info(
                "{module}: {command} failed: {kind}: {text}",
                module=self.moduleId,
                command=label,
                kind=kind,
                text=error.message,
            )
            return kind, error.message
        self.log.failure("{module}: {command} failed", failure, module=self.moduleId, command=label)
        return "HandlerException", str(error) or type(error).__name__

    def _answer(self, implementation: str, command: str, origin: str, payload: bytes) -> None:
        # a stopped module still answers (Shutdown) while it can: a C++
        # caller would wait 300 s for an answer that never comes
        self._publish(
            self.topics.commandResponse(self.moduleId, implementation, command, origin),
            payload,
            evenStopped=True,
        )

    # -- commands we call --------------------------------------------------------

    def call(
        self, requirement: str, command: str, args: dict[str, Any], index: int = 0
    ) -> Deferred[Any]:
        if self.stopped:
            return fail(CommandError("Shutdown", f"{self.moduleId} is {self.stoppedReason}"))
        if self.moduleConfig is None:
            return fail(CommandError("NotReady", f"{self.moduleId} is not started"))
        try:
            moduleId, implementation = self._endpoint(requirement, index)
            topic = self.topics.command(moduleId, implementation, command)
        except (CommandError, ValueError) as e:
            return fail(
                e if isinstance(e, CommandError) else CommandError("HandlerException", str(e))
            )
        if args is not None and not isinstance(args, dict):
            return fail(CommandError("SchemaValidationError", "args must be an object"))
        requestId = str(uuid.uuid4())
        try:
            payload = wire.command(requestId, args, self.moduleId)
        except (TypeError, ValueError) as e:
            return fail(CommandError("SchemaValidationError", f"args are not JSON: {e}"))
        label = f"{moduleId}.{implementation}.{command}"
        responseTopic = self.topics.commandResponse(
            moduleId, implementation, command, self.moduleId
        )
        if responseTopic not in self._responseTopics:
            self._responseTopics.add(responseTopic)
            self._track(
                self.connection.subscribe(responseTopic, self._resultMessage), responseTopic
            )

        result: Deferred[Any] = Deferred(lambda d: self._forget(requestId))
        timer = self.clock.callLater(self.commandTimeout, self._timedOut, requestId)
        self._pending[requestId] = _PendingCall(result, timer, label)

        def send(subscribed: object) -> None:
            if requestId not in self._pending or self.stopped:
                return
            if not self._publish(topic, payload):
                self._fail(requestId, CommandError("Shutdown", "not connected to the broker"))

        # the response subscription must be in place before the call goes out
        self.connection.whenSubscribed(responseTopic).addCallbacks(
            send,
            lambda failure: self._fail(
                requestId, CommandError("HandlerException", f"cannot subscribe {responseTopic}")
            ),
        )
        return result

    def _forget(self, requestId: str) -> None:
        call = self._pending.pop(requestId, None)
        if call is not None and call.timer.active():
            call.timer.cancel()

    def _fail(self, requestId: str, error: CommandError) -> None:
        call = self._pending.pop(requestId, None)
        if call is None:
            return
        if call.timer.active():
            call.timer.cancel()
        call.result.errback(error)

    def _timedOut(self, requestId: str) -> None:
        call = self._pending.get(requestId)
        if call is None:
            return
        self.log.warn("{module}: {command} timed out", module=self.moduleId, command=call.label)
        self._fail(
            requestId,
            CommandError("CmdTimeout", f"{call.label} gave no result in {self.commandTimeout} s"),
        )

    def _resultMessage(self, message: MqttMessage) -> None:
        try:
            result = wire.parseCommandResult(message.payload)
        except MalformedMessage as e:
            self.log.warn(
                "{module}: dropped a command result on {topic}: {problem}",
                module=self.moduleId,
                topic=cut(message.topic),
                problem=str(e),
            )
            return
        call = self._pending.pop(result.requestId, None)
        if call is None:
            self.log.debug(
                "{module}: result {id} matches no call (late or not ours)",
                module=self.moduleId,
                id=result.requestId,
            )
            return
        if call.timer.active():
            call.timer.cancel()
        if result.error is not None:
            call.result.errback(CommandError(*result.error))
        else:
            call.result.callback(result.retval)

    # -- variables ---------------------------------------------------------------

    def subscribeVar(
        self, requirement: str, var: str, callback: VarCallback, index: int = 0
    ) -> None:
        moduleId, implementation = self._endpoint(requirement, index)
        topic = self.topics.var(moduleId, implementation, var)

        def received(message: MqttMessage) -> None:
            try:
                value = wire.parseVar(message.payload)
            except MalformedMessage as e:
                self.log.warn(
                    "{module}: dropped a value of {topic}: {problem}",
                    module=self.moduleId,
                    topic=cut(message.topic),
                    problem=str(e),
                )
                return
            if not self.stopped:
                callback(value)

        self._track(self.connection.subscribe(topic, received), topic)

    def publishVar(self, implementation: str, var: str, value: Any) -> None:
        self._publish(self.topics.var(self.moduleId, implementation, var), wire.var(value))

    # -- errors -------------------------------------------------------------------

    def raiseError(self, implementation: str, error: dict[str, Any]) -> None:
        self._publishError(implementation, "RaiseError", {**error, "state": "Active"})

    def clearError(self, implementation: str, error: dict[str, Any]) -> None:
        self._publishError(implementation, "ClearError", {**error, "state": "ClearedByModule"})

    def _publishError(self, implementation: str, msgType: str, error: dict[str, Any]) -> None:
        wire.checkError(error)
        topic = self.topics.error(self.moduleId, implementation, error["type"])
        self._publish(topic, wire.encode(msgType, error))

    def subscribeAllErrors(self, callback: ErrorCallback) -> None:
        self._errorCallbacks.append(callback)
        if len(self._errorCallbacks) == 1:
            topicFilter = self.topics.allErrors()
            self._track(self.connection.subscribe(topicFilter, self._errorMessage), topicFilter)

    def _errorMessage(self, message: MqttMessage) -> None:
        if not message.payload:
            return
        try:
            error = wire.parseError(message.payload)
        except MalformedMessage as e:
            self.log.warn(
                "{module}: dropped an error message on {topic}: {problem}",
                module=self.moduleId,
                topic=cut(message.topic),
                problem=str(e),
            )
            return
        if self.stopped:
            return
        for callback in list(self._errorCallbacks):
            try:
                callback(dict(error))
            except Exception:
                self.log.failure("{module}: an error subscriber failed", module=self.moduleId)

    # -- helpers --------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, evenStopped: bool = False) -> bool:
        """Publish at QoS 2, not retained; C{False} when stopped or not connected."""
        if self.stopped and not evenStopped:
            self.log.debug(
                "{module}: stopped, not publishing {topic}", module=self.moduleId, topic=topic
            )
            return False
        try:
            self.connection.publish(topic, payload, qos=2, retain=False)
        except NotConnected as e:
            self.log.warn("{module}: {problem}", module=self.moduleId, problem=str(e))
            return False
        except ValueError as e:
            # a topic MQTT cannot carry (too long), built from a peer's origin
            self.log.warn(
                "{module}: cannot publish on {topic}: {problem}",
                module=self.moduleId,
                topic=cut(topic),
                problem=errorText(e),
            )
            return False
        return True

    def _track(self, subscribed: Deferred[None], topicFilter: str) -> None:
        """Keep a subscription's acknowledgement for L{signalReady}."""

        def refused(failure: Failure) -> bool:
            self.log.warn(
                "{module}: subscription {filter} failed: {problem}",
                module=self.moduleId,
                filter=topicFilter,
                problem=failure.getErrorMessage(),
            )
            return False

        self._subscriptions.append(subscribed.addCallbacks(lambda _: True, refused))
