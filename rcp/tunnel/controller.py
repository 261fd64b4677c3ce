"""
The main board's half of the tunnel, generated from L{rcp.tunnel.table}:
EVerest commands that become RPC calls to the agent, the agent's events
published again on the main board, and the main board's variables pushed to
the satellite.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..everest.interface import CommandError, IEverestModule
from ..rpc import CallTimeout, NotConnected, RemoteError
from .table import (
    CHANNELS,
    NIL,
    PUSH_CHANNELS,
    PUSH_VAR,
    REQUIRED,
    Channel,
    Command,
    dumps,
    varRow,
)

#: the controller's own implementation, which re-raises the satellite's errors
SATELLITE = "satellite"

RpcCall = Callable[..., Deferred[Any]]


def _errorKey(error: dict[str, Any]) -> str:
    return dumps([error.get("type"), error.get("sub_type"), error.get("origin")])


class ControllerTunnel:
    """
    @param call: calls an RPC method on the agent (C{call(method, *params)});
        it fails with L{NotConnected} while the link is not synchronised.
    """

    log = Logger()

    def __init__(
        self,
        everest: IEverestModule,
        call: RpcCall,
        observe: Callable[[str, Any], None] | None = None,
    ) -> None:
        """
        @param observe: called with the RPC name and the decoded result of
            every command the satellite answered.
        """
        self.everest = everest
        self.call = call
        self._observe = observe
        self._activeErrors: dict[str, dict[str, Any]] = {}

    @property
    def connectorId(self) -> int | None:
        """This port's connector id on the main board: mapping connector, else evse."""
        mapping = self.everest.mapping() or {}
        return mapping.get("connector", mapping.get("evse"))

    # -- commands: main board -> satellite ----------------------------------

    def provide(self) -> None:
        for channel in CHANNELS:
            for command in channel.commands:
                self.everest.provideCommand(
                    channel.name, command.name, self._commandHandler(channel, command)
                )

    def _commandHandler(
        self, channel: Channel, command: Command
    ) -> Callable[[dict[str, Any]], Deferred[Any]]:
        rpcName = channel.rpcName(command)

        def handler(args: dict[str, Any]) -> Deferred[Any]:
            args = args or {}  # EVerest sends null for commands without arguments
            try:
                wire = [arg.codec.encode(args[arg.name]) for arg in command.args]
            except KeyError as e:
                raise CommandError(
                    "SchemaValidationError", f"{rpcName}: missing argument {e}"
                ) from None
            d = self.call(rpcName, *wire)
            d.addCallbacks(
                lambda result: self._decoded(command, rpcName, result),
                lambda f: _failed(f, rpcName),
            )
            return d

        return handler

    def _decoded(self, command: Command, rpcName: str, result: Any) -> Any:
        value = _decodeResult(command, rpcName, result)
        if self._observe is not None:
            self._observe(rpcName, value)
        return value

    # -- events: satellite -> main board ------------------------------------

    def deliver(self, batch: str) -> int:
        """
        Publish one ``retrieve_vars_and_errors`` answer on the main board.

        @return: how many events it held.
        @raise ValueError: the answer is not the JSON object of the wire
            document.
        """
        try:
            events = json.loads(batch)
            varsList = events.get("vars", [])
            errors = events.get("errors", [])
        except (ValueError, AttributeError, TypeError) as e:
            raise ValueError(f"retrieve_vars_and_errors answered {batch[:80]!r}: {e}") from None
        if not isinstance(varsList, list) or not isinstance(errors, list):
            raise ValueError("retrieve_vars_and_errors: vars and errors must be lists")
        for event in varsList:
            self._deliverVar(event)
        for event in errors:
            self._deliverError(event)
        return len(varsList) + len(errors)

    def _deliverVar(self, event: Any) -> None:
        try:
            interface, var, value = event["interface"], event["var"], event["value"]
        except (KeyError, TypeError):
            self.log.warn("dropped malformed var event {event!r}", event=event)
            return
        row = varRow(interface, var)
        if row is None:
            self.log.debug("ignored unknown var {interface}.{var}", interface=interface, var=var)
            return
        channel, _ = row
        if channel.name == "rfid_token_provider" and var == "provided_token":
            value = self._withConnector(value)
        self.everest.publishVar(channel.name, var, value)

    def _withConnector(self, token: Any) -> Any:
        # A card read at the satellite's reader is meant for the satellite's
        # port: say so when the token does not.
        if isinstance(token, dict) and not token.get("connectors"):
            connector = self.connectorId
            if connector is not None:
                return {**token, "connectors": [connector]}
        return token

    def _deliverError(self, event: Any) -> None:
        try:
            action, error = event["action"], event["error"]
            key = _errorKey(error)
        except (KeyError, TypeError):
            self.log.warn("dropped malformed error event {event!r}", event=event)
            return
        if action == "raise":
            if key in self._activeErrors:
                return  # EVerest ignores duplicates: so do we
            self._activeErrors[key] = error
            self.everest.raiseError(SATELLITE, error)
        elif action == "clear":
            raised = self._activeErrors.pop(key, None)
            # clear exactly what was raised: same type, sub_type and origin
            self.everest.clearError(SATELLITE, {**(raised or error), "state": "ClearedByModule"})
        else:
            self.log.warn("dropped error event with action {action!r}", action=action)

    @property
    def activeErrors(self) -> list[dict[str, Any]]:
        return list(self._activeErrors.values())

    # -- variables: main board -> satellite ---------------------------------

    def subscribePush(self) -> None:
        for push in PUSH_CHANNELS:
            if not self.everest.connections(push.name):
                continue
            for var in push.vars:
                self.everest.subscribeVar(push.name, var.name, self._pusher(push.name, var.name))

    def _pusher(self, interface: str, var: str) -> Callable[[Any], None]:
        def push(value: Any) -> None:
            d = self.call(PUSH_VAR, dumps({"interface": interface, "var": var, "value": value}))
            d.addErrback(
                lambda f: self.log.warn(
                    "push_var {interface}.{var} failed: {error}",
                    interface=interface,
                    var=var,
                    error=f.getErrorMessage(),
                )
            )

        return push


def _decodeResult(command: Command, rpcName: str, result: Any) -> Any:
    try:
        value = command.result.decode(result)
    except ValueError as e:
        raise CommandError("HandlerException", f"{rpcName}: the satellite answered {e}") from None
    if value is None and command.result is not NIL:
        # A C++ agent answers null for a channel its board does not connect,
        # which no result type of these commands allows: answer what rcp's
        # agent answers then.
        if command.absent is REQUIRED:
            raise CommandError("HandlerException", f"{rpcName}: the satellite answered null")
        return copy.deepcopy(command.absent)
    return value


def _failed(failure: Failure, rpcName: str) -> Any:
    if failure.check(RemoteError):
        raise CommandError("HandlerException", f"{rpcName}: {failure.value}")
    if failure.check(CallTimeout):
        raise CommandError("CmdTimeout", f"{rpcName}: {failure.value}")
    if failure.check(NotConnected):
        raise CommandError("NotReady", f"{rpcName}: the satellite link is not up")
    raise CommandError("HandlerException", f"{rpcName}: {failure.getErrorMessage()}")
