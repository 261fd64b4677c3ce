"""
L{rcp.receivers.disk}: a file's bytes written in order off the reactor
thread, the source paused while too many wait, errors kept for the end.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import skipIf

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.receivers.disk import (
    SPLICE,
    DiskWriter,
    SpliceIdle,
    SpliceNoRoom,
    SpliceStopped,
    SpliceTooLarge,
    SpliceUnsupported,
    spliceInto,
    writeAll,
)


class Later:
    """A L{rcp.receivers.disk.Run} whose jobs run when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, function: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((function, d))
        return d

    def runOne(self) -> None:
        function, d = self.jobs.pop(0)
        maybeDeferred(function).chainDeferred(d)


@implementer(IPushProducer)
class Source:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class DiskWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self.later = Later()
        self.seen: list[int] = []
        self.writer = DiskWriter(self.fd, self.later, high=10, low=4, onWritten=self.seen.append)

    def test_inOrderInBatches(self) -> None:
        """Bytes queued while a batch is written go together in the next batch."""
        self.writer.write(b"abc")
        self.writer.write(b"def")
        self.writer.write(b"")
        self.writer.write(b"gh")
        self.assertEqual(len(self.later.jobs), 1)
        self.later.runOne()
        self.assertEqual(self.seen, [3])
        self.later.runOne()
        self.assertEqual(self.seen, [3, 8])
        closed = self.writer.close()
        self.successResultOf(closed)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"abcdefgh")
        self.assertIsNone(self.writer.fd)

    def test_closeWaitsForTheWrites(self) -> None:
        self.writer.write(b"abc")
        closed = self.writer.close()
        self.assertNoResult(closed)
        self.assertRaises(OSError, self.writer.write, b"more")
        self.later.runOne()
        self.successResultOf(closed)

    def test_sourcePausedAboveHighResumedBelowLow(self) -> None:
        source = Source()
        self.writer.throttles(source)
        self.writer.write(b"x" * 6)
        self.assertFalse(source.paused)
        self.writer.write(b"x" * 6)  # 12 waiting > 10
        self.assertTrue(source.paused)
        self.later.runOne()  # 6 written, 6 waiting: not below 4 yet
        self.assertTrue(source.paused)
        self.later.runOne()
        self.assertFalse(source.paused)
        self.assertEqual(self.writer.pending, 0)

    def test_errorKeptAndReported(self) -> None:
        """A failed write drops what waits, refuses more, and fails the close."""
        os.close(self.fd)  # the next write fails: EBADF
        self.writer.write(b"abc")
        self.writer.write(b"def")
        self.later.runOne()
        self.assertIsInstance(self.writer.error, OSError)
        self.assertEqual(self.later.jobs, [])
        self.assertRaises(OSError, self.writer.write, b"x")
        self.writer.fd = os.open(self.path, os.O_RDONLY)  # something for close() to close
        self.failureResultOf(self.writer.close(), OSError)

    def test_abandonDropsWhatWaits(self) -> None:
        self.writer.write(b"abc")
        self.writer.write(b"def")  # waits behind the first batch
        done = self.writer.abandon()
        self.assertNoResult(done)
        self.later.runOne()
        self.successResultOf(done)
        self.assertEqual(self.later.jobs, [])
        self.assertEqual(self.writer.pending, 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"abc")


class WriteAllTests(SynchronousTestCase):
    def test_partialWrites(self) -> None:
        """Whatever writev(2) takes at a time, every byte goes once, in order."""
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        chunks = [bytes([i % 256]) * 300 for i in range(700)]  # more buffers than one writev takes
        received = bytearray()

        def drain() -> None:
            while len(received) < 210_000:
                received.extend(os.read(r, 65536))

        reader = threading.Thread(target=drain)
        reader.start()
        writeAll(w, chunks)
        reader.join(10)
        self.assertEqual(bytes(received), b"".join(chunks))


def _tcpPair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a TCP connection on loopback; the receiving one non-blocking."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    receiver.setblocking(False)
    return sender, receiver


class _SpliceCase(SynchronousTestCase):
    """L{spliceInto}, in a thread of the test, over a real TCP connection."""

    def setUp(self) -> None:
        self.sender, self.receiver = _tcpPair()
        self.addCleanup(self.sender.close)
        self.addCleanup(self.receiver.close)
        self.path = self.mktemp()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self.addCleanup(os.close, self.fd)
        self.stop = threading.Event()

    def splice(
        self, limit: int = 10**9, room: Callable[[int], bool] = lambda n: True, idle: float = 5
    ) -> Any:
        result: list[Any] = []

        def run() -> None:
            try:
                result.append(
                    spliceInto(self.receiver.fileno(), self.fd, limit, room, idle, self.stop)
                )
            except BaseException as e:
                result.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, 10)
        return thread, result


