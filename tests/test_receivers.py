"""The receivers' pure parts, driven with a Clock: grants, names, the store, images."""

from __future__ import annotations

import threading
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rcp.receivers.disk import SpliceUnsupported
from rcp.receivers.facade import Receivers
from rcp.receivers.grants import GrantBook, Refused
from rcp.receivers.store import GrantEnded, NoSpace, Store, TooLarge, safeName


class GrantTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.book = GrantBook(self.clock)

    def test_urls(self) -> None:
        grant = self.book.grantUpload("sat 1", "10.0.0.2", 5, 60, 100)
        token = grant.token
        self.assertEqual(
            grant.urlFor("ftp://{my-ip}:2121/", "10.0.0.1"), f"ftp://sat%201:{token}@10.0.0.1:2121/"
        )
        self.assertEqual(
            grant.urlFor("ftp://<my-ip>:2121/", "10.0.0.1"), f"ftp://sat%201:{token}@10.0.0.1:2121/"
        )
        self.assertEqual(
            grant.urlFor("http://{my-ip}:2180/", "fd00::1"), f"http://[fd00::1]:2180/u/{token}/"
        )
        self.assertRaises(ValueError, grant.urlFor, "file:///etc/", "10.0.0.1")
        self.assertGreaterEqual(len(token), 32)

    def test_checks(self) -> None:
        grant = self.book.grantUpload("sat1", "10.0.0.2", 5, 60, 100)
        self.assertIs(self.book.check("FTP", grant.token, "10.0.0.2", "upload", "sat1"), grant)
        self.assertIs(self.book.check("FTP", grant.token, "::ffff:10.0.0.2", "upload"), grant)
        for token, peer, purpose, board in [
            ("nope", "10.0.0.2", "upload", None),
            (grant.token, "10.0.0.3", "upload", None),
            (grant.token, "10.0.0.2", "download", None),
            (grant.token, "10.0.0.2", "upload", "sat2"),
        ]:
            self.assertRaises(Refused, self.book.check, "FTP", token, peer, purpose, board)

    def test_usedAfterTheSession(self) -> None:
        grant = self.book.grantUpload("sat1", "10.0.0.2", 5, 60, 100)
        done = grant.whenDone()
        self.book.begin(grant)
        self.assertRaises(Refused, self.book.check, "FTP", grant.token, "10.0.0.2", "upload")
        grant.files.append("/x")
        self.book.finishSession(grant)
        self.assertEqual(self.successResultOf(done), ["/x"])
        error = self.assertRaises(
            Refused, self.book.check, "FTP", grant.token, "10.0.0.2", "upload"
        )
        self.assertIn("used", error.reason)

    def test_expiry(self) -> None:
        grant = self.book.grantUpload("sat1", "10.0.0.2", 5, 60, 100)
        done = grant.whenDone()
        ended = []
        grant.onEnd.append(lambda: ended.append(True))
        self.clock.advance(59)
        self.assertNoResult(done)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(done), [])
        self.assertEqual(ended, [True])
        error = self.assertRaises(
            Refused, self.book.check, "HTTP", grant.token, "10.0.0.2", "upload"
        )
        self.assertIn("expired", error.reason)
        self.clock.advance(3600)
        error = self.assertRaises(
            Refused, self.book.check, "HTTP", grant.token, "10.0.0.2", "upload"
        )
        self.assertIn("unknown", error.reason)

    def test_downloadRepeatable(self) -> None:
        grant = self.book.grantDownload("sat1", "10.0.0.2", "fw.img", 5, 60)
        for _ in range(3):
            self.book.check("HTTP", grant.token, "10.0.0.2", "download")
        grant.revoke()
        self.assertRaises(Refused, self.book.check, "HTTP", grant.token, "10.0.0.2", "download")


