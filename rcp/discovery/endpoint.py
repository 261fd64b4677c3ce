"""A client endpoint that connects to where a serial number was last seen."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from .directory import IFinder
from .records import Advert


@implementer(IStreamClientEndpoint)
class DiscoveredEndpoint:
    """
    Each C{connect} asks the finder for the serial number's current advert
    and tries its addresses in turn, so a board that got another address
    since the last attempt is followed.
    """

    def __init__(
        self, reactor: Any, finder: IFinder, serial: str, timeout: float, connectTimeout: float = 5
    ) -> None:
        self.reactor = reactor
        self.finder = finder
        self.serial = serial
        self.timeout = timeout
        self.connectTimeout = connectTimeout

    def __repr__(self) -> str:
        return f"<DiscoveredEndpoint serial={self.serial}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        d = self.finder.whereIs(self.serial, self.timeout)
        d.addCallback(self._connect, protocolFactory, 0)
        return d

    def _connect(self, advert: Advert, factory: IProtocolFactory, index: int) -> Deferred[Any]:
        address = advert.addresses[index]
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = kind(self.reactor, address, advert.port, timeout=self.connectTimeout)
        d = endpoint.connect(factory)
        if index + 1 < len(advert.addresses):

            def nextAddress(failure: Failure) -> Deferred[Any]:
                return self._connect(advert, factory, index + 1)

            d.addErrback(nextAddress)
        return d
