"""
Real file transfers for the simulated System module, as its helper scripts
do them with curl: fetch a firmware image, upload a log file.

Schemes: C{http://} and C{https://} (L{Agent}: GET to fetch, PUT to
upload), C{ftp://} (L{FTPClient}, passive mode: RETR and STOR) and
C{file://} (the local file system, in a thread).  As with C{curl -T}, an
upload location that ends in C{/} names a directory: the file's name is
appended to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from io import BytesIO
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import SplitResult, quote, unquote, urlsplit
from urllib.request import url2pathname

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.ftp import FTPClient, FTPError
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

#: seconds to wait for a connection (CONNECTION_TIMEOUT of the System
#: module's constants.env)
CONNECT_TIMEOUT: Final = 20.0
#: seconds a whole transfer may take
TRANSFER_TIMEOUT: Final = 600.0
#: the largest file L{Transfers.fetch} accepts
MAX_FETCH_BYTES: Final = 256 * 1024 * 1024

_T = TypeVar("_T")


class TransferError(Exception):
    """A transfer failed: refused by the server, bad URL, too large, ..."""


def checkFileName(name: str) -> str:
    """
    C{name} when it is one plain file name, fit to append to a location.

    @raise ValueError: it is empty, C{.}, contains C{..}, a path separator
        or a control character.
    """
    if (
        not name
        or name == "."
        or ".." in name
        or "/" in name
        or "\\" in name
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    ):
        raise ValueError(f"unsafe file name {name!r}")
    return name


def uploadTarget(location: str, fileName: str) -> str:
    """Where C{curl -T fileName location} puts the file."""
    checkFileName(fileName)
    if location.endswith("/"):
        return location + quote(fileName, safe="")
    return location


def redactURL(url: str) -> str:
    """C{url} fit for a log: a password in it is replaced by C{***}."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unreadable URL>"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _ftpReason(error: FTPError) -> str:
    """The server's answer inside an FTP client error, as text."""
    reason: Any = error
    while isinstance(reason, FTPError) and reason.args:
        inner = reason.args[-1]
        reason = inner.value if isinstance(inner, Failure) else inner
    return " ".join(reason) if isinstance(reason, list) else str(reason)


def _asciiURL(url: str) -> bytes:
    """C{url} as the bytes L{Agent} takes, non-ASCII characters escaped."""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~").encode("ascii")


class _Collector(Protocol):
    """Gathers a body up to a size limit."""

    def __init__(self, limit: int) -> None:
        self.done: Deferred[bytes] = Deferred(self._cancel)
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._over = False

    def dataReceived(self, data: bytes) -> None:
        if self._over:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._over = True
            self.done.errback(TransferError(f"more than {self._limit} bytes"))
            cast(Any, self.transport).stopProducing()
            return
        self._parts.append(data)

    def _cancel(self, done: Deferred[bytes]) -> None:
        # abandoned (a timeout): stop the transfer, ignore what still comes
        self._over = True
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._over:
            return
        if reason.check(ResponseDone, PotentialDataLoss, ConnectionDone):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)


