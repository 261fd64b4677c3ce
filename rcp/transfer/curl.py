"""
Backend transfers with curl, as child processes of the reactor.

  - C{fetch}: C{curl --output -}, its standard output streamed into an image
    writer chunk by chunk (never whole in memory); a retry continues where
    the last attempt stopped (C{--continue-at}: HTTP Range, FTP REST), so
    the bytes already served to the boards stay valid.
  - C{upload}: C{curl --upload-file}, as EVerest's System module uploads
    (HTTP(S) PUT, FTP(S) STOR; a location ending in C{/} gets the file's
    name).

Only http, https, ftp and ftps are allowed (C{--proto}), redirects too
(C{--proto-redir}); a URL is passed with C{--url}, never as an option.
Credentials in URLs are never logged (L{redact}).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..aggregator.ports import ITransfers

#: the schemes a backend may name
SCHEMES: Final = ("http", "https", "ftp", "ftps")

#: curl's exit statuses worth a word of their own
_CURL_ERRORS: Final = {
    6: "cannot resolve the host",
    7: "cannot connect",
    9: "access denied",
    22: "the server answered an HTTP error",
    28: "timed out",
    33: "the server cannot resume (no Range/REST support)",
    35: "TLS handshake failed",
    60: "the server's certificate is not trusted",
    63: "larger than the allowed size",
    67: "login refused",
}


class TransferError(Exception):
    """A transfer failed; the message says why (credentials redacted)."""


def redact(url: str) -> str:
    """C{url} without its password (for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unusable URL)"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, ""))


def checkUrl(url: str) -> str:
    """
    @raise TransferError: not a URL of one of L{SCHEMES} with a host.
    """
    if not isinstance(url, str) or len(url) > 4096 or any(ord(c) < 0x21 for c in url):
        raise TransferError("not a usable URL")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise TransferError("not a usable URL") from None
    if parts.scheme.lower() not in SCHEMES:
        raise TransferError(
            f"scheme {parts.scheme or '(none)'!r} is not one of {', '.join(SCHEMES)}"
        )
    if not parts.hostname:
        raise TransferError(f"no host in {redact(url)}")
    return url


class _Curl(ProcessProtocol):
    def __init__(self, onData: Callable[[bytes], None] | None) -> None:
        self.onData = onData
        self.received = 0
        self.stderr = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.onData is not None:
            self.onData(data)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-2000:]

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.ended.callback(0)
        elif isinstance(reason.value, ProcessTerminated):
            value = reason.value
            code = value.exitCode if value.exitCode is not None else -(value.signal or 1)
            self.ended.callback(code)
        else:
            self.ended.errback(reason)


@implementer(ITransfers)
class CurlTransfers:
    """
    The backend transfers of the main board (L{rcp.aggregator.ports.ITransfers}).

    @param caFile: PEM bundle of the CAs a backend's certificate must chain
        to; L{None}: the system's.
    @param maxBytes: the largest image accepted.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        curl: str | None = None,
        caFile: str | None = None,
        connectTimeout: float = 20.0,
        maxTime: float = 3600.0,
        maxBytes: int = 2 * 1024**3,
    ) -> None:
        self.reactor = reactor
        self.curl = curl or shutil.which("curl") or "curl"
        self.caFile = caFile
        self.connectTimeout = connectTimeout
        self.maxTime = maxTime
        self.maxBytes = maxBytes

    def _argv(self) -> list[str]:
        argv = [self.curl, "--silent", "--show-error", "--fail", "--globoff"]
        argv += ["--proto", "=" + ",".join(SCHEMES), "--proto-redir", "=" + ",".join(SCHEMES)]
        argv += ["--location", "--max-redirs", "5"]
        argv += ["--connect-timeout", f"{self.connectTimeout:g}", "--max-time", f"{self.maxTime:g}"]
        if self.caFile is not None:
            argv += ["--cacert", self.caFile]
        return argv

    def _run(self, argv: list[str], onData: Callable[[bytes], None] | None) -> _Curl:
        curl = _Curl(onData)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
        # no proxy from the environment: the backend is reached as configured
        childFDs = {0: "w", 1: "r", 2: "r"}
        self.reactor.spawnProcess(curl, argv[0], argv, env=env, childFDs=childFDs)
        return curl

    def _problem(self, code: int, curl: _Curl) -> str:
        said = curl.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = said[-1][:300] if said else ""
        known = _CURL_ERRORS.get(code, f"curl exit status {code}")
        return f"{known} ({detail})" if detail else known

    async def _fetchOnce(self, url: str, into: Any, offset: int) -> tuple[int, int, str]:
        argv = [*self._argv(), "--max-filesize", str(self.maxBytes), "--output", "-"]
        if offset:
            argv += ["--continue-at", str(offset)]
        curl = self._run([*argv, "--url", url], into.append)
        # curl waits (its output pipe fills) while the image's disk writes fall behind
        into.throttles(getattr(curl.transport, "pipes", {}).get(1))
        try:
            code = await curl.ended
        finally:
            into.throttles(None)
        return code, curl.received, self._problem(code, curl) if code else ""

    def fetch(self, url: str, into: Any, retries: int, retryInterval: float) -> Deferred[int]:
        """Download C{url} into the image writer C{into}: see the module docstring."""
        return Deferred.fromCoroutine(self._fetch(url, into, retries, retryInterval))

    async def _fetch(self, url: str, into: Any, retries: int, retryInterval: float) -> int:
        try:
            checkUrl(url)
        except TransferError as e:
            into.fail(str(e))
            raise
        attempts = max(1, retries)
        total = 0
        problem = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await deferLater(self.reactor, retryInterval, lambda: None)
            code, received, problem = await self._fetchOnce(url, into, total)
            total += received
            if code == 0:
                into.finish()
                self.log.info("transfer: fetched {url}: {size} bytes", url=redact(url), size=total)
                return total
            self.log.warn(
                "transfer: fetching {url}, attempt {attempt} of {attempts}: {problem}",
                url=redact(url),
                attempt=attempt,
                attempts=attempts,
                problem=problem,
            )
            if code == 33:  # cannot resume: a new attempt cannot continue either
                break
        reason = f"fetching {redact(url)} failed: {problem}"
        into.fail(reason)
        raise TransferError(reason)

    def upload(self, path: str, url: str, retries: int, retryInterval: float) -> Deferred[None]:
        """Upload the file C{path} to C{url}: see the module docstring."""
        return Deferred.fromCoroutine(self._upload(path, url, retries, retryInterval))

    async def _upload(self, path: str, url: str, retries: int, retryInterval: float) -> None:
        checkUrl(url)
        if not os.path.isfile(path):
            raise TransferError(f"no file {path} to upload")
        attempts = max(1, retries)
        problem = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await deferLater(self.reactor, retryInterval, lambda: None)
            argv = [*self._argv(), "--upload-file", path, "--output", os.devnull]
            curl = self._run([*argv, "--url", url], None)
            code = await curl.ended
            if code == 0:
                self.log.info(
                    "transfer: uploaded {name} to {url}",
                    name=os.path.basename(path),
                    url=redact(url),
                )
                return
            problem = self._problem(code, curl)
            self.log.warn(
                "transfer: uploading to {url}, attempt {attempt} of {attempts}: {problem}",
                url=redact(url),
                attempt=attempt,
                attempts=attempts,
                problem=problem,
            )
        raise TransferError(f"uploading to {redact(url)} failed: {problem}")
