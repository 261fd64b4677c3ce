"""
Disk writes off the reactor thread.

The process that hosts the receivers also keeps the satellites' links,
whose watchdogs end the station when the reactor stalls; a write(2) into
the page cache costs about as much as receiving the bytes, and on a board's
eMMC in writeback it can block for seconds.  So no receiver writes a file
in the reactor: L{DiskWriter} queues the bytes of one file and writes them
in order, batch by batch, in a thread of a small pool (L{diskPool}); the
reactor goes on receiving, and several files are written at once.

The queue is bounded: above C{high} bytes waiting, the writer pauses the
source of the bytes (the connection, or the backend fetch) and resumes it
once fewer than C{low} wait, so a disk slower than the network slows the
sender down (TCP back-pressure) instead of filling the memory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

#: runs a blocking function somewhere and tells its result
Run = Callable[[Callable[[], Any]], Deferred[Any]]

#: the most buffers given to one writev(2) (IOV_MAX is 1024 on Linux)
_IOV: Final = 512


def inline(function: Callable[[], Any]) -> Deferred[Any]:
    """L{Run} in the calling thread (tests, and tools without a reactor thread pool)."""
    return maybeDeferred(function)


def writeFailed(error: object) -> str:
    """The one text for a write to disk that failed."""
    return f"writing failed: {getattr(error, 'strerror', None) or error}"


def diskPool() -> ThreadPool:
    """The receivers' pool of disk writers (started and stopped by their service)."""
    return ThreadPool(minthreads=0, maxthreads=4, name="rcp-disk")


def writeAll(fd: int, chunks: list[bytes]) -> None:
    """Write C{chunks} to C{fd} in order, whatever the partial writes."""
    views = [memoryview(c) for c in chunks if c]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV])
        while written:
            head = views[first]
            if written >= len(head):
                written -= len(head)
                first += 1
            else:
                views[first] = head[written:]
                written = 0


class DiskWriter:
    """
    The bytes of one open file, written in order by C{run}.

    @param fd: the file, open for writing; closed by L{close} or L{abandon}.
    @param onWritten: called in the reactor thread with the number of bytes
        on disk each time a batch is written (readers of a growing image).
    @ivar error: the first failed write; later writes are dropped.
    """

    def __init__(
        self,
        fd: int,
        run: Run = inline,
        high: int = 256 << 10,
        low: int = 64 << 10,
        onWritten: Callable[[int], None] | None = None,
    ) -> None:
        self.fd: int | None = fd
        self.run = run
        self.high = high
        self.low = low
        self.onWritten = onWritten
        self.pending = 0
        self.written = 0
        self.error: OSError | None = None
        self._queue: list[bytes] = []
        self._busy = False
        self._source: IPushProducer | None = None
        self._paused = False
        self._drained: list[Deferred[None]] = []
        self._closing = False

    def throttles(self, source: IPushProducer | None) -> None:
        """Pause C{source} while too many bytes wait (L{None}: no more)."""
        self._source = source
        self._paused = False

    def write(self, data: bytes) -> None:
        """Queue C{data}; L{OSError} if an earlier write failed."""
        if self.error is not None:
            raise self.error
        if self.fd is None or self._closing:
            raise OSError("the file is closed")
        if not data:
            return
        self._queue.append(data)
        self.pending += len(data)
        if not self._busy:
            self._next()
        if self.pending > self.high and self._source is not None:
            # on every write while too much waits: someone else (twisted.web's
            # channel) may have resumed the source meanwhile
            self._paused = True
            self._source.pauseProducing()

    def _next(self) -> None:
        chunks, self._queue = self._queue, []
        size = sum(len(c) for c in chunks)
        fd = self.fd
        assert fd is not None
        self._busy = True
        self.run(lambda: writeAll(fd, chunks)).addBoth(self._batchDone, size)

    def _batchDone(self, result: object, size: int) -> None:
        self._busy = False
        if isinstance(result, Failure):
            error = result.value
            self.error = error if isinstance(error, OSError) else OSError(str(error))
            self._queue = []
            self.pending = 0
        else:
            self.pending -= size
            self.written += size
            if self.onWritten is not None:
                self.onWritten(self.written)
        if self._queue and self.error is None:
            self._next()
        elif not self._busy:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
        if self._paused and self.pending < self.low and self._source is not None:
            self._paused = False
            self._source.resumeProducing()

    def drained(self) -> Deferred[None]:
        """Fires once every byte queued so far is on disk (or failed)."""
        return self._whenDrained()

    def _whenDrained(self) -> Deferred[None]:
        if not self._busy and not self._queue:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def close(self) -> Deferred[None]:
        """Everything written, the file closed; fails with the write's L{OSError}."""
        self._closing = True
        self._source = None

        def closed(_: None) -> Deferred[None]:
            fd, self.fd = self.fd, None
            if fd is not None:
                os.close(fd)
            if self.error is not None:
                return fail(self.error)
            return succeed(None)

        return self._whenDrained().addCallback(closed)

    def abandon(self) -> Deferred[None]:
        """Drop what waits; the file is closed once a write in progress ended."""
        self.pending -= sum(len(c) for c in self._queue)
        self._queue = []
        self._closing = True
        self._source = None
        return self.close().addErrback(lambda _: None)


