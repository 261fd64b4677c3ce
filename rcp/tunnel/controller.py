"""
The main board's half of the tunnel, generated from L{rcp.tunnel.table}:
EVerest commands that become RPC calls to the agent, the agent's events
published again on the main board, and the main board's variables pushed to
the satellite.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..everest.interface import CommandError, IEverestModule, checkError
from ..rpc import CallTimeout, NotConnected, RemoteError
from ..untrusted import PeerValueError, brief, cut, errorText, loadsJson, typeName
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
        #: events of the agent's poll answers so far (vars and errors)
        self.delivered = 0
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

    def deliver(self, batch: Any) -> int:
        """
        Publish one ``retrieve_vars_and_errors`` answer (the agent's, of any
        type) on the main board; all of it or, if it is unusable, none.

        @return: how many events it held.
        @raise PeerValueError: the answer is not the JSON text of the wire
            document, with events of the documented shapes.
        """
        varEvents, errorEvents = parseBatch(batch)
        for interface, var, value in varEvents:
            self._deliverVar(interface, var, value)
        for action, error in errorEvents:
            self._deliverError(action, error)
        count = len(varEvents) + len(errorEvents)
        self.delivered += count  # for the link's summary
        return count

    def _deliverVar(self, interface: str, var: str, value: Any) -> None:
        row = varRow(interface, var)
        if row is None:
            # upstream ignores pairs it does not know: so does rcp
            self.log.debug(
                "ignored unknown var {interface}.{var}", interface=cut(interface), var=cut(var)
            )
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

    def _deliverError(self, action: str, error: dict[str, Any]) -> None:
        key = _errorKey(error)
        if action == "raise":
            if key in self._activeErrors:
                return  # EVerest ignores duplicates: so do we
            self._activeErrors[key] = error
            self.everest.raiseError(SATELLITE, error)
        else:
            raised = self._activeErrors.pop(key, None)
            # clear exactly what was raised: same type, sub_type and origin
            self.everest.clearError(SATELLITE, {**(raised or error), "state": "ClearedByModule"})

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
                    error=errorText(f.value),
                )
            )

        return push


def parseBatch(
    batch: Any,
) -> tuple[list[tuple[str, str, Any]], list[tuple[str, dict[str, Any]]]]:
    """
    The events of a ``retrieve_vars_and_errors`` answer: C{(interface, var,
    value)} of each var, C{(action, error)} of each error event.

    Missing lists count as empty and unknown keys are ignored (what an
    upstream controller does); anything else that is not the wire
    document's shape is refused.

    @raise PeerValueError: the answer is unusable, with the first problem.
    """
    events = loadsJson(batch)
    if not isinstance(events, dict):
        raise PeerValueError(f"the JSON text is {typeName(events)}, not an object")
    varsList = events.get("vars", [])
    errors = events.get("errors", [])
    if not isinstance(varsList, list):
        raise PeerValueError(f"vars is {typeName(varsList)}, not an array")
    if not isinstance(errors, list):
        raise PeerValueError(f"errors is {typeName(errors)}, not an array")
    varEvents: list[tuple[str, str, Any]] = []
    for index, event in enumerate(varsList):
        if not isinstance(event, dict) or "value" not in event:
            raise PeerValueError(f"vars[{index}] is not an object with a value: {brief(event)}")
        interface, var = event.get("interface"), event.get("var")
        if not (isinstance(interface, str) and isinstance(var, str)):
            raise PeerValueError(f"vars[{index}] has no string interface and var: {brief(event)}")
        varEvents.append((interface, var, event["value"]))
    errorEvents: list[tuple[str, dict[str, Any]]] = []
    for index, event in enumerate(errors):
        if not isinstance(event, dict) or event.get("action") not in ("raise", "clear"):
            raise PeerValueError(
                f"errors[{index}] is not an object with action raise or clear: {brief(event)}"
            )
        error = event.get("error")
        try:
            checkError(error)
        except ValueError as e:
            raise PeerValueError(f"errors[{index}]: {errorText(e)}") from None
        assert isinstance(error, dict)
        errorEvents.append((event["action"], error))
    return varEvents, errorEvents


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