class Transfers:
    """
    Fetch and upload for real, on C{reactor}.

    @param reactor: a reactor with TCP, time and threads; the global one by
        default.
    """

    def __init__(
        self,
        reactor: Any = None,
        connectTimeout: float = CONNECT_TIMEOUT,
        timeout: float = TRANSFER_TIMEOUT,
        maxFetchBytes: int = MAX_FETCH_BYTES,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.maxFetchBytes = maxFetchBytes

    # -- the two operations ---------------------------------------------------

    def fetch(self, url: str) -> Deferred[bytes]:
        """The content at C{url}; fails with L{TransferError} and friends."""
        return self._run(self._fetch(url))

    def upload(self, url: str, fileName: str, data: bytes) -> Deferred[None]:
        """Store C{data} as C{fileName} at C{url}, as C{curl -T} would."""
        return self._run(self._upload(url, fileName, data))

    # -- internals ------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Deferred[Any], Any, _T]) -> Deferred[_T]:
        d = Deferred.fromCoroutine(coroutine)
        d.addTimeout(self.timeout, self.reactor)
        return d

    async def _fetch(self, url: str) -> bytes:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            return await self._httpGet(url)
        if scheme == "ftp":
            try:
                return await self._ftpRetrieve(parts)
            except FTPError as e:
                raise TransferError(f"RETR {redactURL(url)}: {_ftpReason(e)}") from e
        if scheme == "file":
            path = self._localPath(parts)
            return await self._inThread(lambda: self._readFile(path))
        raise TransferError(f"cannot fetch {scheme or 'a relative'} URL {redactURL(url)!r}")

    async def _upload(self, url: str, fileName: str, data: bytes) -> None:
        target = uploadTarget(url, fileName)
        parts = urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            await self._httpPut(target, data)
        elif scheme == "ftp":
            try:
                await self._ftpStore(parts, data)
            except FTPError as e:
                raise TransferError(f"STOR {redactURL(target)}: {_ftpReason(e)}") from e
        elif scheme == "file":
            path = self._localPath(parts)
            await self._inThread(lambda: path.write_bytes(data))
        else:
            raise TransferError(f"cannot upload to {scheme or 'a relative'} URL {redactURL(url)!r}")

    def _inThread(self, f: Callable[[], _T]) -> Deferred[_T]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f)

    def _agent(self) -> Agent:
        return Agent(self.reactor, connectTimeout=self.connectTimeout)

    async def _request(
        self, method: bytes, url: str, headers: Headers, body: FileBodyProducer | None = None
    ) -> IResponse:
        try:
            response: IResponse = await self._agent().request(method, _asciiURL(url), headers, body)
        except (ResponseNeverReceived, RequestTransmissionFailed) as e:
            # a cancelled request (our timeout) fails wrapped: unwrap it
            if any(reason.check(CancelledError) for reason in e.reasons):
                raise CancelledError() from e
            raise
        return response

    async def _httpGet(self, url: str) -> bytes:
        response = await self._request(b"GET", url, Headers({b"User-Agent": [b"rcp-sim"]}))
        collector = _Collector(self.maxFetchBytes)
        response.deliverBody(collector)
        body = await collector.done
        if response.code != 200:
            raise TransferError(f"GET {redactURL(url)}: HTTP {response.code}")
        return body

    async def _httpPut(self, url: str, data: bytes) -> None:
        response = await self._request(
            b"PUT",
            url,
            Headers({b"User-Agent": [b"rcp-sim"], b"Content-Type": [b"application/octet-stream"]}),
            FileBodyProducer(BytesIO(data)),
        )
        collector = _Collector(64 * 1024)
        response.deliverBody(collector)
        try:
            await collector.done
        except TransferError:
            pass  # a chatty answer; its status is what counts
        if not 200 <= response.code < 300:
            raise TransferError(f"PUT {redactURL(url)}: HTTP {response.code}")

    async def _ftpConnect(self, parts: SplitResult) -> FTPClient:
        if not parts.hostname:
            raise TransferError("an ftp URL needs a host")
        user = unquote(parts.username) if parts.username else "anonymous"
        password = unquote(parts.password) if parts.password else "rcp-sim@localhost"
        endpoint = HostnameEndpoint(
            self.reactor, parts.hostname, parts.port or 21, timeout=self.connectTimeout
        )
        client: FTPClient = await connectProtocol(endpoint, FTPClient(user, password, passive=1))
        return client

    @staticmethod
    def _ftpPath(parts: SplitResult) -> str:
        # As curl: the URL's path is relative to the login directory; a
        # second slash makes it absolute.
        path = unquote(parts.path)
        path = path[1:] if path.startswith("/") else path
        if not path or path.endswith("/"):
            raise TransferError("an ftp URL needs a file name")
        return path

    async def _ftpStore(self, parts: SplitResult, data: bytes) -> None:
        path = self._ftpPath(parts)
        client = await self._ftpConnect(parts)
        try:
            ready, done = client.storeFile(path)

            def send(consumer: Any) -> None:
                consumer.write(data)
                consumer.finish()

            # the data connection may never open; then done fails
            ready.addCallback(send).addErrback(lambda _: None)
            await done
            await client.quit()
        finally:
            if client.transport is not None:
                client.transport.loseConnection()

    async def _ftpRetrieve(self, parts: SplitResult) -> bytes:
        path = self._ftpPath(parts)
        client = await self._ftpConnect(parts)
        try:
            collector = _Collector(self.maxFetchBytes)
            try:
                await client.retrieveFile(path, collector)
            except BaseException:
                collector.done.addErrback(lambda _: None)
                raise
            body = await collector.done
            await client.quit()
            return body
        finally:
            if client.transport is not None:
                client.transport.loseConnection()

    @staticmethod
    def _localPath(parts: SplitResult) -> Path:
        if parts.netloc not in ("", "localhost"):
            raise TransferError(f"file URL on another host: {parts.netloc!r}")
        return Path(url2pathname(unquote(parts.path)))

    def _readFile(self, path: Path) -> bytes:
        if os.path.getsize(path) > self.maxFetchBytes:
            raise TransferError(f"{path}: more than {self.maxFetchBytes} bytes")
        return path.read_bytes()


def fetch(url: str) -> Deferred[bytes]:
    """L{Transfers.fetch} on the global reactor."""
    return Transfers().fetch(url)


def upload(url: str, fileName: str, data: bytes) -> Deferred[None]:
    """L{Transfers.upload} on the global reactor."""
    return Transfers().upload(url, fileName, data)