# -- zero-copy reception ------------------------------------------------------------

#: the kernel can move a socket's bytes into a file without copying them
#: through the process (Linux splice(2))
SPLICE: Final = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")

_F_SETPIPE_SZ: Final = 1031
_SPLICE_CHUNK: Final = 1 << 20
_POLL_MS: Final = 200


class SpliceEnded(Exception):
    """Reception into the file ended early; the kind says why."""


class SpliceTooLarge(SpliceEnded):
    """More bytes than allowed arrived."""


class SpliceNoRoom(SpliceEnded):
    """
    The disk would be left with less than its minimum free space (no
    message), or a write failed (the message says how).
    """


class SpliceIdle(SpliceEnded):
    """No byte arrived for the idle time."""


class SpliceStopped(SpliceEnded):
    """Stopped from outside (the transfer was aborted)."""


class SpliceUnsupported(SpliceEnded):
    """This socket or file cannot be spliced: read the rest the usual way."""

    #: the bytes already in the file (set by L{spliceInto})
    moved = 0


def spliceInto(
    source: int,
    target: int,
    limit: int,
    room: Callable[[int], bool],
    idle: float,
    stop: threading.Event,
) -> int:
    """
    Move everything C{source} (a non-blocking socket) sends into the file
    C{target} until its end, in the kernel; blocking, for a thread.

    @param limit: the most bytes allowed; one more ends with L{SpliceTooLarge}.
    @param room: tells whether that many more bytes may be stored (else
        L{SpliceNoRoom}, as for a failed write to the file).
    @param idle: seconds without a byte before L{SpliceIdle} (wall time since
        the last byte moved, whatever the socket reports).
    @param stop: set from another thread: L{SpliceStopped} within 0.2 s.
    @return: the number of bytes moved.
    @raise SpliceUnsupported: this socket or file cannot be spliced; its
        C{moved} bytes are in the file, the rest is for the caller to read.
    @raise OSError: the connection failed (for example reset by the peer).
    """
    r, w = os.pipe()
    moved = 0
    try:
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, _SPLICE_CHUNK)
        except OSError:
            pass  # a smaller pipe only means more turns
        poller = select.poll()
        poller.register(source, select.POLLIN | select.POLLERR | select.POLLHUP)
        lastByte = time.monotonic()
        readable = False
        while True:
            if stop.is_set():
                raise SpliceStopped()
            if time.monotonic() - lastByte >= idle:
                raise SpliceIdle()
            data: bytes | None = None
            try:
                count = os.splice(
                    source, w, _SPLICE_CHUNK, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
                )
            except BlockingIOError:
                if readable:
                    # readable, yet nothing to splice: an urgent byte (MSG_OOB)
                    # stops splice at its mark; an ordinary read passes it
                    try:
                        data = os.read(source, 1 << 16)
                    except BlockingIOError:
                        data = None
                    count = len(data) if data is not None else -1
                    readable = False
                else:
                    count = -1
                if count < 0:
                    readable = bool(poller.poll(_POLL_MS))
                    continue
            except OSError as e:
                if moved == 0 and e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise SpliceUnsupported(str(e)) from None
                raise
            readable = False
            if count == 0 and data is None:
                # the end, says splice; also what it says at an urgent mark
                # with the end queued behind it: a read tells which
                try:
                    data = os.read(source, 1 << 16)
                except BlockingIOError:
                    continue
                count = len(data)
            if count == 0:
                return moved
            lastByte = time.monotonic()
            if moved + count > limit:
                raise SpliceTooLarge()
            if not room(count):
                raise SpliceNoRoom()  # the minimum free space
            try:
                if data is not None:
                    _toFile(target, [data])
                else:
                    _pipeToFile(r, target, count)
            except SpliceUnsupported:
                moved += count  # in the file all the same
                raise
            moved += count
    except SpliceUnsupported as e:
        e.moved = moved
        raise
    finally:
        os.close(r)
        os.close(w)


def _toFile(target: int, chunks: list[bytes]) -> None:
    try:
        writeAll(target, chunks)
    except OSError as e:
        raise SpliceNoRoom(writeFailed(e)) from None


def _pipeToFile(r: int, target: int, count: int) -> None:
    """C{count} bytes from the pipe C{r} into the file (read and written if it cannot splice)."""
    try:
        while count:
            count -= os.splice(r, target, count, flags=os.SPLICE_F_MOVE)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise SpliceNoRoom(writeFailed(e)) from None
        chunks = []
        while count:
            chunk = os.read(r, count)
            chunks.append(chunk)
            count -= len(chunk)
        _toFile(target, chunks)
        raise SpliceUnsupported(f"the file cannot be spliced into: {e.strerror or e}") from None
