"""
The satellite's half of the tunnel, generated from L{rcp.tunnel.table}:
RPC methods that call the board's EVerest modules, subscriptions that queue
their variables and errors for the controller, and the ``auth``/``system``
implementations that carry what the main board pushes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..everest.interface import CommandError, IEverestModule
from ..rpc import Handler, HandlerError, MethodRegistry
from ..untrusted import PeerValueError, cut, typeName
from .events import EventQueue
from .table import (
    CHANNELS,
    PUSH_CHANNELS,
    PUSH_VAR,
    REQUIRED,
    Channel,
    Codec,
    Command,
    pushRow,
)


class AgentTunnel:
    log = Logger()

    def __init__(
        self,
        everest: IEverestModule,
        queue: EventQueue,
        observe: Callable[[str, Any], None] | None = None,
    ) -> None:
        """
        @param observe: called with the RPC name and the EVerest result of
            every command that succeeded (the link watches for accepted
            firmware updates and resets).
        """
        self.everest = everest
        self.queue = queue
        self._observe = observe

    def register(self, methods: MethodRegistry) -> None:
        """Offer the tunnelled RPC methods (after the first ``i_am_here``)."""
        for channel in CHANNELS:
            for command in channel.commands:
                methods.register(
                    channel.rpcName(command),
                    self._commandMethod(channel, command),
                    len(command.args),  # rpclib's argument count check
                )
        methods.register(PUSH_VAR, self._pushVar, 1)

    def _commandMethod(self, channel: Channel, command: Command) -> Handler:
        rpcName = channel.rpcName(command)

        def handler(*wire: Any) -> Deferred[Any]:
            if not self.everest.connections(channel.name):
                if command.absent is REQUIRED:
                    raise HandlerError(f"{rpcName}: {channel.name} is not connected on this board")
                return succeed(command.result.encode(command.absent))
            try:
                args = {
                    arg.name: arg.codec.decode(value)
                    for arg, value in zip(command.args, wire, strict=True)
                }
            except PeerValueError as e:
                raise HandlerError(f"{rpcName}: bad argument: {e}") from None
            d = self.everest.call(channel.name, command.name, args)
            d.addCallbacks(
                self._succeeded,
                self._commandFailed,
                callbackArgs=(rpcName, command),
                errbackArgs=(rpcName,),
            )
            return d

        handler.__name__ = rpcName
        return handler

    def _succeeded(self, result: Any, rpcName: str, command: Command) -> Any:
        if self._observe is not None:
            self._observe(rpcName, result)
        return command.result.encode(result)

    def _commandFailed(self, failure: Any, rpcName: str) -> Any:
        if failure.check(CommandError):
            raise HandlerError(f"{rpcName}: {failure.value}")
        return failure

    def _pushVar(self, event: Any) -> None:
        try:
            decoded = Codec.JSON.decode(event)
        except PeerValueError as e:
            raise HandlerError(f"push_var: not an event: {e}") from None
        if not isinstance(decoded, dict) or "value" not in decoded:
            raise HandlerError(f"push_var: not an event: {typeName(decoded)} without a value")
        interface, var, value = decoded.get("interface"), decoded.get("var"), decoded["value"]
        if not (isinstance(interface, str) and isinstance(var, str)):
            raise HandlerError("push_var: not an event: interface and var must be strings")
        row = pushRow(interface, var)
        if row is None:
            # upstream ignores pairs it does not know: so does rcp
            self.log.info(
                "push_var: ignored unknown {interface}.{var}",
                interface=cut(interface),
                var=cut(var),
            )
            return
        self.everest.publishVar(row[0].name, var, value)

    def provide(self) -> None:
        """Offer the ``auth`` and ``system`` implementations that carry pushed variables."""
        for push in PUSH_CHANNELS:
            for command, answer in push.answers:
                self.everest.provideCommand(push.name, command, _fixed(answer))

    def subscribe(self) -> None:
        """Queue every tunnelled variable of the connected modules and every error of the board."""
        for channel in CHANNELS:
            if not self.everest.connections(channel.name):
                continue
            for var in channel.vars:
                self.everest.subscribeVar(
                    channel.name, var.name, self._queueVar(channel.name, var.name, var.coalesce)
                )
        self.everest.subscribeAllErrors(self._queueError)

    def _queueVar(self, interface: str, var: str, coalesce: bool) -> Callable[[Any], None]:
        def queue(value: Any) -> None:
            self.queue.addVar(interface, var, value, coalesce)

        return queue

    def _queueError(self, error: dict[str, Any]) -> None:
        action = "raise" if error.get("state", "Active") == "Active" else "clear"
        self.queue.addError(action, error)


def _fixed(answer: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda args: answer
