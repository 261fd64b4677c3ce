"""The agent's advert: what it says about itself, from its settings."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..tls import Credentials
from .mdns import Advertiser
from .records import WIRE_PROTOCOL, Advert
from .serial import SerialError, readSerial


def advertiser(
    reactor: Any, settings: Any, port: int, credentials: Credentials | None
) -> Advertiser:
    """
    The advert of an agent listening on C{port}.

    @param settings: the agent's L{rcp.settings.AgentDiscoverySettings}.
    @raise SerialError: the serial number cannot be read.
    """
    serial = readSerial(settings.serial, settings.serial_file)
    board = settings.board or (credentials.name if credentials is not None else "")
    advert = Advert(
        serial=serial,
        port=port,
        addresses=tuple(settings.addresses),
        board=board,
        version=__version__,
        wire=WIRE_PROTOCOL,
    )
    return Advertiser(reactor, advert, settings.addresses)


__all__ = ["SerialError", "advertiser"]
