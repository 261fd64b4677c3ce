"""
The mDNS side of discovery, on python-zeroconf.

python-zeroconf runs its own thread (an asyncio loop) and calls browse
handlers in a thread of its own; nothing of it runs in the reactor thread.
Results cross into the reactor with C{callFromThread} only, and the calls
that block (registering, resolving, closing) run in those threads or in the
reactor's thread pool, never in the reactor thread.  Every error of the
zeroconf side, and every unusable record from the network, is one log
line: it never stops the browser or the advert.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from .directory import Directory
from .records import SERVICE_TYPE, Advert, AdvertError, parseAdvert

#: milliseconds a browse handler waits for an advert's records
RESOLVE_MS = 3000


def _interfaces(addresses: Sequence[str]) -> Any:
    from zeroconf import InterfaceChoice

    return list(addresses) if addresses else InterfaceChoice.All


def _problem(failure: Failure) -> str:
    return failure.getErrorMessage() or type(failure.value).__name__


def _inThread(reactor: Any, f: Any, *args: Any) -> Deferred[Any]:
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)


def localAddresses() -> list[str]:
    """The host's IPv4 addresses other than loopback, to advertise."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found


class Advertiser(Service):
    """
    Advertise this agent's link while the service runs.

    @ivar advert: what is advertised; empty C{addresses}: every IPv4 address
        of the host but loopback.
    """

    log = Logger()

    def __init__(self, reactor: Any, advert: Advert, interfaces: Sequence[str] = ()) -> None:
        self.reactor = reactor
        self.advert = advert
        self.interfaces = tuple(interfaces)
        self._zeroconf: Any = None
        self._info: Any = None
        self._started: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._started = _inThread(self.reactor, self._register)
        self._started.addCallbacks(self._registered, self._failed)

    def _register(self) -> None:
        from zeroconf import ServiceInfo, Zeroconf

        addresses = list(self.advert.addresses) or localAddresses()
        self._info = ServiceInfo(
            SERVICE_TYPE,
            self.advert.instance,
            port=self.advert.port,
            properties=self.advert.txt(),
            addresses=[socket.inet_aton(a) for a in addresses if ":" not in a],
            server=f"rcp-{self.advert.serial}.local.",
        )
        self._zeroconf = Zeroconf(interfaces=_interfaces(self.interfaces))
        self._zeroconf.register_service(self._info, cooperating_responders=False)

    def _registered(self, _: None) -> None:
        self.log.info(
            "discovery: advertising serial number {serial} on port {port} ({addresses})",
            serial=self.advert.serial,
            port=self.advert.port,
            addresses=", ".join(self._info.parsed_addresses()) if self._info else "?",
        )

    def _failed(self, failure: Failure) -> None:
        self.log.error(
            "discovery: cannot advertise serial number {serial}: {problem}"
            " (the link still works at its address)",
            serial=self.advert.serial,
            problem=_problem(failure),
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        started, self._started = self._started, None
        if started is None:
            return None

        def withdraw(_: object) -> Deferred[None]:
            return _inThread(self.reactor, self._withdraw)

        started.addBoth(withdraw)
        started.addErrback(lambda f: None)
        return started

    def _withdraw(self) -> None:
        zc, self._zeroconf = self._zeroconf, None
        if zc is None:
            return
        try:
            if self._info is not None:
                zc.unregister_service(self._info)
        finally:
            zc.close()


class Browser(Service):
    """
    Browse for rcp links while the service runs, and keep a L{Directory}
    up to date (in the reactor thread).
    """

    log = Logger()

    def __init__(self, reactor: Any, directory: Directory, interfaces: Sequence[str] = ()) -> None:
        self.reactor = reactor
        self.directory = directory
        self.interfaces = tuple(interfaces)
        self._zeroconf: Any = None
        self._browser: Any = None
        self._started: Deferred[None] | None = None
        self._refused: dict[str, str] = {}

    def startService(self) -> None:
        super().startService()
        self._started = _inThread(self.reactor, self._start)
        self._started.addErrback(self._failed)

    def _start(self) -> None:
        from zeroconf import ServiceBrowser, Zeroconf

        self._zeroconf = Zeroconf(interfaces=_interfaces(self.interfaces))
        self._browser = ServiceBrowser(self._zeroconf, SERVICE_TYPE, handlers=[self._changed])

    def _failed(self, failure: Failure) -> None:
        self.log.error(
            "discovery: cannot browse for agents: {problem}",
            problem=_problem(failure),
        )

    def _changed(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        # in zeroconf's browser thread: may block, must not touch the reactor's state
        from zeroconf import ServiceStateChange

        try:
            if state_change is ServiceStateChange.Removed:
                self.reactor.callFromThread(self._removed, name)
                return
            info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_MS)
            if info is None:
                return
            advert = parseAdvert(name, info.port, info.parsed_addresses(), info.properties)
        except AdvertError as e:
            self.reactor.callFromThread(self._refuse, name, str(e))
        except Exception as e:
            self.reactor.callFromThread(self._refuse, name, f"{type(e).__name__}: {e}")
        else:
            self.reactor.callFromThread(self.directory.seen, advert)

    def _removed(self, name: str) -> None:
        prefix = "rcp-"
        if name.startswith(prefix) and name.endswith("." + SERVICE_TYPE):
            self.directory.gone(name[len(prefix) : -len(SERVICE_TYPE) - 1])

    def _refuse(self, name: str, problem: str) -> None:
        shown = name if len(name) <= 80 else name[:77] + "..."
        if self._refused.get(shown) == problem:
            return  # said once
        if len(self._refused) < 256:
            self._refused[shown] = problem
        self.log.warn(
            "discovery: ignoring the advert {name!r}: {problem}", name=shown, problem=problem
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        started, self._started = self._started, None
        if started is None:
            return None
        started.addBoth(lambda _: _inThread(self.reactor, self._stop))
        started.addErrback(lambda f: None)
        return started

    def _stop(self) -> None:
        browser, self._browser = self._browser, None
        zc, self._zeroconf = self._zeroconf, None
        if browser is not None:
            browser.cancel()
        if zc is not None:
            zc.close()