class NameTests(SynchronousTestCase):
    def test_safeNames(self) -> None:
        self.assertEqual(safeName("../../etc/passwd"), "passwd")
        self.assertEqual(safeName("/etc/shadow"), "shadow")
        self.assertEqual(safeName("..\\..\\boot.ini"), "boot.ini")
        self.assertEqual(safeName("a\x00b\nc\x7f"), "abc")
        self.assertEqual(safeName(".."), "upload")
        self.assertEqual(safeName(""), "upload")
        self.assertEqual(safeName(".bashrc"), "bashrc")
        long = safeName("é" * 4096 + ".tar.gz")
        self.assertLessEqual(len(long.encode()), 200)
        self.assertTrue(long.endswith(".tar.gz"))


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.free = 10_000
        self.store = Store(self.mktemp(), 1000, free=lambda _: self.free)
        self.book = GrantBook(Clock())

    def test_neverOverwrites(self) -> None:
        grant = self.book.grantUpload("sat1", "h", 1, 60, 100)
        paths = []
        for body in (b"one", b"two"):
            f = self.store.openUpload(grant, "log.txt")
            f.write(body)
            paths.append(self.successResultOf(f.finish()))
        self.assertEqual([Path(p).name for p in paths], ["log.txt", "log-1.txt"])
        self.assertEqual(Path(paths[0]).read_bytes(), b"one")
        self.assertEqual(grant.files, paths)

    def test_tooLargeRemovesThePartialFile(self) -> None:
        grant = self.book.grantUpload("sat1", "h", 1, 60, 10)
        f = self.store.openUpload(grant, "big")
        f.write(b"x" * 8)
        self.assertRaises(TooLarge, f.write, b"x" * 3)
        self.assertFalse(f.path.exists())
        self.assertEqual(grant.received, 0)

    def test_minimumFreeSpace(self) -> None:
        grant = self.book.grantUpload("sat1", "h", 1, 60, 100_000)
        f = self.store.openUpload(grant, "log")
        self.assertRaises(NoSpace, f.write, b"x" * 9001)
        self.assertFalse(f.path.exists())
        self.free = 999
        self.assertRaises(NoSpace, self.store.openUpload, grant, "log")


class DeferredStoreTests(SynchronousTestCase):
    """The store with its writes in another thread (here: when the test says)."""

    def setUp(self) -> None:
        from .test_disk import Later

        self.later = Later()
        self.store = Store(self.mktemp(), 0, free=lambda _: 10**9, run=self.later)
        self.book = GrantBook(Clock())

    def test_grantEndsWhileTheLastBytesAreWritten(self) -> None:
        """A grant revoked (or expired) before the file is on disk keeps no file."""
        grant = self.book.grantUpload("sat1", "h", 1, 60, 100)
        done = grant.whenDone()
        f = self.store.openUpload(grant, "log.txt")
        f.write(b"abc")
        finished = f.finish()
        grant.revoke()
        self.assertEqual(self.successResultOf(done), [])
        while self.later.jobs:
            self.later.runOne()
        self.failureResultOf(finished, GrantEnded)
        self.assertFalse(f.path.exists())
        self.assertEqual(grant.files, [])
        self.assertEqual(grant.received, 0)

    def test_noReceptionThreadsNoSplice(self) -> None:
        """Without reception threads a socket is never waited on in the caller's thread."""
        grant = self.book.grantUpload("sat1", "h", 1, 60, 100)
        f = self.store.openUpload(grant, "log.txt")
        self.failureResultOf(f.spliceFrom(0, 1.0, threading.Event()), SpliceUnsupported)


class ImageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        store = Store(self.mktemp(), 0, free=lambda _: 10**9)
        self.receivers = Receivers(self.clock, store, 2180)

    def test_readersWaitForBytes(self) -> None:
        image = self.receivers.newImage("../fw.img")
        self.assertEqual(image.name, "fw.img")
        waiting = image.waitFor(0)
        self.assertNoResult(waiting)
        image.append(b"abc")
        self.successResultOf(waiting)
        later = image.waitFor(3)
        image.finish()
        self.successResultOf(later)
        self.assertEqual(image.path.read_bytes(), b"abc")

    def test_failureEndsWaiting(self) -> None:
        image = self.receivers.newImage("fw.img")
        waiting = image.waitFor(0)
        image.fail("backend gone")
        self.successResultOf(waiting)
        self.assertEqual(image.failed, "backend gone")
        self.assertFalse(image.path.exists())

    def test_facade(self) -> None:
        image = self.receivers.newImage("fw.img")
        grant = self.receivers.grantDownload("sat1", "10.0.0.2", image, 3, 60)
        url = grant.url("10.0.0.1")
        self.assertTrue(url.startswith("http://10.0.0.1:2180/fw/"))
        self.assertTrue(url.endswith("/fw.img"))
        self.assertIs(self.receivers.image(grant.grant.image), image)
        upload = self.receivers.grantUpload("sat1", "10.0.0.2", 3, 60, 100)
        done = upload.whenDone()
        upload.revoke()
        self.assertEqual(self.successResultOf(done), [])
        grant.revoke()
        self.receivers.dropImage(image)
        self.assertIsNone(self.receivers.image(grant.grant.image))
