"""
Backend transfers (L{rcp.transfer}) against real servers written by
others: nginx over HTTP and HTTPS (PUT, Range) and pyftpdlib (FTP): an
image fetched in chunks into a writer, a retry that continues where the
failed attempt stopped, uploads as curl -T does them, and every refusal a
clear error with the password redacted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.transfer import CurlTransfers, TransferError, redact
from rcp.transfer.curl import checkUrl

from .common import requireProgram
from .servers import startFtpd, startNginx

reactor: Any = _reactor


class Writer:
    """An image writer that keeps what it was given (the receivers' role)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.finished = False
        self.failed: str | None = None

    def append(self, data: bytes) -> None:
        self.chunks.append(data)

    def finish(self) -> None:
        self.finished = True

    def fail(self, reason: str) -> None:
        self.failed = reason

    def throttles(self, source: object) -> None:
        pass

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class UrlTests(SynchronousTestCase):
    def test_redact(self) -> None:
        self.assertEqual(redact("ftp://u:pw@h:21/x"), "ftp://u:***@h:21/x")
        self.assertEqual(redact("https://h/x"), "https://h/x")

    def test_refused(self) -> None:
        for bad in ("file:///etc/passwd", "gopher://h/", "http:///x", "http://h/\n", "-o/x", ""):
            self.assertRaises(TransferError, checkUrl, bad)
        checkUrl("ftps://h:990/x")


class TransferTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        requireProgram("curl")
        self.image = os.urandom(3 * 1024 * 1024 + 17)

    async def test_fetchHttpAndHttps(self) -> None:
        nginx = startNginx(self)
        (nginx.root / "fw.bin").write_bytes(self.image)
        for tls in (False, True):
            writer = Writer()
            transfers = CurlTransfers(reactor, caFile=str(nginx.ca))
            size = await transfers.fetch(nginx.url("fw.bin", tls), writer, 1, 0.1)
            self.assertEqual(size, len(self.image))
            self.assertTrue(writer.finished)
            self.assertEqual(
                hashlib.sha256(writer.data).digest(), hashlib.sha256(self.image).digest()
            )
            self.assertGreater(len(writer.chunks), 1)  # streamed, not in one piece

    async def test_untrustedCertificate(self) -> None:
        nginx = startNginx(self)
        (nginx.root / "fw.bin").write_bytes(b"x")
        writer = Writer()
        with self.assertRaises(TransferError) as caught:
            await CurlTransfers(reactor).fetch(nginx.url("fw.bin", True), writer, 1, 0.1)
        self.assertIn("not trusted", str(caught.exception))
        self.assertIsNotNone(writer.failed)

    async def test_retryContinues(self) -> None:
        """A retry fetches only what is missing: the writer's bytes stay valid."""
        nginx = startNginx(self)
        (nginx.root / "fw.bin").write_bytes(self.image)
        writer = Writer()
        transfers = CurlTransfers(reactor)
        cut = 1024 * 1024
        attempts: list[int] = []
        original = transfers._fetchOnce

        async def flaky(url: str, into: Any, offset: int) -> tuple[int, int, str]:
            attempts.append(offset)
            if len(attempts) == 1:
                # the first attempt delivers a part, then the connection breaks
                into.append(self.image[:cut])
                return 18, cut, "transfer closed with outstanding read data"
            return await original(url, into, offset)

        transfers._fetchOnce = flaky  # type: ignore[method-assign]
        size = await transfers.fetch(nginx.url("fw.bin"), writer, 3, 0.1)
        self.assertEqual(attempts, [0, cut])
        self.assertEqual(size, len(self.image))
        self.assertEqual(writer.data, self.image)

    async def test_fetchFailures(self) -> None:
        nginx = startNginx(self)
        ftpd = startFtpd(self)
        for url, said in (
            (nginx.url("missing.bin"), "HTTP error"),
            (ftpd.url("missing.bin"), "curl exit status"),
            (ftpd.url().replace("s3cret", "wrong"), "login refused"),
            ("http://127.0.0.1:1/x", "cannot connect"),
        ):
            writer = Writer()
            with self.assertRaises(TransferError) as caught:
                await CurlTransfers(reactor).fetch(url, writer, 2, 0.05)
            self.assertIn(said, str(caught.exception))
            self.assertNotIn("s3cret", str(caught.exception))
            self.assertNotIn("wrong@", str(caught.exception))
            self.assertIsNotNone(writer.failed)

    async def test_fetchFtp(self) -> None:
        ftpd = startFtpd(self)
        (ftpd.root / "fw.bin").write_bytes(self.image)
        writer = Writer()
        await CurlTransfers(reactor).fetch(ftpd.url("fw.bin"), writer, 1, 0.1)
        self.assertEqual(writer.data, self.image)

    async def test_tooLarge(self) -> None:
        nginx = startNginx(self)
        (nginx.root / "fw.bin").write_bytes(self.image)
        writer = Writer()
        with self.assertRaises(TransferError) as caught:
            await CurlTransfers(reactor, maxBytes=1024).fetch(nginx.url("fw.bin"), writer, 1, 0.1)
        self.assertIn("larger than the allowed size", str(caught.exception))

    async def test_uploads(self) -> None:
        """As curl -T: a location ending in / gets the file's name."""
        nginx = startNginx(self)
        ftpd = startFtpd(self)
        archive = Path(self.mktemp())
        archive.write_bytes(self.image)
        transfers = CurlTransfers(reactor, caFile=str(nginx.ca))
        await transfers.upload(str(archive), nginx.url("logs/"), 1, 0.1)
        await transfers.upload(str(archive), nginx.url("tls/named.tar.gz", tls=True), 1, 0.1)
        await transfers.upload(str(archive), ftpd.url(), 1, 0.1)
        self.assertEqual((nginx.root / "logs" / archive.name).read_bytes(), self.image)
        self.assertEqual((nginx.root / "tls" / "named.tar.gz").read_bytes(), self.image)
        self.assertEqual((ftpd.root / archive.name).read_bytes(), self.image)

    async def test_uploadRetriesThenFails(self) -> None:
        archive = Path(self.mktemp())
        archive.write_bytes(b"x")
        with self.assertRaises(TransferError) as caught:
            await CurlTransfers(reactor).upload(str(archive), "ftp://u:pw@127.0.0.1:1/", 3, 0.05)
        self.assertIn("cannot connect", str(caught.exception))
        self.assertIn("u:***@", str(caught.exception))
        with self.assertRaises(TransferError):
            await CurlTransfers(reactor).upload("/nonexistent", "http://127.0.0.1:1/", 1, 0)
