"""
The EVerest framework's MQTT messages: topics, the C{msg_type} envelope,
command results and the module configuration a manager sends.

Pure functions and small value types, no I/O; L{rcp.everest.mqtt.module}
puts them on the bus.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeGuard

from ...untrusted import PeerValueError, brief, cut, loadsJson
from ..interface import ERROR_KEYS as ERROR_KEYS  # re-exported
from ..interface import ERROR_KINDS
from ..interface import checkError as checkError  # re-exported

#: the everest prefix EVerest uses unless configured otherwise
DEFAULT_PREFIX: Final = "everest/"

#: the keys of the error of a failed command
ERROR_TYPE_KEY: Final = "__everest__error_type"
ERROR_MSG_KEY: Final = "__everest__error_msg"


class MalformedMessage(ValueError):
    """A payload from the bus is not what the framework sends."""


def normalisePrefix(prefix: str) -> str:
    """The everest prefix as the framework uses it: with a trailing C{/} unless empty."""
    if prefix and not prefix.endswith("/"):
        return prefix + "/"
    return prefix


def isTopicLevel(name: object) -> TypeGuard[str]:
    """Whether C{name} can be one level of a topic: a non-empty text without C{/ + #} or NUL."""
    return isinstance(name, str) and name != "" and not any(c in name for c in "/+#\0")


def _checkLevel(what: str, name: str) -> str:
    if not isTopicLevel(name):
        raise ValueError(f"{what} {brief(name)} cannot be a topic level")
    return name


@dataclass(frozen=True)
class Topics:
    """Every topic of the framework, under one everest prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalisePrefix(self.prefix))

    def configRequest(self) -> str:
        return f"{self.prefix}config/request"

    def moduleResponse(self, moduleId: str) -> str:
        """Where the manager answers C{moduleId}'s config requests."""
        return f"{self.module(moduleId)}/response"

    def module(self, moduleId: str) -> str:
        return f"{self.prefix}modules/{_checkLevel('module id', moduleId)}"

    def metadata(self, moduleId: str) -> str:
        return f"{self.module(moduleId)}/metadata"

    def moduleReady(self, moduleId: str) -> str:
        return f"{self.module(moduleId)}/ready"

    def globalReady(self) -> str:
        return f"{self.prefix}ready"

    def implementation(self, moduleId: str, implementation: str) -> str:
        return f"{self.module(moduleId)}/impl/{_checkLevel('implementation id', implementation)}"

    def command(self, moduleId: str, implementation: str, command: str) -> str:
        base = self.implementation(moduleId, implementation)
        return f"{base}/cmd/{_checkLevel('command', command)}"

    def allCommands(self, moduleId: str) -> str:
        """A filter for every command of every implementation of C{moduleId}."""
        return f"{self.module(moduleId)}/impl/+/cmd/+"

    def commandResponse(self, moduleId: str, implementation: str, command: str, origin: str) -> str:
        base = self.command(moduleId, implementation, command)
        return f"{base}/response/{_checkLevel('origin', origin)}"

    def var(self, moduleId: str, implementation: str, var: str) -> str:
        return f"{self.implementation(moduleId, implementation)}/var/{_checkLevel('variable', var)}"

    def error(self, moduleId: str, implementation: str, errorType: str) -> str:
        """C{errorType} is C{<namespace>/<name>}."""
        namespace, _, name = errorType.partition("/")
        _checkLevel("error namespace", namespace)
        _checkLevel("error name", name)
        return f"{self.implementation(moduleId, implementation)}/error/{namespace}/{name}"

    def allErrors(self) -> str:
        """A filter for every error of every module (the global error subscription)."""
        return f"{self.prefix}modules/+/impl/+/error/#"

    def parseCommand(self, topic: str) -> tuple[str, str, str] | None:
        """C{(module id, implementation, command)} of a command topic, else C{None}."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix) :].split("/")
        if len(parts) != 6 or parts[0] != "modules" or parts[2] != "impl" or parts[4] != "cmd":
            return None
        return parts[1], parts[3], parts[5]


# -- the envelope -------------------------------------------------------------


def encode(msgType: str, data: Any) -> bytes:
    """
    C{{"msg_type": msgType, "data": data}} as compact JSON.

    @raise ValueError: C{data} is not JSON (also NaN and infinities, which a
        C++ receiver cannot parse).
    @raise TypeError: C{data} holds something JSON has no form for.
    """
    return dumps({"msg_type": msgType, "data": data})


def dumps(value: Any) -> bytes:
    """Compact, strict JSON in UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def loads(payload: bytes) -> Any:
    """
    A payload as JSON (bounded: see L{rcp.untrusted.loadsJson}).

    @raise MalformedMessage: not strict UTF-8 JSON, too large or too deep.
    """
    try:
        return loadsJson(payload)
    except PeerValueError as e:
        raise MalformedMessage(str(e)) from None


def unwrap(payload: bytes, *msgTypes: str) -> Any:
    """
    The C{data} of an enveloped message of one of C{msgTypes}.

    @raise MalformedMessage: not JSON, no envelope, or another type.
    """
    message = loads(payload)
    if not isinstance(message, dict) or "msg_type" not in message:
        raise MalformedMessage("no msg_type envelope")
    if message["msg_type"] not in msgTypes:
        expected = " or ".join(msgTypes)
        raise MalformedMessage(f"msg_type {brief(message['msg_type'])}, expected {expected}")
    if "data" not in message:
        raise MalformedMessage("envelope without data")
    return message["data"]


# -- commands -----------------------------------------------------------------


def command(requestId: str, args: Mapping[str, Any] | None, origin: str) -> bytes:
    """A call: C{Cmd} with the request id, the arguments (or null) and the caller."""
    return encode(
        "Cmd",
        {"id": requestId, "args": None if args is None else dict(args), "origin": origin},
    )


def commandResult(requestId: str, retval: Any, origin: str) -> bytes:
    """The success answer to a call; C{origin} is the callee."""
    return encode(
        "CmdResult",
        {"type": "result", "data": {"id": requestId, "retval": retval, "origin": origin}},
    )


def commandError(requestId: str, kind: str, message: str, origin: str) -> bytes:
    """The error answer to a call; C{kind} is one of L{ERROR_KINDS}."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown command error kind {kind!r}")
    return encode(
        "CmdResult",
        {
            "type": "result",
            "data": {
                "id": requestId,
                "origin": origin,
                "error": {ERROR_TYPE_KEY: kind, ERROR_MSG_KEY: message},
            },
        },
    )


@dataclass(frozen=True)
class CommandRequest:
    """A call as received; C{args} is C{None} when sent as null (or left out)."""

    requestId: str
    args: dict[str, Any] | None
    origin: str


@dataclass(frozen=True)
class CommandResultMessage:
    """An answer as received: C{error} is C{(kind, message)} for an error answer."""

    requestId: str
    retval: Any
    error: tuple[str, str] | None
    origin: str | None


def commandOrigin(payload: Any) -> tuple[str | None, str | None]:
    """
    Best effort for an answer to a malformed call: C{(origin, id)} from the
    payload's C{data} or, without an envelope, from the payload itself;
    C{None} for what is absent or unusable.
    """
    if not isinstance(payload, dict):
        return None, None
    data = payload.get("data")
    candidates = [data, payload] if isinstance(data, dict) else [payload]
    origin: str | None = None
    requestId: str | None = None
    for candidate in candidates:
        if origin is None and isTopicLevel(candidate.get("origin")):
            origin = candidate["origin"]
        if requestId is None and isinstance(candidate.get("id"), str):
            requestId = candidate["id"]
    return origin, requestId


class SchemaError(MalformedMessage):
    """A call's arguments are not an object (or null)."""


def parseCommand(payload: Any) -> CommandRequest:
    """
    A decoded C{Cmd} message (the whole JSON payload).

    @raise SchemaError: the arguments are neither an object nor null.
    @raise MalformedMessage: anything else wrong.
    """
    if not isinstance(payload, dict) or "msg_type" not in payload:
        raise MalformedMessage("no msg_type envelope")
    if payload["msg_type"] != "Cmd":
        raise MalformedMessage(f"msg_type {brief(payload['msg_type'])} on a command topic")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise MalformedMessage("data is not an object")
    requestId = data.get("id")
    if not isinstance(requestId, str):
        raise MalformedMessage("no id")
    origin = data.get("origin")
    if not isTopicLevel(origin):
        raise MalformedMessage("no usable origin")
    args = data.get("args")
    if args is not None and not isinstance(args, dict):
        raise SchemaError(f"args is a {type(args).__name__}, not an object or null")
    return CommandRequest(requestId, args, origin)


def parseCommandResult(payload: bytes) -> CommandResultMessage:
    """
    A C{CmdResult} message.

    @raise MalformedMessage: not one.
    """
    data = unwrap(payload, "CmdResult")
    if not isinstance(data, dict):
        raise MalformedMessage("data is not an object")
    if data.get("type", "result") != "result":
        raise MalformedMessage(f"result type {brief(data.get('type'))}")
    inner = data.get("data")
    if not isinstance(inner, dict):
        raise MalformedMessage("data.data is not an object")
    requestId = inner.get("id")
    if not isinstance(requestId, str):
        raise MalformedMessage("no id")
    origin = inner.get("origin")
    error: tuple[str, str] | None = None
    if "error" in inner:
        raw = inner["error"]
        if not isinstance(raw, dict):
            raise MalformedMessage("error is not an object")
        kind = raw.get(ERROR_TYPE_KEY)
        message = raw.get(ERROR_MSG_KEY, "")
        message = cut(message if isinstance(message, str) else json.dumps(message), 1000)
        if kind not in ERROR_KINDS:
            # what a C++ caller cannot convert; keep the text
            message = f"unknown error type {brief(kind)}: {message}"
            kind = "HandlerException"
        error = (kind, message)
    return CommandResultMessage(
        requestId, inner.get("retval"), error, origin if isinstance(origin, str) else None
    )


# -- variables, errors, ready ------------------------------------------------


def var(value: Any) -> bytes:
    """A variable's value: nested twice, C{{"msg_type":"Var","data":{"data":value}}}."""
    return encode("Var", {"data": value})


def parseVar(payload: bytes) -> Any:
    """
    The value of a C{Var} message.

    @raise MalformedMessage: not one.
    """
    data = unwrap(payload, "Var")
    if not isinstance(data, dict) or "data" not in data:
        raise MalformedMessage("Var without data.data")
    return data["data"]


def parseError(payload: bytes) -> dict[str, Any]:
    """
    The error object of a C{RaiseError} or C{ClearError} message.

    @raise MalformedMessage: not one, or an incomplete error object.
    """
    data = unwrap(payload, "RaiseError", "ClearError")
    if not isinstance(data, dict):
        raise MalformedMessage("error is not an object")
    try:
        checkError(data)
    except ValueError as e:
        raise MalformedMessage(str(e)) from None
    return data


def parseGlobalReady(payload: bytes) -> bool:
    """
    Whether a C{GlobalReady} message says ready.

    @raise MalformedMessage: not one, or its data is not a boolean.
    """
    data = unwrap(payload, "GlobalReady")
    if not isinstance(data, bool):
        raise MalformedMessage(f"GlobalReady data is {brief(data)}, not a boolean")
    return data


# -- configuration ------------------------------------------------------------


def configRequest(moduleId: str) -> bytes:
    """C{moduleId} asks the manager for its configuration."""
    return encode("GetConfig", {"type": "Get", "origin": moduleId, "request": {"type": "Module"}})


def metadata(moduleName: str, provides: Mapping[str, str]) -> bytes:
    """What a module announces: its name and the interface of each implementation."""
    return encode(
        "GetConfigResponse",
        {
            "module": moduleName,
            "provides": {impl: {"interface": intf} for impl, intf in provides.items()},
        },
    )


class ConfigRefused(MalformedMessage):
    """The manager answered, but not with a configuration (C{status} not C{Ok})."""


@dataclass(frozen=True)
class ModuleConfig:
    """
    What the manager says about one module.

    @ivar parameters: configuration values by name, per implementation id,
        C{"!module"} for the module level.
    @ivar connections: per requirement id, the connected
        C{(module id, implementation id)} in index order.
    @ivar mapping: the module's ModuleTierMappings (C{module},
        C{implementations}), or C{None}.
    @ivar mappings: ModuleTierMappings (or C{None}) by module id, for this
        module and each module it is connected to.
    """

    moduleId: str
    moduleName: str
    standalone: bool
    parameters: dict[str, dict[str, Any]]
    connections: dict[str, list[tuple[str, str]]]
    mapping: dict[str, Any] | None
    mappings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def moduleMapping(self) -> dict[str, int] | None:
        """The module's EVSE mapping, C{{"evse": n[, "connector": m]}}, if any."""
        tiers = self.mapping if self.mapping is not None else self.mappings.get(self.moduleId)
        return evseMapping(tiers.get("module") if isinstance(tiers, dict) else None)

    def implementationMapping(self, implementation: str) -> dict[str, int] | None:
        """The implementation's own mapping if configured, else the module's."""
        tiers = self.mapping if self.mapping is not None else self.mappings.get(self.moduleId)
        if isinstance(tiers, dict):
            implementations = tiers.get("implementations")
            if isinstance(implementations, dict):
                own = evseMapping(implementations.get(implementation))
                if own is not None:
                    return own
        return self.moduleMapping()

    def mappingOf(self, moduleId: str) -> dict[str, int] | None:
        """The module mapping of a connected module, if the manager sent it."""
        tiers = self.mappings.get(moduleId)
        return evseMapping(tiers.get("module") if isinstance(tiers, dict) else None)


def evseMapping(value: Any) -> dict[str, int] | None:
    """C{{"evse": n[, "connector": m]}} from a mapping object, or C{None}."""
    if not isinstance(value, dict):
        return None
    result: dict[str, int] = {}
    for key in ("evse", "connector"):
        number = value.get(key)
        if isinstance(number, int) and not isinstance(number, bool):
            result[key] = number
    return result if "evse" in result else None


def _bad(message: str) -> NoReturn:
    raise MalformedMessage(message)


def parseConfigResponse(payload: bytes) -> ModuleConfig:
    """
    The manager's answer to L{configRequest}.

    @raise ConfigRefused: the manager answered with an error status.
    @raise MalformedMessage: anything else wrong.
    """
    data = unwrap(payload, "GetConfigResponse")
    if not isinstance(data, dict):
        _bad("data is not an object")
    status = data.get("status")
    if status != "Ok":
        info = data.get("status_info", "")
        info = cut(info) if isinstance(info, str) else brief(info)
        raise ConfigRefused(f"status {brief(status)}: {info}")
    response = data.get("response")
    if not isinstance(response, dict) or response.get("type") != "Module":
        _bad("response is not a Module response")
    body = response.get("data")
    if not isinstance(body, dict):
        _bad("response data is not an object")
    config = body.get("module_config")
    if not isinstance(config, dict):
        _bad("no module_config")

    moduleId = config.get("module_id")
    if not isTopicLevel(moduleId):
        _bad("module_config without a usable module_id")
    moduleName = config.get("module_name", "")
    if not isinstance(moduleName, str):
        _bad("module_name is not a string")

    parameters: dict[str, dict[str, Any]] = {}
    rawParameters = config.get("configuration_parameters") or {}
    if not isinstance(rawParameters, dict):
        _bad("configuration_parameters is not an object")
    for implementation, params in rawParameters.items():
        if not isinstance(params, list):
            _bad(f"configuration_parameters.{cut(implementation)} is not a list")
        values: dict[str, Any] = {}
        for param in params:
            if not isinstance(param, dict) or not isinstance(param.get("name"), str):
                _bad(f"a parameter of {cut(implementation)} has no name")
            values[param["name"]] = param.get("value")
        parameters[implementation] = values

    connections: dict[str, list[tuple[str, str]]] = {}
    rawConnections = config.get("connections") or {}
    if not isinstance(rawConnections, dict):
        _bad("connections is not an object")
    for requirement, targets in rawConnections.items():
        if not isinstance(targets, list):
            _bad(f"connections.{cut(requirement)} is not a list")
        resolved: list[tuple[str, str]] = []
        for target in targets:
            if not isinstance(target, dict):
                _bad(f"a connection of {cut(requirement)} is not an object")
            module, implementation = target.get("module_id"), target.get("implementation_id")
            if not (isTopicLevel(module) and isTopicLevel(implementation)):
                _bad(
                    f"a connection of {cut(requirement)} has no usable module_id/implementation_id"
                )
            resolved.append((module, implementation))
        connections[requirement] = resolved

    mapping = config.get("mapping")
    if mapping is not None and not isinstance(mapping, dict):
        _bad("mapping is neither an object nor null")
    mappings = body.get("mappings") or {}
    if not isinstance(mappings, dict):
        _bad("mappings is not an object")

    return ModuleConfig(
        moduleId=moduleId,
        moduleName=moduleName,
        standalone=bool(config.get("standalone", False)),
        parameters=parameters,
        connections=connections,
        mapping=mapping,
        mappings=mappings,
        raw=config,
    )
