"""
L{rcp.receivers.disk}: a file's bytes written in order off the reactor
thread, the source paused while too many wait, errors kept for the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.receivers.disk import DiskWriter, writeAll


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
