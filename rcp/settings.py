"""
The settings of ``twistd rcp-agent`` and ``twistd rcp-controller``.

This module is the schema of the YAML files in ``etc/``; each field's help
text is what the examples and ``--help`` say about it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, cast

from twisted.internet.endpoints import clientFromString, serverFromString

from .config import ConfigError, atLeast, positive, setting
from .rpc import RpcLimits
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
            return loadCredentials(self.ca, self.certificate, self.key)
        except TlsFileError as e:
            raise ConfigError(e.problem, f"tls.{e.which}") from None


@dataclass(frozen=True)
class ControllerTlsSettings(TlsSettings):
    peer_name: str | None = setting(
        None,
        help=(
            "name the agent's certificate must carry (its board name, such as"
            " satellite-1); default: the host of the peer endpoint"
        ),
    )


EverestSide = Literal["sim"]


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
    listen: str = setting(
        f"tcp:{DEFAULT_AGENT_PORT}",
        help="Twisted server endpoint string the agent listens on",
        check=serverEndpoint,
    )
    everest: EverestSide = setting("sim", help="the EVerest side: sim (simulated, built in)")
    tls: TlsSettings = setting(help="link security", factory=TlsSettings)
    rpc: RpcSettings = setting(help="RPC limits", factory=RpcSettings)
    link: AgentLinkSettings = setting(help="start-up and liveness", factory=AgentLinkSettings)
    sim: AgentSimSettings = setting(help="the simulated EVerest side", factory=AgentSimSettings)

    def timings(self) -> SyncTimings:
        return SyncTimings(poll_watchdog=self.link.poll_watchdog)


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
    peer: str = setting(
        help="Twisted client endpoint string of the agent, such as tcp:host=10.0.0.2:port=4129",
        check=clientEndpoint,
    )
    everest: EverestSide = setting("sim", help="the EVerest side: sim (simulated, built in)")
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
        if self.tls.mode == "mutual" and self.tls.peer_name is None:
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
        return endpointHost(self.peer)
