"""A cap on the connections one receiver holds at once."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from ..logtext import cut


class CappedFactory(WrappingFactory):
    """Refuses (closes) connections beyond C{cap}, with one log line each."""

    log = Logger()

    def __init__(self, wrappedFactory: Any, cap: int, name: str) -> None:
        super().__init__(wrappedFactory)
        self.cap = cap
        self.name = name

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if len(self.protocols) >= self.cap:
            host: Any = getattr(addr, "host", addr)
            self.log.warn(
                "{name} receiver: refused {peer}: {cap} connections already open",
                name=self.name,
                peer=cut(host),
                cap=self.cap,
            )
            return None
        return super().buildProtocol(addr)
