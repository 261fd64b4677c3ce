"""
The settings of ``twistd rcp-agent`` and ``twistd rcp-controller``.

This module is the schema of the YAML files in ``etc/``; each field's help
text is what the examples and ``--help`` say about it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from twisted.internet.endpoints import clientFromString, serverFromString

from .config import MAX_SECONDS, Check, ConfigError, atLeast, between, positive, setting
from .discovery.records import checkSerial
from .discovery.serial import DEVICE_TREE_SERIAL
from .health.versions import FIELDS
from .rpc import RpcLimits
from .rpc.guard import GuardLimits
from .sync import SyncTimings
from .tls import Credentials, TlsFileError, loadCredentials

DEFAULT_AGENT_PORT = 4129

#: EVSE ids are 32-bit signed integers in EVerest's types
MAX_EVSE_ID = 2**31 - 1

# Endpoint strings are parsed without connecting or listening; the parsers
# only keep the reactor they are given.
_NO_REACTOR = cast(Any, object())

_TLS_PREFIXES = ("ssl:", "tls:", "txtorcon", "onion:")


def _checkNotTls(description: str) -> None:
    if description.lower().startswith(_TLS_PREFIXES):
        raise ValueError(
            "give a plain stream endpoint here (such as tcp:...); TLS is set up by the tls section"
        )


def _checkPort(endpoint: object, description: str, low: int) -> None:
    """
    The endpoint parsers take any integer as a port; the socket call would
    fail only when the service starts, with a traceback.
    """
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not low <= port <= 65535:
        raise ValueError(f"port {port} in {description!r} is not a port number ({low} to 65535)")


def serverEndpoint(description: str) -> None:
    """Check a Twisted server endpoint string, such as C{tcp:4129}."""
    _checkNotTls(description)
    try:
        endpoint = serverFromString(_NO_REACTOR, description)
    except Exception as e:
        raise ValueError(f"not a server endpoint string ({e or type(e).__name__})") from None
    _checkPort(endpoint, description, 0)


def clientEndpoint(description: str) -> None:
    """Check a Twisted client endpoint string, such as C{tcp:host=sat1:port=4129}."""
    _checkNotTls(description)
    try:
        endpoint = clientFromString(_NO_REACTOR, description)
    except Exception as e:
        raise ValueError(f"not a client endpoint string ({e or type(e).__name__})") from None
    _checkPort(endpoint, description, 1)


def endpointHost(description: str) -> str | None:
    """The host a client endpoint string connects to, if it names one."""
    for part in description.split(":")[1:]:
        if part.startswith("host="):
            return part[len("host=") :]
    parts = description.split(":")
    if len(parts) >= 3 and parts[0] in ("tcp", "host") and "=" not in parts[1]:
        return parts[1]
    return None


def endpointPort(description: str) -> int | None:
    """The TCP port a server endpoint string listens on, if it names one."""
    parts = description.split(":")
    for part in parts[1:]:
        if part.startswith("port="):
            part = part[len("port=") :]
        elif "=" in part:
            continue
        return int(part) if part.isdigit() else None
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
        check=atLeast(1024, 1 << 30),
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
        check=atLeast(1, 65536),
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


_SUMMARY_HELP = (
    "seconds between two one-line summaries of a synchronised link at info level"
    " (peer, round-trip time, events forwarded); 0: no summaries"
)

LogLevel = Literal["debug", "info", "warn", "error"]

_LOG_LEVEL_HELP = "the lowest level logged: debug, info, warn or error (--debug sets debug)"


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
        check=atLeast(10, 1_000_000),
    )
    summary_interval: float = setting(600.0, help=_SUMMARY_HELP, check=between(0, MAX_SECONDS))
    liveness: float = setting(
        5.0,
        help=(
            "seconds without a poll after which the board resets when the controller is"
            " rcp (a C++ controller keeps poll_watchdog)"
        ),
        check=positive,
    )

    def validate(self) -> None:
        if self.liveness <= self.hold_time:
            raise ConfigError(
                f"must be longer than link.hold_time ({self.hold_time:g} s)", "liveness"
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
        1, help="the EVSE number the station has for this port", check=atLeast(1, MAX_EVSE_ID)
    )
    meter_interval: float = setting(
        1.0, help="seconds between two simulated power meter readings", check=positive
    )


def _serialNumber(value: str | None) -> None:
    if value is not None:
        checkSerial(value)


def _addresses(value: list[str]) -> None:
    for address in value:
        if not _isAddress(address):
            raise ValueError(f"not an IP address: {address!r}")


def _fields(value: list[str]) -> None:
    for name in value:
        if name not in FIELDS:
            raise ValueError(f"{name!r} is not one of {', '.join(FIELDS)}")


VersionPolicy = Literal["warn", "refuse"]


@dataclass(frozen=True)
class VersionSettings:
    policy: VersionPolicy = setting(
        "warn",
        help=(
            "a mismatch of the versions in compare: warn (log it, raise an EVerest error on"
            " the main board, synchronise anyway) or refuse (do not synchronise)"
        ),
    )
    compare: list[str] = setting(
        help="what must match between the boards: rcp, wire, firmware, everest",
        factory=lambda: ["wire", "rcp"],
        check=_fields,
    )
    firmware: str | None = setting(
        None, help="this board's firmware version; null: from /etc/os-release"
    )
    everest: str = setting("", help="this board's EVerest version, if it is to be compared")


def runDirectory() -> str:
    """Where status sockets live: /run/rcp, or the environment's RCP_RUN_DIRECTORY."""
    return os.environ.get("RCP_RUN_DIRECTORY") or "/run/rcp"


