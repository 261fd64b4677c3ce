"""What an EVerest module can do, independent of how it reaches EVerest."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from ..untrusted import brief

#: The error kinds of a failed command, exactly as EVerest names them.
ERROR_KINDS = (
    "MessageParsingError",
    "SchemaValidationError",
    "HandlerException",
    "CmdTimeout",
    "Shutdown",
    "NotReady",
)

#: the keys every EVerest error object has (a receiver requires each)
ERROR_KEYS = frozenset(
    {
        "type",
        "sub_type",
        "message",
        "description",
        "origin",
        "severity",
        "timestamp",
        "uuid",
        "state",
        "vendor_id",
    }
)

CommandHandler = Callable[[dict[str, Any]], Any]
"""Called with a command's arguments by name; returns the result, a Deferred or a coroutine."""

VarCallback = Callable[[Any], None]
ErrorCallback = Callable[[dict[str, Any]], None]


class CommandError(Exception):
    """
    A command failed on the EVerest side.

    @ivar kind: one of L{ERROR_KINDS}.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class IEverestModule(Interface):
    """
    One EVerest module instance as its code sees the framework: the
    commands it provides and calls, the variables it publishes and
    subscribes, the errors it raises and observes, and the ready handshake.

    Requirements are named by their requirement id (from the module's
    manifest) and an index for requirements with several connections;
    implementations by their implementation id.
    """

    moduleId = Attribute("The module id in the EVerest config.")

    def connections(requirement: str) -> int:
        """How many modules are connected to C{requirement} (0 when absent)."""

    def connectedModules(requirement: str) -> list[str]:
        """
        The module ids connected to C{requirement}, in the config's order
        (index 0 first); empty when absent.
        """

    def call(requirement: str, command: str, args: dict[str, Any], index: int = 0) -> Deferred[Any]:
        """
        Call C{command} on the module connected to C{requirement}.

        @return: a Deferred with the result; it fails with L{CommandError}.
        """

    def subscribeVar(requirement: str, var: str, callback: VarCallback, index: int = 0) -> None:
        """Call C{callback} with every value the connected module publishes for C{var}."""

    def provideCommand(implementation: str, command: str, handler: CommandHandler) -> None:
        """Answer calls of C{command} on our C{implementation} with C{handler}."""

    def publishVar(implementation: str, var: str, value: Any) -> None:
        """Publish C{value} for C{var} of our C{implementation}."""

    def raiseError(implementation: str, error: dict[str, Any]) -> None:
        """Raise C{error} (an EVerest error object, state Active) on our C{implementation}."""

    def clearError(implementation: str, error: dict[str, Any]) -> None:
        """Clear C{error}: the object as raised, state ClearedByModule."""

    def subscribeAllErrors(callback: ErrorCallback) -> None:
        """
        Call C{callback} with every error raised or cleared by any module of
        this EVerest (the global error subscription); raise and clear are
        told apart by the error's C{state}.
        """

    def mapping() -> dict[str, int] | None:
        """This module's EVSE mapping (C{{"evse": n[, "connector": m]}}), if configured."""

    def config() -> dict[str, Any]:
        """This module's configuration parameters (module level) by name."""

    def signalReady() -> Deferred[None]:
        """
        Tell the manager this module is ready; the Deferred fires when the
        whole EVerest is ready (global ready).
        """


def _isName(name: str) -> bool:
    # one level of a topic: non-empty, without / + # or NUL
    return name != "" and not any(c in name for c in "/+#\0")


def checkError(error: object) -> None:
    """
    Whether C{error} (of any type: it may come from a peer) is an EVerest
    error object.

    @raise ValueError: it is not a map, lacks a key of an EVerest error
        object, its type is not C{<namespace>/<name>}, or its origin is not
        a map.
    """
    if not isinstance(error, Mapping):
        raise ValueError(f"error object is {type(error).__name__}, not a map")
    missing = ERROR_KEYS - set(error)
    if missing:
        raise ValueError(f"error object without {', '.join(sorted(missing))}")
    errorType = error["type"]
    namespace, _, name = errorType.partition("/") if isinstance(errorType, str) else ("", "", "")
    if not (_isName(namespace) and _isName(name)):
        raise ValueError(f"error type {brief(errorType)} is not <namespace>/<name>")
    if not isinstance(error["origin"], dict):
        raise ValueError("error origin is not an object")


def makeError(
    type: str,
    moduleId: str,
    implementationId: str,
    message: str = "",
    subType: str = "",
    description: str = "",
    severity: str = "Low",
    mapping: dict[str, int] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """
    A complete EVerest error object in state Active (every key a receiver
    requires).

    @param timestamp: RFC 3339 time of the error; default: now, by the wall clock.
    """
    origin: dict[str, Any] = {"module_id": moduleId, "implementation_id": implementationId}
    if mapping is not None:
        origin["mapping"] = mapping
    return {
        "type": type,
        "sub_type": subType,
        "message": message,
        "description": description,
        "origin": origin,
        "severity": severity,
        "timestamp": timestamp if timestamp is not None else rfc3339(datetime.now(UTC)),
        "uuid": str(uuid.uuid4()),
        "state": "Active",
        "vendor_id": "everest",
    }


def cleared(error: dict[str, Any]) -> dict[str, Any]:
    """The clear of C{error}: the same object, state ClearedByModule."""
    return {**error, "state": "ClearedByModule"}


def rfc3339(moment: datetime) -> str:
    """EVerest's timestamp format: UTC with milliseconds and a Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
