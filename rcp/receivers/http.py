"""
The HTTP receiver on C{twisted.web}: C{PUT /u/TOKEN/NAME} of log files,
streamed to disk while the body arrives (Content-Length checked before the
first byte), and C{GET}/C{HEAD /fw/TOKEN/NAME} of firmware images with
C{Range} (206, 416) so C{curl -C -} resumes; an image still being fetched
is served as it grows.  A download of the whole image under a grant that
holds its end (C{Grant.holdEnd}) stops before the image's last byte until
the grant is released: the board cannot finish, so it cannot install.
"""

from __future__ import annotations

import fcntl
import re
import struct
import termios
from collections.abc import Callable
from typing import IO, Any, cast
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from ..logtext import cut
from .grants import Grant, GrantBook, Refused
from .store import GrantEnded, Image, IncomingFile, NoSpace, Store, StoreError, TooLarge

CHUNK = 64 * 1024

#: what a held download waits before: the image's last byte
HELD_BYTES = 1

#: seconds between two looks at whether a held download's bytes arrived
DRAIN_INTERVAL = 0.2

_RANGE = re.compile(rb"^bytes=(\d{0,18})-(\d{0,18})$")

_PHRASES = {
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    507: b"Insufficient Storage",
    500: b"Internal Server Error",
}


def _path(raw: bytes) -> list[str]:
    """The request path's segments (query dropped), percent-decoded."""
    text = raw.split(b"?", 1)[0].decode("latin-1")
    return [unquote(part, errors="replace") for part in text.split("/")]


class ReceiverRequest(server.Request):
    """
    A request whose PUT body goes straight to the store: the grant and the
    size are checked in L{gotLength}, when the headers are in and before the
    body, and every chunk is written as it arrives.
    """

    log = Logger()
    _upload: IncomingFile | None = None
    _grant: Grant | None = None
    _refused = False

    def _receiver(self) -> HttpReceiver:
        return cast(HttpReceiver, cast(Any, self.channel).site.receiver)

    def _peer(self) -> str:
        return str(getattr(self.getClientAddress(), "host", ""))

    def gotLength(self, length: int | None) -> None:
        channel: Any = self.channel
        # no body is ever buffered: PUT bodies go to the store, others are dropped
        super().gotLength(0)
        receiver = self._receiver()
        peer = self._peer()
        if channel._command in (b"GET", b"HEAD"):
            return
        if channel._command != b"PUT":
            self._refuse(
                405,
                receiver.book.refuse(
                    "HTTP", peer, f"method {cut(channel._command.decode('latin-1'), 16)}"
                ),
            )
            return
        parts = _path(channel._path)
        if len(parts) < 3 or parts[1] != "u" or not parts[2]:
            self._refuse(404, receiver.book.refuse("HTTP", peer, "PUT outside /u/TOKEN/"))
            return
        try:
            grant = receiver.book.check("HTTP", parts[2], peer, "upload")
        except Refused as e:
            self._refuse(403, e)
            return
        if length is not None and length > grant.remaining():
            self._refuse(
                413,
                receiver.book.refuse(
                    "HTTP", peer, f"{length} bytes are more than {grant.describe()} allows"
                ),
            )
            return
        name = parts[-1] if len(parts) > 3 else ""
        try:
            upload = receiver.store.openUpload(grant, name)
        except StoreError as e:
            self._refuse(
                507 if isinstance(e, NoSpace) else 413, receiver.book.refuse("HTTP", peer, str(e))
            )
            return
        if length is not None and not receiver.store.hasRoom(length):
            upload.fail()
            self._refuse(
                507,
                receiver.book.refuse("HTTP", peer, f"no room for {length} bytes"),
            )
            return
        receiver.book.begin(grant)
        self._grant = grant
        self._upload = upload
        upload.throttles(channel.transport)
        grant.onEnd.append(self._grantEnded)

    def _grantEnded(self) -> None:
        """The grant expired or was revoked while the body was still coming."""
        if self._upload is not None:
            self._upload.fail()
            self._upload = None
            self._refuse(403, Refused("grant ended during the upload"), logged=False)

    def _refuse(self, code: int, reason: Exception, logged: bool = True) -> None:
        """Answer now, before (the rest of) the body, and close."""
        if self._refused:
            return
        self._refused = True
        self.requestHeaders.removeHeader(b"expect")
        phrase = _PHRASES.get(code, b"Error")
        body = phrase + b"\n"
        transport: Any = self.channel.transport
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (code, phrase, len(body), body)
        )
        transport.loseConnection()
        if self._grant is not None:
            self._receiver().book.reopen(self._grant)
            self._grant = None

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        if self._upload is None:
            return
        try:
            self._upload.write(data)
        except StoreError as e:
            self._upload = None
            code = 413 if isinstance(e, TooLarge) else 507
            self._refuse(code, self._receiver().book.refuse("HTTP", self._peer(), str(e)))

    def process(self) -> None:
        if self._refused:
            return
        super().process()

    def finishUpload(self) -> Deferred[str] | None:
        """
        The body is complete: once it is on disk, the file is kept and the
        grant is used (the result is its path).
        """
        upload, grant = self._upload, self._grant
        self._upload = self._grant = None
        if upload is None or grant is None:
            return None
        book = self._receiver().book

        def stored(path: str) -> str:
            book.finishSession(grant)
            return path

        def failed(failure: Failure) -> Failure:
            book.reopen(grant)
            return failure

        return upload.finish().addCallbacks(stored, failed)

    def connectionLost(self, reason: Failure) -> None:
        if self._upload is not None:
            self._upload.fail()
            self._upload = None
            self.log.info("HTTP receiver: upload from {peer} cut off", peer=cut(self._peer()))
        if self._grant is not None:
            self._receiver().book.reopen(self._grant)
            self._grant = None
        super().connectionLost(reason)