@dataclass(frozen=True)
class StatusSettings:
    socket: str | None = setting(
        None,
        help=(
            "the status socket that rcp status reads; null: /run/rcp/<config file name>.sock;"
            ' "": none'
        ),
    )
    prometheus: str | None = setting(
        None,
        help=(
            "server endpoint string for /metrics in Prometheus' format, such as"
            " tcp:9464:interface=127.0.0.1; null: off"
        ),
        check=lambda value: serverEndpoint(value) if value is not None else None,
    )

    def socketPath(self, configFile: str | None, command: str) -> str | None:
        if self.socket == "":
            return None
        if self.socket is not None:
            return self.socket
        stem = Path(configFile).stem if configFile else command
        return f"{runDirectory()}/{stem}.sock"


@dataclass(frozen=True)
class AgentDiscoverySettings:
    advertise: bool = setting(
        False, help="advertise the link by mDNS/DNS-SD with the board's serial number"
    )
    serial: str | None = setting(
        None, help="the board's serial number; default: read from serial_file", check=_serialNumber
    )
    serial_file: str = setting(
        DEVICE_TREE_SERIAL, help="file holding the board's serial number (if serial is not set)"
    )
    board: str | None = setting(
        None, help="board name in the advert; default: the name in this board's certificate"
    )
    addresses: list[str] = setting(
        help="IP addresses to advertise and to answer mDNS on; empty: every interface's",
        factory=list,
        check=_addresses,
    )


