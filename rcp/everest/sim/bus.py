"""
An in-memory EVerest: the modules of one board and the manager's ready
handshake, without MQTT.

Delivery is asynchronous, as over MQTT: a published variable, a command and
its result each reach the other side in a later reactor turn, so a module
never re-enters itself.  Time comes from the injected clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interface import (
    CommandError,
    CommandHandler,
    ErrorCallback,
    IEverestModule,
    VarCallback,
)

#: (module id, implementation id)
Endpoint = tuple[str, str]

#: what a C++ caller waits for a command result, seconds
DEFAULT_COMMAND_TIMEOUT = 300.0


class SimBus:
    """
    One board's EVerest: modules, their connections, and global ready.

    @param name: the board's name, for logs.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        name: str = "board",
        commandTimeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.clock = clock
        self.name = name
        self.commandTimeout = commandTimeout
        self._commands: dict[tuple[str, str, str], CommandHandler] = {}
        self._varSubscribers: dict[tuple[str, str, str], list[VarCallback]] = defaultdict(list)
        self._errorSubscribers: list[ErrorCallback] = []
        self._modules: dict[str, SimModule] = {}
        self._ready: set[str] = set()
        self._readyWaiters: list[Deferred[None]] = []
        # commands not answered yet: their results and timeouts
        self._pendingCalls: dict[Deferred[Any], IDelayedCall] = {}
        self.globallyReady = False
        self.running = True

    def module(
        self,
        moduleId: str,
        connections: dict[str, list[Endpoint]] | None = None,
        mapping: dict[str, int] | None = None,
        config: dict[str, Any] | None = None,
    ) -> SimModule:
        """Add a module to this board's EVerest."""
        if moduleId in self._modules:
            raise ValueError(f"module {moduleId} exists on {self.name}")
        module = SimModule(self, moduleId, connections or {}, mapping, config or {})
        self._modules[moduleId] = module
        return module

    def shutdown(self) -> None:
        """
        The board goes down: nothing is delivered any more, and the commands
        still running fail with C{Shutdown}.
        """
        self.running = False
        self._varSubscribers.clear()
        self._errorSubscribers.clear()
        self._commands.clear()
        # A command still running fails now: no answer can arrive any more,
        # and its timeout must not outlive the board.
        pending, self._pendingCalls = self._pendingCalls, {}
        for result, timer in pending.items():
            if timer.active():
                timer.cancel()
            result.errback(CommandError("Shutdown", f"{self.name} shut down during the command"))

    # -- what SimModule uses ------------------------------------------------

    def _later(self, f: Callable[..., Any], *args: Any) -> None:
        if self.running:
            self.clock.callLater(0, self._deliver, f, *args)

    def _deliver(self, f: Callable[..., Any], *args: Any) -> None:
        if not self.running:
            return
        try:
            f(*args)
        except Exception:
            self.log.failure("{board}: a subscriber failed", board=self.name)

    def _provide(self, endpoint: Endpoint, command: str, handler: CommandHandler) -> None:
        self._commands[(*endpoint, command)] = handler

    def _call(self, endpoint: Endpoint, command: str, args: dict[str, Any]) -> Deferred[Any]:
        result: Deferred[Any] = Deferred()
        if not self.running:
            result.errback(CommandError("Shutdown", f"{self.name} is shut down"))
            return result
        handler = self._commands.get((*endpoint, command))

        def expire() -> None:
            self._pendingCalls.pop(result, None)
            result.errback(
                CommandError("CmdTimeout", f"{endpoint[0]}.{endpoint[1]}.{command} timed out")
            )

        timer = self.clock.callLater(self.commandTimeout, expire)
        self._pendingCalls[result] = timer

        def finish(outcome: Any) -> None:
            if not timer.active():
                return  # timed out already, or the board shut down
            timer.cancel()
            self._pendingCalls.pop(result, None)
            if isinstance(outcome, Failure):
                if outcome.check(CommandError):
                    result.errback(outcome)
                else:
                    result.errback(CommandError("HandlerException", outcome.getErrorMessage()))
            else:
                result.callback(outcome)

        def run() -> None:
            if handler is None:
                finish(
                    Failure(
                        CommandError(
                            "HandlerException",
                            f"{endpoint[0]} provides no command {endpoint[1]}.{command}",
                        )
                    )
                )
                return
            # args is passed as sent: EVerest callers send null for no arguments
            d = maybeDeferred(handler, None if args is None else dict(args))
            d.addBoth(lambda outcome: self._later(finish, outcome))

        self._later(run)
        return result

    def _subscribe(self, endpoint: Endpoint, var: str, callback: VarCallback) -> None:
        self._varSubscribers[(*endpoint, var)].append(callback)

    def _publish(self, endpoint: Endpoint, var: str, value: Any) -> None:
        for callback in list(self._varSubscribers.get((*endpoint, var), ())):
            self._later(callback, value)

    def _error(self, error: dict[str, Any]) -> None:
        for callback in list(self._errorSubscribers):
            self._later(callback, dict(error))

    def _subscribeErrors(self, callback: ErrorCallback) -> None:
        self._errorSubscribers.append(callback)

    def _signalReady(self, moduleId: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if moduleId in self._ready:
            # the trap of a real manager: a second ready re-triggers global
            # ready; rcp must never do it, so the simulation refuses.
            d.errback(RuntimeError(f"{moduleId} signalled ready twice on {self.name}"))
            return d
        self._ready.add(moduleId)
        self._readyWaiters.append(d)
        if self._ready >= set(self._modules) and not self.globallyReady:
            self.globallyReady = True
            waiters, self._readyWaiters = self._readyWaiters, []
            for waiter in waiters:
                self._later(waiter.callback, None)
        elif self.globallyReady:
            self._later(d.callback, None)
        return d


@implementer(IEverestModule)
class SimModule:
    """One module on a L{SimBus}."""

    def __init__(
        self,
        bus: SimBus,
        moduleId: str,
        connections: dict[str, list[Endpoint]],
        mapping: dict[str, int] | None,
        config: dict[str, Any],
    ) -> None:
        self.bus = bus
        self.moduleId = moduleId
        self._connections = connections
        self._mapping = mapping
        self._config = config

    def _endpoint(self, requirement: str, index: int) -> Endpoint:
        try:
            return self._connections[requirement][index]
        except (KeyError, IndexError):
            raise CommandError(
                "HandlerException",
                f"{self.moduleId} has no connection {requirement}[{index}]",
            ) from None

    def connections(self, requirement: str) -> int:
        return len(self._connections.get(requirement, ()))

    def connectedModules(self, requirement: str) -> list[str]:
        return [moduleId for moduleId, _ in self._connections.get(requirement, ())]

    def call(
        self, requirement: str, command: str, args: dict[str, Any], index: int = 0
    ) -> Deferred[Any]:
        try:
            endpoint = self._endpoint(requirement, index)
        except CommandError as e:
            d: Deferred[Any] = Deferred()
            d.errback(e)
            return d
        return self.bus._call(endpoint, command, args)

    def subscribeVar(
        self, requirement: str, var: str, callback: VarCallback, index: int = 0
    ) -> None:
        self.bus._subscribe(self._endpoint(requirement, index), var, callback)

    def provideCommand(self, implementation: str, command: str, handler: CommandHandler) -> None:
        self.bus._provide((self.moduleId, implementation), command, handler)

    def publishVar(self, implementation: str, var: str, value: Any) -> None:
        self.bus._publish((self.moduleId, implementation), var, value)

    def raiseError(self, implementation: str, error: dict[str, Any]) -> None:
        self.bus._error({**error, "state": "Active"})

    def clearError(self, implementation: str, error: dict[str, Any]) -> None:
        self.bus._error({**error, "state": "ClearedByModule"})

    def subscribeAllErrors(self, callback: ErrorCallback) -> None:
        self.bus._subscribeErrors(callback)

    def mapping(self) -> dict[str, int] | None:
        return self._mapping

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def signalReady(self) -> Deferred[None]:
        return self.bus._signalReady(self.moduleId)
