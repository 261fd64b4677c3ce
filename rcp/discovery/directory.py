"""
Where each serial number was last seen: the reactor-side state of discovery.

Pure and clock-driven: the mDNS side (L{rcp.discovery.mdns}) feeds it
adverts; connections ask it where a serial number is, waiting a bounded
time for one to appear.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from .records import Advert


class NotFound(Exception):
    """No agent advertised the serial number within the time allowed."""


class IFinder(Interface):
    """Tells where an agent of a given serial number is."""

    def whereIs(serial: str, timeout: float) -> Deferred[Advert]:
        """
        The serial number's current advert; waits up to C{timeout} seconds
        for one, then fails with L{NotFound}.
        """


@implementer(IFinder)
class Directory:
    """
    The adverts seen, by serial number, and the connections waiting for one.

    @ivar adverts: the current advert of each serial number.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.adverts: dict[str, Advert] = {}
        self._waiting: dict[str, list[tuple[Deferred[Advert], IDelayedCall]]] = {}

    def seen(self, advert: Advert) -> None:
        """An advert was resolved (new, or changed)."""
        before = self.adverts.get(advert.serial)
        self.adverts[advert.serial] = advert
        where = ", ".join(f"{a}:{advert.port}" for a in advert.addresses)
        if before is None:
            self.log.info(
                "discovery: board {serial} ({board}) at {where}, rcp {version}",
                serial=advert.serial,
                board=advert.board or "no name",
                where=where,
                version=advert.version or "?",
            )
        elif (before.addresses, before.port) != (advert.addresses, advert.port):
            self.log.info(
                "discovery: board {serial} moved to {where} (was {was})",
                serial=advert.serial,
                where=where,
                was=", ".join(f"{a}:{before.port}" for a in before.addresses),
            )
        for d, timer in self._waiting.pop(advert.serial, []):
            timer.cancel()
            d.callback(advert)

    def gone(self, serial: str) -> None:
        """The serial number's advert was withdrawn."""
        if self.adverts.pop(serial, None) is not None:
            self.log.info("discovery: board {serial} withdrew its advert", serial=serial)

    def whereIs(self, serial: str, timeout: float) -> Deferred[Advert]:
        known = self.adverts.get(serial)
        if known is not None:
            return succeed(known)

        def cancel(d: Deferred[Advert]) -> None:
            self._forget(serial, d)

        d: Deferred[Advert] = Deferred(cancel)

        def expire() -> None:
            self._forget(serial, d)
            d.errback(NotFound(f"no agent advertised serial number {serial} in {timeout:g} s"))

        self._waiting.setdefault(serial, []).append((d, self.clock.callLater(timeout, expire)))
        return d

    def _forget(self, serial: str, d: Deferred[Advert]) -> None:
        waiting = self._waiting.get(serial, [])
        for entry in waiting:
            if entry[0] is d:
                waiting.remove(entry)
                if entry[1].active():
                    entry[1].cancel()
                break
        if not waiting:
            self._waiting.pop(serial, None)