@dataclass(frozen=True)
class ControllerDiscoverySettings:
    serial: str | None = setting(
        None,
        help=(
            "serial number of the agent's board: find it by mDNS/DNS-SD instead of"
            " a fixed address (peer)"
        ),
        check=_serialNumber,
    )
    timeout: float = setting(
        10.0, help="seconds a connection attempt waits for the agent's advert", check=positive
    )
    interfaces: list[str] = setting(
        help="IP addresses of this board to browse on; empty: every interface",
        factory=list,
        check=_addresses,
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
    log_level: LogLevel = setting("info", help=_LOG_LEVEL_HELP)
    discovery: AgentDiscoverySettings = setting(
        help="discovery by serial number", factory=AgentDiscoverySettings
    )
    versions: VersionSettings = setting(
        help="version consistency with the controller", factory=VersionSettings
    )
    status: StatusSettings = setting(help="the local status endpoint", factory=StatusSettings)

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
    summary_interval: float = setting(600.0, help=_SUMMARY_HELP, check=between(0, MAX_SECONDS))
    liveness: float = setting(
        5.0,
        help=(
            "seconds a poll may take before the link counts as lost when the agent is rcp"
            " (a C++ agent keeps poll_timeout)"
        ),
        check=positive,
    )

    def validate(self) -> None:
        if self.liveness <= self.hold_time:
            raise ConfigError(
                f"must be longer than link.hold_time ({self.hold_time:g} s)", "liveness"
            )
        if self.poll_timeout <= self.hold_time:
            raise ConfigError(
                f"must be longer than link.hold_time ({self.hold_time:g} s)", "poll_timeout"
            )


@dataclass(frozen=True)
class ControllerSimSettings:
    evse_id: int = setting(
        2,
        help="the EVSE number of the satellite's port on the main board",
        check=atLeast(1, MAX_EVSE_ID),
    )
    accepted_tokens: list[str] = setting(
        help="RFID ids the simulated authorization accepts",
        factory=lambda: ["DEADBEEF", "CAFEBABE"],
    )


def _listenAddresses(value: list[str]) -> None:
    for address in value:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address") from None
        if parsed.is_unspecified:
            raise ValueError(
                f"{address} would listen on every interface; name the link addresses instead"
            )


@dataclass(frozen=True)
class ReceiverSettings:
    enabled: bool = setting(
        True, help="run the FTP and HTTP receivers for log uploads and firmware downloads"
    )
    ftp_port: int = setting(2121, help="the FTP receiver's port (log uploads)", check=_portNumber)
    http_port: int = setting(
        2180,
        help="the HTTP receiver's port (log uploads by PUT, firmware downloads)",
        check=_portNumber,
    )
    listen: list[str] = setting(
        help="addresses to listen on besides 127.0.0.1: the main board's satellite link addresses",
        factory=list,
        check=_listenAddresses,
    )
    directory: str = setting(
        "/var/lib/rcp/receivers", help="where received logs and firmware images are kept"
    )
    max_upload_bytes: int = setting(
        256 * 1024 * 1024,
        help="the most one board may upload for one request, in bytes",
        check=between(1, 2**48),
    )
    min_free_bytes: int = setting(
        64 * 1024 * 1024,
        help="free disk space kept in directory, in bytes; uploads that would use it are refused",
        check=between(0, 2**48),
    )
    idle_timeout: float = setting(
        60.0, help="seconds a control connection may stay silent", check=between(1, MAX_SECONDS)
    )
    data_timeout: float = setting(
        30.0,
        help="seconds an FTP data connection may stay silent during an upload",
        check=between(1, MAX_SECONDS),
    )
    max_connections: int = setting(
        64, help="connections each receiver holds at once; more are closed", check=between(1, 10000)
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
    log_level: LogLevel = setting("info", help=_LOG_LEVEL_HELP)
    discovery: ControllerDiscoverySettings = setting(
        help="finding the agent by its board's serial number", factory=ControllerDiscoverySettings
    )
    versions: VersionSettings = setting(
        help="version consistency with the agent", factory=VersionSettings
    )
    status: StatusSettings = setting(help="the local status endpoint", factory=StatusSettings)
    receivers: ReceiverSettings = setting(
        help="the FTP and HTTP receivers of the main board", factory=ReceiverSettings
    )

    def timings(self) -> SyncTimings:
        return SyncTimings(
            here_timeout=self.link.here_timeout,
            retry_interval=self.link.retry_interval,
            poll_timeout=self.link.poll_timeout,
        )

    def validate(self) -> None:
        if self.everest == "sim" and self.peer is None and self.discovery.serial is None:
            raise ConfigError(
                "missing (required with everest: sim, unless discovery.serial is set)", "peer"
            )
        if self.peer is not None and self.discovery.serial is not None:
            raise ConfigError(
                "give either peer (a fixed address) or discovery.serial, not both",
                "discovery.serial",
            )
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
        if self.discovery.serial is not None:
            # rcp certs --serial puts the serial number in the board's certificate
            return self.discovery.serial
        return endpointHost(self.peer) if self.peer is not None else None
