"""The receivers as a Twisted service, listening only on the configured addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..settings import ReceiverSettings
from .disk import diskPool, inline
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
        # files are written in threads of their own, never in the reactor
        # (rcp.receivers.disk); in the calling thread while the service is stopped
        self.reactor = reactor
        self.pool: ThreadPool | None = None
        # FTP receptions in the kernel wait on their sockets: threads of their
        # own, one per data connection at most, so they never hold up a write
        self.receptions: ThreadPool | None = None
        self.addresses = listenAddresses(settings)
        self.store = Store(settings.directory, settings.min_free_bytes, run=self._write)
        self.receivers = Receivers(clock, self.store, settings.http_port)
        book = self.receivers.book
        self.ftpFactory = FtpReceiver(
            book, self.store, clock, settings.idle_timeout, settings.data_timeout
        )
        self.http = HttpReceiver(book, self.store, self.receivers.image)
        site = self.http.site(settings.idle_timeout)
        tcp: IReactorTCP = reactor
        for address in self.addresses:
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

    def _write(self, function: Callable[[], Any]) -> Deferred[Any]:
        if self.pool is None:
            return inline(function)
        return deferToThreadPool(self.reactor, self.pool, function)

    def _receive(self, function: Callable[[], Any]) -> Deferred[Any]:
        assert self.receptions is not None
        return deferToThreadPool(self.reactor, self.receptions, function)

    def startService(self) -> None:
        if self.pool is None:
            self.pool = diskPool()
            self.pool.start()
            self.receptions = ThreadPool(
                minthreads=0,
                maxthreads=max(1, self.settings.max_connections * len(self.addresses)),
                name="rcp-reception",
            )
            self.receptions.start()
            self.store.receive = self._receive
            # a process that ends without stopping this service still ends
            self._shutdown = self.reactor.addSystemEventTrigger(
                "during", "shutdown", self._stopPool
            )
        super().startService()

    def _stopPool(self) -> None:
        self.store.receive = None
        self.store.stopSplicing()
        receptions, self.receptions = self.receptions, None
        if receptions is not None:
            receptions.stop()  # each ends within 0.2 s of its stop signal
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.stop()  # the writes in progress end first

    def stopService(self) -> Deferred[None]:
        self.receivers.book.stop()
        self.store.stopSplicing()
        stopped: Deferred[None] = maybeDeferred(super().stopService)

        def poolStopped(result: object) -> object:
            if self.pool is not None:
                self.reactor.removeSystemEventTrigger(self._shutdown)
                self._stopPool()
            return result

        return stopped.addBoth(poolStopped)
