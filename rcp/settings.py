"""
The settings of ``twistd rcp-agent`` and ``twistd rcp-controller``.

This module is the schema of the YAML files in ``etc/``; each field's help
text is what the examples and ``--help`` say about it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from twisted.internet.endpoints import clientFromString, serverFromString

from .config import Check, ConfigError, atLeast, positive, setting
from .rpc import RpcLimits
from .rpc.guard import GuardLimits
from .sync import SyncTimings
from .tls import Credentials, TlsFileError, loadCredentials

DEFAULT_AGENT_PORT = 4129

# Endpoint strings are parsed without connecting or listening; the parsers
# only keep the reactor they are given.
_NO_REACTOR = cast(Any, object())

_TLS_PREFIXES = ("ssl:", "tls:", "txtorcon", "onion:")


def _checkNotTls(description: str) -> None:
    if description.lower().startswith(_TLS_PREFIXES):
        raise ValueError(
            "give a plain stream endpoint here (such as tcp:...); TLS is set up by the tls section"
        )


def serverEndpoint(description: str) -> None:
    """Check a Twisted server endpoint string, such as C{tcp:4129}."""
    _checkNotTls(description)
    try:
        serverFromString(_NO_REACTOR, description)
    except Exception as e:
        raise ValueError(f"not a server endpoint string ({e or type(e).__name__})") from None


def clientEndpoint(description: str) -> None:
    """Check a Twisted client endpoint string, such as C{tcp:host=sat1:port=4129}."""
    _checkNotTls(description)
    try:
        clientFromString(_NO_REACTOR, description)
    except Exception as e:
        raise ValueError(f"not a client endpoint string ({e or type(e).__name__})") from None


def endpointHost(description: str) -> str | None:
    """The host a client endpoint string connects to, if it names one."""
    for part in description.split(":")[1:]:
        if part.startswith("host="):
            return part[len("host=") :]
    parts = description.split(":")
    if len(parts) >= 3 and parts[0] in ("tcp", "host") and "=" not in parts[1]:
        return parts[1]
    return None


def _isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RpcSettings:
    max_message_size: int = setting(
        1 << 20,
        help="largest message accepted from the peer, in bytes; a larger one ends the link",
        check=atLeast(1024),
    )
    call_timeout: float = setting(
        30.0, help="seconds a call waits for its answer by default", check=positive
    )
    frame_timeout: float = setting(
        30.0,
        help="seconds a message that has started to arrive may take to complete",
        check=positive,
    )
    write_stall_timeout: float = setting(
        60.0,
        help="seconds the peer may leave our data unread before the link is cut",
        check=positive,
    )
    max_concurrent_requests: int = setting(
        256,
        help="requests from the peer handled at once; beyond it reading pauses",
        check=atLeast(1),
    )

    def limits(self) -> RpcLimits:
        return RpcLimits(
            maxMessageSize=self.max_message_size,
            callTimeout=self.call_timeout,
            frameTimeout=self.frame_timeout,
            writeStallTimeout=self.write_stall_timeout,
            maxConcurrentRequests=self.max_concurrent_requests,
        )


TlsMode = Literal["mutual", "plain"]


@dataclass(frozen=True)
class TlsSettings:
    mode: TlsMode = setting(
        "mutual",
        help=(
            "mutual: TLS, both ends show a certificate of the station CA;"
            " plain: unauthenticated TCP, only for links to C++ boards"
        ),
    )
    ca: str | None = setting(None, help="PEM file of the station CA (rcp certs: ca.pem)")
    certificate: str | None = setting(None, help="PEM certificate of this board")
    key: str | None = setting(None, help="PEM private key of this board (mode 0600)")

    def validate(self) -> None:
        if self.mode == "mutual":
            for name in ("ca", "certificate", "key"):
                if getattr(self, name) is None:
                    raise ConfigError(
                        "missing: mutual TLS needs ca, certificate and key"
                        " (or set tls.mode: plain for an unauthenticated link)",
                        name,
                    )

    def credentials(self) -> Credentials | None:
        """
        Load the TLS files (L{None} in plain mode).

        @raise ConfigError: a file is unusable; the path names its setting.
        """
        if self.mode == "plain":
            return None
        assert self.ca is not None and self.certificate is not None and self.key is not None
        try:
            credentials = loadCredentials(self.ca, self.certificate, self.key)
        except TlsFileError as e:
            raise ConfigError(e.problem, f"tls.{e.which}") from None
        return replace(credentials, allowedClients=frozenset(self.clients()))

    def clients(self) -> list[str]:
        """The board names a client must be (server side); empty: any of the station."""
        return []


@dataclass(frozen=True)
class AgentTlsSettings(TlsSettings):
    allowed_clients: list[str] = setting(
        help=(
            "board names a controller's certificate must carry, such as [main];"
            " empty: any certificate of the station CA"
        ),
        factory=list,
    )

    def clients(self) -> list[str]:
        return list(self.allowed_clients)


@dataclass(frozen=True)
class ControllerTlsSettings(TlsSettings):
    peer_name: str | None = setting(
        None,
        help=(
            "name the agent's certificate must carry (its board name, such as"
            " satellite-1); default: the host of the peer endpoint"
        ),
    )


EverestSide = Literal["sim", "mqtt"]

#: the broker EVerest uses unless told otherwise (env: see L{MqttSettings.broker})
DEFAULT_MQTT_HOST = "127.0.0.1"
DEFAULT_MQTT_PORT = 1883


def _portNumber(value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"must be a port number (1 to 65535), got {value}")


def _moduleId(value: str) -> None:
    if not value or any(c in value for c in "/+#") or value.strip() != value:
        raise ValueError(f"{value!r} cannot be an EVerest module id")


def _moduleIds(value: list[str]) -> None:
    for moduleId in value:
        _moduleId(moduleId)
    if len(set(value)) != len(value):
        raise ValueError("a module id appears twice")


@dataclass(frozen=True)
class MqttSettings:
    host: str = setting(
        DEFAULT_MQTT_HOST,
        help=(
            "the MQTT broker of this board's EVerest (env MQTT_SERVER_ADDRESS wins, as in EVerest)"
        ),
    )
    port: int = setting(
        DEFAULT_MQTT_PORT,
        help="the broker's port (env MQTT_SERVER_PORT wins, as in EVerest)",
        check=_portNumber,
    )
    prefix: str = setting(
        "everest",
        help="the everest topic prefix (EVerest: settings.mqtt_everest_prefix); / is appended",
    )
    module_ids: list[str] = setting(
        help=(
            "ids of the modules this process is in the EVerest config (marked standalone):"
            " the agent one SatelliteAgent, a controller one or more SatelliteController"
        ),
        factory=list,
        check=_moduleIds,
    )

    def broker(self, environ: Mapping[str, str]) -> tuple[str, int]:
        """
        The broker's host and port: the environment variables EVerest itself
        reads win over these settings.

        @raise ConfigError: C{MQTT_SERVER_PORT} is not a port number.
        """
        host = environ.get("MQTT_SERVER_ADDRESS") or self.host
        port = self.port
        text = environ.get("MQTT_SERVER_PORT")
        if text:
            try:
                port = int(text)
                _portNumber(port)
            except ValueError:
                raise ConfigError(
                    f"environment MQTT_SERVER_PORT={text!r} is not a port number", "mqtt.port"
                ) from None
        return host, port


@dataclass(frozen=True)
class ControllerMqttSettings(MqttSettings):
    aggregator_id: str | None = setting(
        None,
        help="the SystemAggregator module id this controller process also hosts",
        check=_moduleId,
    )


@dataclass(frozen=True)
class AgentLinkSettings:
    poll_watchdog: float = setting(
        60.0,
        help="seconds without a poll from the controller after which the board resets",
        check=positive,
    )
    hold_time: float = setting(
        1.0,
        help="seconds an empty poll is held open, waiting for an event (the idle link's pace)",
        check=positive,
    )
    queue_limit: int = setting(
        1000,
        help="events waiting for the controller beyond which the board resets (upstream: 1000)",
        check=atLeast(10),
    )


def _within(low: float, high: float) -> Check:
    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {value:g}")

    return check


@dataclass(frozen=True)
class AgentGuardSettings:
    handshake_timeout: float = setting(
        5.0,
        help="seconds a client may take to complete the TLS handshake",
        check=_within(0.1, 600),
    )
    first_request_timeout: float = setting(
        10.0,
        help="seconds from the connection (after the TLS handshake) to the client's first request",
        check=_within(0.1, 600),
    )
    max_unauthenticated: int = setting(
        64,
        help=(
            "connections that have not made their first request yet, at most;"
            " one more closes the oldest of them"
        ),
        check=_within(1, 100000),
    )

    def limits(self) -> GuardLimits:
        return GuardLimits(
            handshakeTimeout=self.handshake_timeout,
            firstRequestTimeout=self.first_request_timeout,
            maxUnauthenticated=self.max_unauthenticated,
        )


@dataclass(frozen=True)
class AgentSimSettings:
    evse_id: int = setting(
        1, help="the EVSE number the station has for this port", check=atLeast(1)
    )
    meter_interval: float = setting(
        1.0, help="seconds between two simulated power meter readings", check=positive
    )


@dataclass(frozen=True)
class AgentSettings:
    listen: str | None = setting(
        None,
        help=(
            "Twisted server endpoint string the agent listens on;"
            f" default tcp:{DEFAULT_AGENT_PORT},"
            " with everest: mqtt tcp:<port of the SatelliteAgent module config>"
        ),
        check=serverEndpoint,
    )
    everest: EverestSide = setting(
        "sim",
        help="the EVerest side: sim (simulated, built in) or mqtt (a standalone module of EVerest)",
    )
    mqtt: MqttSettings = setting(help="with everest: mqtt", factory=MqttSettings)
    tls: AgentTlsSettings = setting(help="link security", factory=AgentTlsSettings)
    rpc: RpcSettings = setting(help="RPC limits", factory=RpcSettings)
    link: AgentLinkSettings = setting(help="start-up and liveness", factory=AgentLinkSettings)
    guard: AgentGuardSettings = setting(
        help="limits for connections before their first request", factory=AgentGuardSettings
    )
    sim: AgentSimSettings = setting(help="the simulated EVerest side", factory=AgentSimSettings)

    def timings(self) -> SyncTimings:
        return SyncTimings(poll_watchdog=self.link.poll_watchdog)

    def validate(self) -> None:
        if self.everest == "mqtt" and len(self.mqtt.module_ids) != 1:
            raise ConfigError(
                "with everest: mqtt, give exactly one module id: the SatelliteAgent's id"
                " in this board's EVerest config",
                "mqtt.module_ids",
            )

    @property
    def listenEndpoint(self) -> str:
        """Where to listen when nothing else decides it."""
        return self.listen if self.listen is not None else f"tcp:{DEFAULT_AGENT_PORT}"


@dataclass(frozen=True)
class ControllerLinkSettings:
    here_timeout: float = setting(
        5.0, help="seconds an i_am_here call may take before it is repeated", check=positive
    )
    retry_interval: float = setting(1.0, help="seconds between connection attempts", check=positive)
    poll_timeout: float = setting(
        30.0,
        help="seconds a poll may take before the link counts as lost",
        check=positive,
    )
    hold_time: float = setting(
        1.0,
        help=(
            "seconds the agent holds an empty poll; empty answers much faster than this"
            " (a C++ agent) are paced at 25 ms"
        ),
        check=positive,
    )

    def validate(self) -> None:
        if self.poll_timeout <= self.hold_time:
            raise ConfigError(
                f"must be longer than link.hold_time ({self.hold_time:g} s)", "poll_timeout"
            )


@dataclass(frozen=True)
class ControllerSimSettings:
    evse_id: int = setting(
        2, help="the EVSE number of the satellite's port on the main board", check=atLeast(1)
    )
    accepted_tokens: list[str] = setting(
        help="RFID ids the simulated authorization accepts",
        factory=lambda: ["DEADBEEF", "CAFEBABE"],
    )


@dataclass(frozen=True)
class ControllerSettings:
    peer: str | None = setting(
        None,
        help=(
            "Twisted client endpoint string of the agent, such as tcp:host=10.0.0.2:port=4129;"
            " required with everest: sim, with everest: mqtt it overrides the module config's"
            " hostname and port"
        ),
        check=clientEndpoint,
    )
    everest: EverestSide = setting(
        "sim",
        help="the EVerest side: sim (simulated, built in) or mqtt (standalone modules of EVerest)",
    )
    mqtt: ControllerMqttSettings = setting(
        help="with everest: mqtt", factory=ControllerMqttSettings
    )
    tls: ControllerTlsSettings = setting(help="link security", factory=ControllerTlsSettings)
    rpc: RpcSettings = setting(help="RPC limits", factory=RpcSettings)
    link: ControllerLinkSettings = setting(
        help="start-up and liveness", factory=ControllerLinkSettings
    )
    sim: ControllerSimSettings = setting(
        help="the simulated EVerest side", factory=ControllerSimSettings
    )

    def timings(self) -> SyncTimings:
        return SyncTimings(
            here_timeout=self.link.here_timeout,
            retry_interval=self.link.retry_interval,
            poll_timeout=self.link.poll_timeout,
        )

    def validate(self) -> None:
        if self.everest == "sim" and self.peer is None:
            raise ConfigError("missing (required with everest: sim)", "peer")
        if self.everest == "mqtt":
            if not self.mqtt.module_ids:
                raise ConfigError(
                    "with everest: mqtt, give the id of at least one SatelliteController"
                    " module of this board's EVerest config",
                    "mqtt.module_ids",
                )
            if self.peer is not None and len(self.mqtt.module_ids) > 1:
                raise ConfigError(
                    "one peer cannot serve several module ids: leave it out, each"
                    " SatelliteController's hostname and port are used",
                    "peer",
                )
            if self.mqtt.aggregator_id in self.mqtt.module_ids:
                raise ConfigError(
                    "the SystemAggregator's module id is also one of module_ids",
                    "mqtt.aggregator_id",
                )
        if self.peer is not None and self.tls.mode == "mutual" and self.tls.peer_name is None:
            host = endpointHost(self.peer)
            if host is None:
                raise ConfigError(
                    "missing: the peer endpoint names no host, so give the name in"
                    " the agent's certificate (such as satellite-1)",
                    "tls.peer_name",
                )
            if _isAddress(host):
                raise ConfigError(
                    f"missing: the agent is given by address ({host}), so give the"
                    " name in its certificate (such as satellite-1)",
                    "tls.peer_name",
                )

    @property
    def peerName(self) -> str | None:
        if self.tls.peer_name is not None:
            return self.tls.peer_name
        return endpointHost(self.peer) if self.peer is not None else None
