"""
A test double of the EVerest manager, written from the protocol notes
(docs: everest-mqtt.md §2b, §3): it answers module config requests and
runs the ready handshake, on a real broker.

What it records (L{ManagerDouble.events}) lets tests check the order of
the handshake: C{("config", origin)}, C{("metadata", id, data)},
C{("ready", id, data)}, C{("global-ready",)}.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from rcp.everest.mqtt.connection import IMqttReactor, MqttConnection, MqttMessage


def parameter(name: str, value: Any) -> dict[str, Any]:
    """One configuration parameter as the manager sends it."""
    if isinstance(value, bool):
        datatype = "bool"
    elif isinstance(value, int):
        datatype = "integer"
    elif isinstance(value, float):
        datatype = "number"
    else:
        datatype = "string"
    return {
        "name": name,
        "value": value,
        "characteristics": {"datatype": datatype, "mutability": "ReadOnly"},
    }


def moduleConfig(
    moduleId: str,
    moduleName: str,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    connections: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    mapping: dict[str, Any] | None = None,
    standalone: bool = True,
    implementations: Iterable[str] = (),
) -> dict[str, Any]:
    """
    A ModuleConfig object (§2b) for a module.

    @param implementations: the module's implementation ids (its manifest's
        C{provides}): the real manager lists each one in
        C{configuration_parameters}, with no parameters when it has none
        (tests.test_everest_real compares the two answers).
    """
    values = {"!module": {}, **{impl: {} for impl in implementations}, **(parameters or {})}
    return {
        "standalone": standalone,
        "module_name": moduleName,
        "module_id": moduleId,
        "configuration_parameters": {
            impl: [parameter(name, value) for name, value in given.items()]
            for impl, given in values.items()
        },
        "telemetry_enabled": False,
        "connections": {
            requirement: [
                {"module_id": module, "implementation_id": impl, "requirement": {"id": requirement}}
                for module, impl in targets
            ]
            for requirement, targets in (connections or {}).items()
        },
        "mapping": mapping,
        "access": None,
    }


def encode(msgType: str, data: Any) -> bytes:
    return json.dumps({"msg_type": msgType, "data": data}).encode()


class ManagerDouble:
    """
    The manager's side of the handshake for the modules in C{configs}.

    @param configs: the ModuleConfig of each module, by module id.
    @param expectReady: the modules whose ModuleReady it waits for before
        global ready (default: all of C{configs}).
    @param mappings: the C{mappings} of the config answer, by module id.
    @param moduleNames: publish the retained C{{prefix}module_names} (C{{id:
        ModuleName}} of C{configs}) at start and clear it at global ready,
        as the real manager does.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IMqttReactor,
        port: int,
        prefix: str,
        configs: Mapping[str, dict[str, Any]],
        expectReady: Collection[str] | None = None,
        mappings: Mapping[str, Any] | None = None,
        moduleNames: bool = False,
    ) -> None:
        self.prefix = prefix
        self.moduleNames = moduleNames
        self.configs = dict(configs)
        self.expectReady = set(configs if expectReady is None else expectReady)
        self.mappings = dict(mappings or {})
        self.connection = MqttConnection(reactor, "127.0.0.1", port, clientId="manager-double")
        self.events: list[tuple[Any, ...]] = []
        self.requests: list[bytes] = []
        self.ready: set[str] = set()
        self.globallyReady = False
        self._globalWaiters: list[Deferred[None]] = []

    async def start(self) -> None:
        connection = self.connection
        connection.start()
        await connection.whenConnected()
        p = self.prefix
        if self.moduleNames:
            names = {moduleId: c["module_name"] for moduleId, c in self.configs.items()}
            await connection.publish(
                f"{p}module_names", encode("GetConfigResponse", names), retain=True
            )
        await connection.subscribe(f"{p}config/request", self._configRequest)
        await connection.subscribe(f"{p}modules/+/metadata", self._metadata)
        await connection.subscribe(f"{p}modules/+/ready", self._moduleReady)

    def stop(self) -> Deferred[None]:
        return self.connection.disconnect()

    def whenGloballyReady(self) -> Deferred[None]:
        if self.globallyReady:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._globalWaiters.append(d)
        return d

    def _configRequest(self, message: MqttMessage) -> None:
        self.requests.append(message.payload)
        try:
            request = json.loads(message.payload)
            data = request["data"]
            origin = data["origin"]
            assert request["msg_type"] == "GetConfig"
            assert data["type"] == "Get" and data["request"] == {"type": "Module"}
        except (ValueError, KeyError, TypeError, AssertionError):
            self.log.warn("manager double: bad config request {payload!r}", payload=message.payload)
            return
        self.events.append(("config", origin))
        config = self.configs.get(origin)
        if config is None:
            return  # the framework's manager does not answer either
        mappings = {origin: self.mappings.get(origin)}
        for targets in config["connections"].values():
            for target in targets:
                mappings[target["module_id"]] = self.mappings.get(target["module_id"])
        answer = {
            "status": "Ok",
            "status_info": "",
            "type": "Get",
            "response": {
                "type": "Module",
                "data": {"module_config": config, "mappings": mappings},
            },
        }
        self.connection.publish(
            f"{self.prefix}modules/{origin}/response", encode("GetConfigResponse", answer)
        )

    def _metadata(self, message: MqttMessage) -> None:
        moduleId = message.topic[len(self.prefix) :].split("/")[1]
        self.events.append(("metadata", moduleId, json.loads(message.payload)))

    def _moduleReady(self, message: MqttMessage) -> None:
        moduleId = message.topic[len(self.prefix) :].split("/")[1]
        payload = json.loads(message.payload)
        self.events.append(("ready", moduleId, payload))
        if payload.get("msg_type") != "ModuleReady" or payload.get("data") is not True:
            return
        self.ready.add(moduleId)
        if self.ready >= self.expectReady:
            # like the real manager: every complete round of ready publishes
            # global ready, a repeated module ready included
            self.globallyReady = True
            self.events.append(("global-ready",))
            if self.moduleNames:
                self.connection.publish(f"{self.prefix}module_names", b"", qos=0, retain=True)
            self.connection.publish(f"{self.prefix}ready", encode("GlobalReady", True))
            waiters, self._globalWaiters = self._globalWaiters, []
            for waiter in waiters:
                waiter.callback(None)