@skipIf(not SPLICE, "no splice(2) here")
class SpliceTests(_SpliceCase):
    def test_everyByteInOrder(self) -> None:
        data = os.urandom(3_000_000)
        thread, result = self.splice()
        os.write(self.fd, b"head")  # bytes written before stay first
        self.sender.sendall(data)
        self.sender.close()
        thread.join(10)
        self.assertEqual(result, [len(data)])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"head" + data)

    def test_tooLarge(self) -> None:
        thread, result = self.splice(limit=1000)
        self.sender.sendall(b"x" * 1001)
        thread.join(10)
        self.assertIsInstance(result[0], SpliceTooLarge)

    def test_noRoom(self) -> None:
        asked: list[int] = []

        def room(n: int) -> bool:
            asked.append(n)
            return False

        thread, result = self.splice(room=room)
        self.sender.sendall(b"x" * 100)
        thread.join(10)
        self.assertIsInstance(result[0], SpliceNoRoom)
        self.assertEqual(os.path.getsize(self.path), 0)
        self.assertTrue(asked)

    def test_writeFailsAsNoRoom(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDONLY)  # not writable: the file side fails
        thread, result = self.splice()
        self.sender.sendall(b"x" * 100)
        thread.join(10)
        self.assertIsInstance(result[0], SpliceNoRoom)
        self.assertIn("writing failed", str(result[0]))

    def test_idle(self) -> None:
        thread, result = self.splice(idle=0.4)
        self.sender.sendall(b"abc")
        thread.join(10)
        self.assertIsInstance(result[0], SpliceIdle)

    def test_stopped(self) -> None:
        thread, result = self.splice()
        self.stop.set()
        thread.join(2)
        self.assertFalse(thread.is_alive())
        self.assertIsInstance(result[0], SpliceStopped)

    def test_unsupportedSource(self) -> None:
        """A source the kernel cannot splice: nothing moved, read it the usual way."""
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        self.addCleanup(os.close, directory)
        self.assertRaises(
            SpliceUnsupported, spliceInto, directory, self.fd, 10, lambda n: True, 1, self.stop
        )

    def test_connectionReset(self) -> None:
        thread, result = self.splice()
        self.sender.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        self.sender.sendall(b"abc")
        self.sender.close()  # RST
        thread.join(10)
        self.assertIsInstance(result[0], ConnectionResetError)


@skipIf(not SPLICE, "no splice(2) here")
class SpliceEdgeTests(_SpliceCase):
    def test_urgentByte(self) -> None:
        """An urgent byte (MSG_OOB) neither stops the reception nor makes it spin."""
        thread, result = self.splice(idle=2)
        self.sender.sendall(b"ab")
        self.sender.send(b"!", socket.MSG_OOB)
        self.sender.sendall(b"cd")
        self.sender.close()
        started = time.process_time()
        thread.join(10)
        self.assertEqual(result, [4])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"abcd")
        self.assertLess(time.process_time() - started, 1.0)

    def test_urgentByteThenSilence(self) -> None:
        """Idleness is time since the last byte, whatever poll(2) says."""
        thread, result = self.splice(idle=0.6)
        self.sender.sendall(b"ab")
        self.sender.send(b"!", socket.MSG_OOB)
        thread.join(10)
        self.assertIsInstance(result[0], SpliceIdle)

    def test_fileThatCannotBeSplicedInto(self) -> None:
        """The bytes already taken from the socket go into the file; the rest is the caller's."""
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)  # splice(2) refuses O_APPEND
        thread, result = self.splice()
        self.sender.sendall(b"x" * 1000)
        thread.join(10)
        self.assertIsInstance(result[0], SpliceUnsupported)
        self.assertEqual(result[0].moved, 1000)
        self.assertEqual(os.path.getsize(self.path), 1000)


class RepauseTests(SynchronousTestCase):
    def test_pausedAgainWhenSomeoneElseResumed(self) -> None:
        """twisted.web's channel may resume the connection: the next write pauses it again."""
        path = self.mktemp()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        later = Later()
        writer = DiskWriter(fd, later, high=4, low=1)
        source = Source()
        writer.throttles(source)
        writer.write(b"x" * 5)
        self.assertTrue(source.paused)
        source.resumeProducing()  # by someone else
        writer.write(b"y")
        self.assertTrue(source.paused)
        while later.jobs:
            later.runOne()
        self.assertFalse(source.paused)
        self.successResultOf(writer.close())
