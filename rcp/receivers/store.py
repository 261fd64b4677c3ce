"""
Files on the main board's disk: incoming uploads streamed to disk under
names reduced to one safe component, never overwriting, with a minimum of
free space kept; firmware images that can be read while they are written.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..aggregator.ports import IImageWriter
from ..logtext import cut
from .disk import (
    DiskWriter,
    Run,
    SpliceNoRoom,
    SpliceStopped,
    SpliceTooLarge,
    SpliceUnsupported,
    inline,
    spliceInto,
    writeFailed,
)
from .grants import Grant

#: the longest file name kept, in bytes of UTF-8 (most file systems allow 255)
MAX_NAME_BYTES = 200

DEFAULT_NAME = "upload"


class StoreError(Exception):
    """A file cannot be stored; the protocols map the kinds to their codes."""


class GrantEnded(StoreError):
    """The grant ended (expired, revoked) before the file was complete (FTP 426, HTTP 403)."""


class NoSpace(StoreError):
    """Storing would leave less than the minimum free disk space (FTP 452, HTTP 507)."""


class TooLarge(StoreError):
    """More than the grant's maximum size (FTP 552, HTTP 413)."""


def safeName(name: str) -> str:
    """
    C{name} from a peer reduced to one harmless file name: its last path
    component, no control characters, no leading dots, at most
    L{MAX_NAME_BYTES} bytes (the end, with the extension, is kept).
    """
    name = name.replace("\\", "/").rstrip("/").rpartition("/")[2]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip(".").strip()
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        encoded = encoded[-MAX_NAME_BYTES:]
        name = encoded.decode("utf-8", "ignore").lstrip(".")
    return name or DEFAULT_NAME


def freeBytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class IncomingFile:
    """
    One file being received under a grant, written as it comes (in the
    disk writers' threads, see L{rcp.receivers.disk}).
    """

    def __init__(self, store: Store, grant: Grant, path: Path, fd: int) -> None:
        self.store = store
        self.grant = grant
        self.path = path
        self.writer: DiskWriter | None = DiskWriter(fd, store.run)
        self.size = 0

    def throttles(self, source: IPushProducer | None) -> None:
        """Pause C{source} (the connection) while the disk falls behind."""
        if self.writer is not None:
            self.writer.throttles(source)

    def write(self, data: bytes) -> None:
        """Write C{data}; L{StoreError} (and the file removed) if it may not be."""
        writer = self.writer
        if writer is None:
            raise StoreError("file already closed")
        if len(data) > self.grant.remaining():
            self.fail()
            raise TooLarge(f"more than {self.grant.maxBytes} bytes for {self.grant.describe()}")
        if not self.store.hasRoom(len(data)):
            self.fail()
            raise NoSpace(self.store.noRoom())
        try:
            writer.write(data)
        except OSError as e:
            self.fail()
            raise NoSpace(writeFailed(e)) from None
        self.size += len(data)
        self.grant.received += len(data)

    def spliceFrom(self, source: int, idle: float, stop: threading.Event) -> Deferred[int]:
        """
        Receive the rest of the file from the socket C{source} in the kernel
        (L{rcp.receivers.disk.spliceInto}) in a reception thread, after the
        bytes already written; the result is the number of bytes moved.  A
        limit is a L{StoreError} (the file removed), like L{write}'s;
        L{SpliceUnsupported} when the rest must be received the usual way;
        L{SpliceIdle}, L{SpliceStopped} or L{OSError} when the transfer ends
        early.  The thread works on its own copy of the socket descriptor,
        so the socket closed meanwhile never becomes another one under it.
        """
        writer = self.writer
        store = self.store
        if writer is None:
            return fail(StoreError("file already closed"))
        if store.receive is None:
            return fail(SpliceUnsupported("no reception threads"))
        receive = store.receive
        fd = writer.fd
        assert fd is not None
        limit = self.grant.remaining() if self.grant.maxBytes > 0 else 2**62
        own = os.dup(source)

        def spliceOwn() -> int:
            try:
                return spliceInto(own, fd, limit, store.hasRoom, idle, stop)
            finally:
                os.close(own)

        def move(_: None) -> Deferred[int]:
            if stop.is_set():
                os.close(own)
                return fail(SpliceStopped())
            store.splicing.add(stop)

            def ended(result: object) -> object:
                store.splicing.discard(stop)
                return result

            return receive(spliceOwn).addBoth(ended)

        def moved(count: int) -> int:
            self._received(count)
            return count

        def failed(failure: Failure) -> Failure:
            if failure.check(SpliceUnsupported):
                self._received(cast(SpliceUnsupported, failure.value).moved)
            elif failure.check(SpliceTooLarge):
                self.fail()
                return Failure(
                    TooLarge(f"more than {self.grant.maxBytes} bytes for {self.grant.describe()}")
                )
            elif failure.check(SpliceNoRoom):
                self.fail()
                why = str(failure.value) or store.noRoom()
                return Failure(NoSpace(why))
            return failure

        return writer.drained().addCallback(move).addCallbacks(moved, failed)

    def _received(self, count: int) -> None:
        self.size += count
        self.grant.received += count

    def finish(self) -> Deferred[str]:
        """
        The file is complete: once it is on disk, it is listed in the
        grant's files (its path is the result); L{NoSpace} if a write failed.
        """
        writer, self.writer = self.writer, None
        if writer is None:
            return fail(StoreError("file already closed"))

        def written(_: None) -> str:
            if self.grant.ended:
                # expired or revoked while the last bytes went to disk: not kept
                self._removed()
                raise GrantEnded(f"{self.grant.describe()} {self.grant.endReason}")
            self.grant.files.append(str(self.path))
            self.store.log.info(
                "received {path} ({size} bytes) for {grant}",
                path=str(self.path),
                size=self.size,
                grant=self.grant.describe(),
            )
            return str(self.path)

        def failed(failure: Failure) -> Failure:
            self._removed()
            return Failure(NoSpace(writeFailed(failure.value)))

        return writer.close().addCallbacks(written, failed)

    def fail(self) -> None:
        """The transfer failed: the partial file is removed."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        writer.abandon()
        self._removed()

    def _removed(self) -> None:
        self.grant.received -= self.size
        self.size = 0
        try:
            self.path.unlink()
        except OSError:
            pass
        self.store.log.info("removed partial {path}", path=str(self.path))


class Store:
    """
    The receivers' directory: C{uploads/} for logs, C{images/} for firmware.

    @param run: where the files are written (the receivers' service: its
        disk threads; in the calling thread by default).
    @param receive: where FTP receptions in the kernel run (the service: a
        thread per reception, apart from the disk threads, as a reception
        lasts as long as its connection); L{None}: no such receptions.
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        minFreeBytes: int,
        free: Callable[[str], int] = freeBytes,
        run: Run = inline,
        receive: Run | None = None,
    ) -> None:
        self.run = run
        #: where receptions in the kernel run (a thread each); L{None}: none here
        self.receive = receive
        #: the stop signals of receptions in progress in the kernel
        self.splicing: set[threading.Event] = set()
        self.directory = Path(directory)
        self.minFreeBytes = minFreeBytes
        self._free = free
        self.uploads = self.directory / "uploads"
        self.images = self.directory / "images"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(parents=True, exist_ok=True)

    def stopSplicing(self) -> None:
        """End every reception in progress (the service stops)."""
        for stop in self.splicing:
            stop.set()

    def noRoom(self) -> str:
        """The one text for a write refused to keep the minimum free space."""
        return f"less than {self.minFreeBytes} bytes would be left free"

    def hasRoom(self, size: int) -> bool:
        return self._free(str(self.directory)) - size >= self.minFreeBytes

    def grantDirectory(self, grant: Grant) -> Path:
        return self.uploads / safeName(f"{grant.board}-{grant.requestId}-{grant.token[:8]}")

    def openUpload(self, grant: Grant, name: str) -> IncomingFile:
        """A new file under C{grant}'s own directory, never an existing one."""
        if not self.hasRoom(0):
            raise NoSpace(f"less than {self.minFreeBytes} bytes free")
        if grant.remaining() <= 0 and grant.maxBytes > 0:
            raise TooLarge(f"{grant.describe()} has no room left")
        folder = self.grantDirectory(grant)
        folder.mkdir(exist_ok=True)
        base = safeName(name)
        stem, dot, ext = base.rpartition(".")
        if not dot or not stem:
            stem, dot, ext = base, "", ""
        for n in range(1000):
            candidate = base if n == 0 else f"{stem}-{n}{dot}{ext}"
            path = folder / candidate
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            except FileExistsError:
                continue
            except OSError as e:
                raise NoSpace(f"cannot create {cut(candidate)!r}: {e.strerror}") from None
            return IncomingFile(self, grant, path, fd)
        raise StoreError(f"too many files called {cut(base)!r}")

    def newImage(self, name: str) -> Image:
        base = safeName(name)
        for n in range(1000):
            path = self.images / (base if n == 0 else f"{n}-{base}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            except FileExistsError:
                continue
            return Image(self, base, path, fd)
        raise StoreError(f"too many images called {cut(base)!r}")


@implementer(IImageWriter)
class Image:
    """
    A firmware image on disk, readable while it is written: L{size} counts
    the bytes on disk, readers wait for bytes not yet there, and a failure
    ends their waiting.
    """

    def __init__(self, store: Store, name: str, path: Path, fd: int) -> None:
        self.store = store
        self.name = name
        self.path = path
        self.writer: DiskWriter | None = DiskWriter(fd, store.run, onWritten=self._written)
        self.size = 0
        self.finished = False
        self.failed: str | None = None
        self._waiting: list[Deferred[None]] = []

    def throttles(self, source: IPushProducer | None) -> None:
        if self.writer is not None:
            self.writer.throttles(source)

    def append(self, data: bytes) -> None:
        writer = self.writer
        if writer is None:
            return
        if not self.store.hasRoom(writer.pending + len(data)):
            self.fail(self.store.noRoom())
            return
        try:
            writer.write(data)
        except OSError as e:
            self.fail(writeFailed(e))

    def _written(self, size: int) -> None:
        if self.failed is None:
            self.size = size
            self._wake()

    def finish(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return

        def complete(_: None) -> None:
            if self.failed is not None:
                return
            self.finished = True
            self.store.log.info(
                "image {name} complete ({size} bytes)", name=self.name, size=self.size
            )
            self._wake()

        def failed(failure: Failure) -> None:
            self._failed(writeFailed(failure.value))

        writer.close().addCallbacks(complete, failed)

    def fail(self, reason: str) -> None:
        if self.failed is not None or self.finished:
            return
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.abandon()
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.failed = reason
        try:
            self.path.unlink()
        except OSError:
            pass
        self.store.log.warn("image {name} failed: {reason}", name=self.name, reason=cut(reason))
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def waitFor(self, offset: int) -> Deferred[None]:
        """Fires once there are bytes past C{offset}, or the image ended (complete or failed)."""
        d: Deferred[None] = Deferred()
        if self.size > offset or self.finished or self.failed is not None:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
