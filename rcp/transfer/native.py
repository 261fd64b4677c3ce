"""
Backend transfers without curl, for the simulated station on a machine that
has none: Twisted's own HTTP and FTP clients (L{rcp.everest.sim.transfer}),
whole files in memory, no TLS client certificates, no resume.  A real main
board uses L{rcp.transfer.curl}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from ..aggregator.ports import ITransfers
from ..everest.sim.transfer import Transfers
from .curl import TransferError, checkUrl, redact


@implementer(ITransfers)
class NativeTransfers:
    """L{rcp.aggregator.ports.ITransfers} with Twisted's clients (see the module docstring)."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.transfers = Transfers(reactor)

    def fetch(self, url: str, into: Any, retries: int, retryInterval: float) -> Deferred[int]:
        return Deferred.fromCoroutine(self._fetch(url, into, retries, retryInterval))

    async def _fetch(self, url: str, into: Any, retries: int, retryInterval: float) -> int:
        checkUrl(url)
        problem = ""
        for attempt in range(max(1, retries)):
            if attempt:
                await deferLater(self.reactor, retryInterval, lambda: None)
            try:
                data = await self.transfers.fetch(url)
            except Exception as e:
                problem = str(e) or type(e).__name__
                continue
            into.append(data)
            into.finish()
            return len(data)
        reason = f"fetching {redact(url)} failed: {problem}"
        into.fail(reason)
        raise TransferError(reason)

    def upload(self, path: str, url: str, retries: int, retryInterval: float) -> Deferred[None]:
        return Deferred.fromCoroutine(self._upload(path, url, retries, retryInterval))

    async def _upload(self, path: str, url: str, retries: int, retryInterval: float) -> None:
        checkUrl(url)
        with open(path, "rb") as f:
            data = f.read()
        problem = ""
        for attempt in range(max(1, retries)):
            if attempt:
                await deferLater(self.reactor, retryInterval, lambda: None)
            try:
                await self.transfers.upload(url, os.path.basename(path), data)
            except Exception as e:
                problem = str(e) or type(e).__name__
                continue
            return
        raise TransferError(f"uploading to {redact(url)} failed: {problem}")
