"""The receivers as a Twisted service, listening only on the configured addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime

from ..settings import ReceiverSettings
from .facade import Receivers
from .ftp import FtpReceiver
from .http import HttpReceiver
from .limits import CappedFactory
from .store import Store

LOOPBACK = "127.0.0.1"


def listenAddresses(settings: ReceiverSettings) -> list[str]:
    """Loopback and the configured link addresses, each once; never the wildcard."""
    addresses = [LOOPBACK]
    for address in settings.listen:
        if ipaddress.ip_address(address).is_unspecified:
            raise ValueError(f"{address}: the receivers never listen on every interface")
        if address not in addresses:
            addresses.append(address)
    return addresses


class ReceiverService(MultiService):
    """Starts the FTP and HTTP receivers on every listen address."""

    def __init__(self, reactor: Any, settings: ReceiverSettings) -> None:
        super().__init__()
        self.settings = settings
        clock: IReactorTime = reactor
        self.store = Store(settings.directory, settings.min_free_bytes)
        self.receivers = Receivers(clock, self.store, settings.http_port)
        book = self.receivers.book
        self.ftpFactory = FtpReceiver(
            book, self.store, clock, settings.idle_timeout, settings.data_timeout
        )
        self.http = HttpReceiver(book, self.store, self.receivers.image)
        site = self.http.site(settings.idle_timeout)
        tcp: IReactorTCP = reactor
        for address in listenAddresses(settings):
            endpoint: Any = TCP6ServerEndpoint if ":" in address else TCP4ServerEndpoint
            for port, factory, name in (
                (settings.ftp_port, self.ftpFactory, "FTP"),
                (settings.http_port, site, "HTTP"),
            ):
                capped = CappedFactory(factory, settings.max_connections, name)
                service = StreamServerEndpointService(
                    endpoint(tcp, port, interface=address), capped
                )
                service._raiseSynchronously = True
                service.setServiceParent(self)

    def stopService(self) -> Any:
        self.receivers.book.stop()
        return super().stopService()
