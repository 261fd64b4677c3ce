"""
The DNS-SD records of an rcp link: instance name and TXT keys.

Everything parsed here came from the network, from anyone on the link:
it is checked and bounded, and unusable records are refused with an
L{AdvertError} (one line, cut to a sane length), never an exception of
another type.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

#: rcp's DNS-SD service type (RFC 6763: service names are at most 15 characters)
SERVICE_TYPE: Final = "_rcp-link._tcp.local."

#: the version of the TXT record layout, key C{txtvers}
TXT_VERSION: Final = "1"

#: the wire protocol generation an rcp agent speaks (msgpack-rpc, upstream's methods)
WIRE_PROTOCOL: Final = "1"

_SERIAL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TEXT: Final = re.compile(r"[\x21-\x7e]{1,64}\Z")


class AdvertError(ValueError):
    """A record is unusable; the message says why."""


def checkSerial(serial: str) -> str:
    """
    A serial number usable in a service name, TXT record and certificate.

    @raise ValueError: it is not 1 to 64 letters, digits, C{.}, C{_}, C{-},
        starting with a letter or digit.
    """
    if not isinstance(serial, str) or not _SERIAL.match(serial):
        raise ValueError(
            f"not a serial number (1 to 64 letters, digits, '.', '_', '-'): {_show(serial)}"
        )
    return serial


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Advert:
    """
    One agent's advertisement.

    @ivar serial: the board's serial number.
    @ivar board: the board's name (as in its certificate), if it says.
    @ivar version: the rcp version of the agent.
    @ivar wire: the wire protocol generation.
    @ivar port: the link's TCP port.
    @ivar addresses: the link's IP addresses, as text.
    """

    serial: str
    port: int
    addresses: tuple[str, ...] = ()
    board: str = ""
    version: str = ""
    wire: str = WIRE_PROTOCOL

    @property
    def instance(self) -> str:
        """The DNS-SD instance name, unique per serial number."""
        return f"rcp-{self.serial}.{SERVICE_TYPE}"

    def txt(self) -> dict[str, str]:
        """The TXT record's keys."""
        record = {"txtvers": TXT_VERSION, "serial": self.serial, "wire": self.wire}
        if self.board:
            record["board"] = self.board
        if self.version:
            record["rcp"] = self.version
        return record


def _text(properties: Mapping[bytes, bytes | None], key: str, required: bool) -> str:
    raw = properties.get(key.encode())
    if raw is None:
        if required:
            raise AdvertError(f"TXT record without {key!r}")
        return ""
    if not isinstance(raw, bytes):
        raise AdvertError(f"TXT {key!r} is not text: {_show(raw)}")
    try:
        value = raw.decode("ascii")
    except UnicodeDecodeError:
        raise AdvertError(f"TXT {key!r} is not ASCII: {_show(raw)}") from None
    if not _TEXT.match(value):
        raise AdvertError(f"TXT {key!r} is not 1 to 64 printable characters: {_show(value)}")
    return value


def parseAdvert(
    name: str,
    port: object,
    addresses: Sequence[object],
    properties: Mapping[bytes, bytes | None],
) -> Advert:
    """
    Read an advertisement as resolved from the network.

    @raise AdvertError: it is not a usable rcp advertisement.
    """
    if not isinstance(properties, Mapping):
        raise AdvertError(f"TXT record is not a map: {_show(properties)}")
    try:
        serial = checkSerial(_text(properties, "serial", True))
    except ValueError as e:
        raise AdvertError(str(e)) from None
    if name != f"rcp-{serial}.{SERVICE_TYPE}":
        raise AdvertError(f"instance {_show(name)} does not match its serial number {serial!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AdvertError(f"port is not 1 to 65535: {_show(port)}")
    found: list[str] = []
    for address in list(addresses)[:16]:
        try:
            ip = ipaddress.ip_address(address)  # type: ignore[arg-type]
        except ValueError:
            raise AdvertError(f"not an IP address: {_show(address)}") from None
        if ip.is_multicast or ip.is_unspecified:
            continue
        found.append(str(ip))
    if not found:
        raise AdvertError("no usable address")
    return Advert(
        serial=serial,
        port=port,
        addresses=tuple(found),
        board=_text(properties, "board", False),
        version=_text(properties, "rcp", False),
        wire=_text(properties, "wire", False) or WIRE_PROTOCOL,
    )