def _tcpTransport(transport: Any) -> Any:
    """Through protocol wrappers (the connection cap) to the connection's own transport."""
    for _ in range(8):
        inner = getattr(transport, "transport", None)
        if inner is None or not hasattr(transport, "wrappedProtocol"):
            break
        transport = inner
    return transport


def unacknowledged(transport: Any) -> int:
    """
    Bytes written to C{transport} that its peer has not acknowledged yet:
    what Twisted still buffers and, on Linux, the socket's send queue
    (C{SIOCOUTQ}: sent but unacknowledged, and unsent).
    """
    t = _tcpTransport(transport)
    buffered = len(getattr(t, "dataBuffer", b"")) - int(getattr(t, "offset", 0))
    pending = max(0, buffered) + int(getattr(t, "_tempDataLen", 0))
    outq = getattr(termios, "TIOCOUTQ", None)
    getHandle = getattr(t, "getHandle", None)
    if outq is not None and getHandle is not None:
        try:
            raw = fcntl.ioctl(getHandle().fileno(), outq, b"\0\0\0\0")
            pending += struct.unpack("i", raw)[0]
        except (OSError, AttributeError, ValueError, TypeError):
            pass
    return pending


class ImageProducer:
    """
    Sends bytes C{start} to C{end} of an image, waiting for bytes still to
    come.  A push producer: it writes while the transport takes more and
    the image has bytes, stops when the transport pauses it, and sleeps on
    the image (L{Image.waitFor}) when it caught up with a fetch still
    running, so a waiting download costs nothing until the next bytes.

    With C{grant} (a download of the whole image, or of an open-ended
    range), while the grant holds its end: it stops before the image's
    last byte, tells the grant once the peer acknowledged every byte sent
    (C{Grant.reachedEnd}), and goes on when the grant is released; if the
    grant ends (revoked, expired) before its release, the download is cut
    off, held or not: the board is not to finish it.
    """

    def __init__(
        self,
        request: server.Request,
        image: Image,
        start: int,
        end: int | None,
        grant: Grant | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.request = request
        self.image = image
        self.position = start
        self.end = end
        self.grant = grant if grant is not None and grant.holdsEnd else None
        self.clock = clock
        self.file: IO[bytes] | None = open(image.path, "rb", buffering=0)
        self.file.seek(start)
        self._waiting: Deferred[None] | None = None
        self._held: Deferred[bool] | None = None
        self._drain: IDelayedCall | None = None
        self._paused = False
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        request.registerProducer(self, True)
        if self.grant is not None:
            self.grant.onEnd.append(self._grantEnded)
        self._pump()

    def _grantEnded(self) -> None:
        if self.grant is not None and not self.grant.endReleased and self.file is not None:
            self._stopWaiting()
            self._abort()

    def _holding(self) -> bool:
        return self.grant is not None and self.grant.holding

    def _pump(self) -> None:
        while (
            self.file is not None
            and not self._paused
            and self._waiting is None
            and self._held is None
        ):
            # only bytes known to be on disk (the image's size), never a write in progress
            limit = self.image.size if self.end is None else min(self.end, self.image.size)
            holding = self._holding()
            if holding:
                limit = min(limit, self.image.size - HELD_BYTES)
            want = min(CHUNK, limit - self.position)
            data = self.file.read(want) if want > 0 else b""
            if data:
                self.position += len(data)
                if self.end is not None and self.position >= self.end:
                    self.request.write(data)
                    self._done()
                    return
                self.request.write(data)  # may pause us
                continue
            if self.end is not None and self.position >= self.end:
                self._done()
            elif self.image.failed is not None:
                self._abort()
            elif self.image.finished and self.position >= self.image.size:
                self._done()
            elif holding and self.image.finished:
                self._hold()
            else:
                after = self.position + (HELD_BYTES if holding else 0)
                self._waiting = self.image.waitFor(after)
                self._waiting.addCallback(self._woken)
            return

    def _woken(self, _: None) -> None:
        self._waiting = None
        self._pump()

    # -- held before the last byte ---------------------------------------------

    def _hold(self) -> None:
        assert self.grant is not None
        self._held = self.grant.whenReleased()
        self._held.addCallback(self._released)
        if self._held is not None:
            self._watchDrain()

    def _watchDrain(self) -> None:
        self._drain = None
        if self._held is None or self.file is None or self.grant is None:
            return
        channel = self.request.channel
        transport = getattr(channel, "transport", None)
        if transport is None or unacknowledged(transport) == 0 or self.clock is None:
            self.grant.reachedEnd()
            return
        self._drain = self.clock.callLater(DRAIN_INTERVAL, self._watchDrain)

    def _released(self, released: bool) -> None:
        self._held = None
        self._stopDrain()
        if self.file is None:
            return
        if released:
            self._pump()
        else:
            self._abort()

    def _stopDrain(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and drain.active():
            drain.cancel()

    # -- the end ----------------------------------------------------------------

    def _stopWaiting(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.addErrback(lambda _: None)

    def _close(self) -> None:
        self._stopDrain()
        if self.grant is not None:
            try:
                self.grant.onEnd.remove(self._grantEnded)
            except ValueError:
                pass
        if self.file is not None:
            self.file.close()
            self.file = None

    def _done(self) -> None:
        self._close()
        self.request.unregisterProducer()
        self.request.finish()

    def _abort(self) -> None:
        self._close()
        self.request.unregisterProducer()
        cast(Any, self.request.channel.transport).loseConnection()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._close()


class _Root(Resource):
    isLeaf = True

    def __init__(self, receiver: HttpReceiver) -> None:
        super().__init__()
        self.receiver = receiver

    def _refuse(self, request: server.Request, code: int, reason: str) -> bytes:
        peer = str(getattr(request.getClientAddress(), "host", ""))
        self.receiver.book.refuse("HTTP", peer, reason)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain")
        return _PHRASES.get(code, b"Error") + b"\n"

    def render_PUT(self, request: server.Request) -> bytes | int:
        stored = cast(ReceiverRequest, request).finishUpload()
        if stored is None:
            return self._refuse(request, 403, "PUT without an upload")

        def answer(code: int, body: bytes) -> None:
            if request.finished or getattr(request, "_disconnected", False):
                return
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/plain")
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            peer = str(getattr(request.getClientAddress(), "host", ""))
            self.receiver.book.refuse("HTTP", peer, str(failure.value))
            code = 403 if failure.check(GrantEnded) else 507
            answer(code, _PHRASES[code] + b"\n")

        stored.addCallbacks(lambda _: answer(201, b"Created\n"), failed)
        return server.NOT_DONE_YET

    def render_GET(self, request: server.Request) -> bytes | int:
        parts = _path(request.path)
        peer = str(getattr(request.getClientAddress(), "host", ""))
        if len(parts) < 3 or parts[1] != "fw":
            return self._refuse(request, 404, f"{cut(request.method)} of {cut(request.path)}")
        try:
            grant = self.receiver.book.check("HTTP", parts[2], peer, "download")
        except Refused:
            request.setResponseCode(403)
            return b"Forbidden\n"
        image = self.receiver.images(grant.image)
        if image is None or image.failed is not None:
            return self._refuse(request, 404, f"image of {grant.describe()} is not available")
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"content-type", b"application/octet-stream")
        header = request.getHeader(b"range")
        match = _RANGE.match(header.strip()) if header else None
        if match is None or match.group(1) == b"":
            # no range or a suffix range: the whole image
            if not image.finished:
                if request.method == b"HEAD":
                    return b""
                ImageProducer(request, image, 0, None, grant, self.receiver.book.clock)
                return server.NOT_DONE_YET
            return self._serve(request, image, 0, image.size, grant)
        start = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else None
        # a range to the image's end (curl -C -, or an end at or past the
        # last byte) is the rest of a download: held like one; a range that
        # ends before the last byte (random access) is not
        reachesEnd = last is None or (image.finished and last + 1 >= image.size)
        held = grant if reachesEnd or not image.finished else None
        if image.finished:
            return self._range(request, image, start, last, held)
        self._whenFinished(image, lambda: self._finishedRange(request, image, start, last, held))
        return server.NOT_DONE_YET

    render_HEAD = render_GET

    def _whenFinished(self, image: Image, then: Callable[[], None]) -> None:
        def woken(_: None) -> None:
            if image.finished or image.failed is not None:
                then()
            else:
                image.waitFor(image.size).addCallback(woken)

        image.waitFor(image.size).addCallback(woken)

    def _finishedRange(
        self,
        request: server.Request,
        image: Image,
        start: int,
        last: int | None,
        grant: Grant | None,
    ) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        if image.failed is not None:
            cast(Any, request.channel.transport).loseConnection()
            return
        body = self._range(request, image, start, last, grant)
        if isinstance(body, bytes):
            request.write(body)
            request.finish()

    def _range(
        self,
        request: server.Request,
        image: Image,
        start: int,
        last: int | None,
        grant: Grant | None = None,
    ) -> bytes | int:
        size = image.size
        if start >= size or (last is not None and last < start):
            request.setResponseCode(416)
            request.setHeader(b"content-range", b"bytes */%d" % size)
            return b""
        end = size if last is None else min(size, last + 1)
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes %d-%d/%d" % (start, end - 1, size))
        return self._serve(request, image, start, end, grant)

    def _serve(
        self,
        request: server.Request,
        image: Image,
        start: int,
        end: int,
        grant: Grant | None = None,
    ) -> bytes | int:
        request.setHeader(b"content-length", b"%d" % (end - start))
        if request.method == b"HEAD" or end == start:
            return b""
        ImageProducer(request, image, start, end, grant, self.receiver.book.clock)
        return server.NOT_DONE_YET

    def render(self, request: server.Request) -> bytes | int:
        if request.method in (b"GET", b"HEAD"):
            return self.render_GET(request)
        if request.method == b"PUT":
            return self.render_PUT(request)
        return self._refuse(request, 405, f"method {cut(request.method)}")


class HttpReceiver:
    """The HTTP receiver's state: the grants, the store and the images by name."""

    def __init__(
        self, book: GrantBook, store: Store, images: Callable[[str], Image | None]
    ) -> None:
        self.book = book
        self.store = store
        self.images = images

    def site(self, timeout: float) -> server.Site:
        site = server.Site(_Root(self), timeout=timeout)
        site.requestFactory = ReceiverRequest
        site.displayTracebacks = False
        site.receiver = self  # type: ignore[attr-defined]
        site.noisy = False
        return site
