"""
The receivers with real clients over loopback: curl -T to FTP and HTTP (as
EVerest's System module uploads), ftplib, curl resuming a firmware download
with Range, and hostile clients.
"""

from __future__ import annotations

import ftplib
import os
import socket
import subprocess
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import TestCase

from rcp.receivers.service import ReceiverService
from rcp.settings import ReceiverSettings

from .common import freePort, requireProgram

reactor: Any = _reactor


class ReceiverCase(TestCase):
    maxUpload = 1_000_000
    minFree = 0
    timeouts = 30.0

    def setUp(self) -> None:
        self.curl = requireProgram("curl")
        self.directory = Path(self.mktemp())
        self.settings = ReceiverSettings(
            ftp_port=freePort(),
            http_port=freePort(),
            directory=str(self.directory),
            max_upload_bytes=self.maxUpload,
            min_free_bytes=self.minFree,
            idle_timeout=self.timeouts,
            data_timeout=self.timeouts,
            max_connections=8,
        )
        self.service = ReceiverService(reactor, self.settings)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.receivers = self.service.receivers
        self.events: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            from twisted.logger import formatEvent

            self.events.append(formatEvent(event))

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def refusals(self) -> list[str]:
        return [e for e in self.events if "refused" in e]

    def grant(self, board: str = "sat1", maxBytes: int | None = None, ttl: float = 60) -> Any:
        return self.receivers.grantUpload(
            board, "127.0.0.1", 7, reactor.seconds() + ttl, maxBytes or self.maxUpload
        )

    def ftpUrl(self, grant: Any) -> str:
        return str(grant.urlFor(f"ftp://{{my-ip}}:{self.settings.ftp_port}/", "127.0.0.1"))

    def httpUrl(self, grant: Any) -> str:
        return str(grant.urlFor(f"http://<my-ip>:{self.settings.http_port}/", "127.0.0.1"))

    def curlRun(self, *args: str) -> Deferred[tuple[bytes, bytes, int]]:
        result: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            self.curl, ("-sS", "--max-time", "20", *args), env=dict(os.environ)
        )
        return result

    def sample(self, name: str, size: int) -> Path:
        path = Path(self.mktemp())
        path.mkdir()
        path = path / name
        path.write_bytes(os.urandom(size))
        return path

    def received(self) -> list[Path]:
        return sorted(p for p in (self.directory / "uploads").rglob("*") if p.is_file())


class Uploads(ReceiverCase):
    async def test_curlFtp(self) -> None:
        grant = self.grant()
        log = self.sample("log.tar.gz", 300_000)
        _out, err, code = await self.curlRun("-T", str(log), self.ftpUrl(grant))
        self.assertEqual(code, 0, err)
        files = await grant.whenDone()
        self.assertEqual(len(files), 1)
        self.assertEqual(Path(files[0]).read_bytes(), log.read_bytes())
        self.assertEqual(Path(files[0]).name, "log.tar.gz")
        # replayed: the session ended, the grant is used
        _out, err, code = await self.curlRun("-T", str(log), self.ftpUrl(grant))
        self.assertNotEqual(code, 0)
        self.assertIn(b"530", err)
        self.assertEqual(len(self.received()), 1)
        self.assertTrue(any("used" in e for e in self.refusals()))

    async def test_curlHttp(self) -> None:
        grant = self.grant()
        log = self.sample("diagnostics.log", 200_000)
        _out, err, code = await self.curlRun("-f", "-T", str(log), self.httpUrl(grant))
        self.assertEqual(code, 0, err)
        files = await grant.whenDone()
        self.assertEqual(Path(files[0]).read_bytes(), log.read_bytes())
        _out, err, code = await self.curlRun("-f", "-T", str(log), self.httpUrl(grant))
        self.assertIn(b"403", err)

    async def test_ftplib(self) -> None:
        grant = self.grant()
        token = grant.grant.token
        port = self.settings.ftp_port

        def upload() -> list[str]:
            replies = []
            with ftplib.FTP() as client:
                client.connect("127.0.0.1", port, timeout=10)
                client.login("sat1", token)
                replies.append(client.pwd())
                client.voidcmd("TYPE I")
                with open(self.sample("a.txt", 1000), "rb") as f:
                    replies.append(client.storbinary("STOR a.txt", f))
                with open(self.sample("b.txt", 1000), "rb") as f:
                    replies.append(client.storbinary("STOR ../../../etc/b.txt", f))
                for command in (
                    "LIST",
                    "NLST",
                    "RETR a.txt",
                    "DELE a.txt",
                    "SITE CHMOD 777 a",
                    "MKD x",
                    "RNFR a.txt",
                ):
                    try:
                        client.sendcmd(command)
                    except ftplib.error_perm as e:
                        replies.append(str(e))
                try:
                    client.sendcmd("PORT 10,1,2,3,4,5")
                except ftplib.error_perm as e:
                    replies.append(str(e))
            return replies

        replies = await threads.deferToThread(upload)
        self.assertEqual(replies[0], "/")
        self.assertTrue(replies[1].startswith("226"))
        self.assertEqual(sum(r.startswith("502") for r in replies), 7, replies)
        self.assertTrue(replies[-1].startswith("504"), replies)
        await deferLater(reactor, 0.2, lambda: None)
        names = sorted(p.name for p in self.received())
        self.assertEqual(names, ["a.txt"] + (["b.txt"] if len(names) == 2 else []))
        self.assertFalse(Path("/etc/b.txt").exists() and Path("/etc/b.txt").stat().st_size == 1000)
        self.assertTrue(any("PORT to 10.1.2.3" in e for e in self.refusals()))
        self.assertTrue(any("command LIST" in e for e in self.refusals()))

    async def test_hostileCredentials(self) -> None:
        log = self.sample("x.log", 100)
        other = self.grant(board="sat2")
        expired = self.grant(ttl=0.1)
        await deferLater(reactor, 0.3, lambda: None)
        port = self.settings.ftp_port
        urls = [
            f"ftp://anonymous:a@127.0.0.1:{port}/",
            f"ftp://sat1:{other.grant.token}@127.0.0.1:{port}/",
            self.ftpUrl(expired),
            f"ftp://sat1:nope@127.0.0.1:{port}/",
        ]
        for url in urls:
            _out, err, _code = await self.curlRun("-T", str(log), url)
            self.assertIn(b"530", err, url)
        _out, err, _code = await self.curlRun(
            "-f", "-T", str(log), f"http://127.0.0.1:{self.settings.http_port}/u/nope/"
        )
        self.assertIn(b"403", err)
        self.assertEqual(self.received(), [])
        self.assertGreaterEqual(len(self.refusals()), 5)

    async def test_hostileNames(self) -> None:
        for name in ("..%2F..%2Fevil", "%2Fetc%2Fevil", "a%00b%0Ac", "x" * 4096):
            grant = self.grant()
            log = self.sample("n.log", 100)
            _out, err, code = await self.curlRun(
                "-f",
                "-T",
                str(log),
                f"http://127.0.0.1:{self.settings.http_port}/u/{grant.grant.token}/{name}",
            )
            self.assertEqual(code, 0, (name, err))
        files = self.received()
        self.assertEqual(len(files), 4)
        for path in files:
            self.assertTrue(path.is_relative_to(self.directory / "uploads"))
            self.assertLessEqual(len(path.name.encode()), 200)
            self.assertFalse(any(ord(c) < 32 for c in path.name))

    async def test_oversize(self) -> None:
        big = self.sample("big.log", self.maxUpload + 1)
        grant = self.grant()
        _out, err, code = await self.curlRun("-f", "-T", str(big), self.httpUrl(grant))
        self.assertIn(b"413", err)
        # chunked: no Content-Length, cut while streaming
        _out, err, code = await self.curlRun(
            "-f", "-H", "Transfer-Encoding: chunked", "-T", str(big), self.httpUrl(grant)
        )
        self.assertNotEqual(code, 0)
        grant2 = self.grant()
        _out, err, code = await self.curlRun("-T", str(big), self.ftpUrl(grant2))
        # curl reports the 552 reply, or the data connection the receiver closed
        self.assertTrue(b"(70) Exceeded storage" in err or b"(55)" in err, err)
        self.assertTrue(any("more than" in e for e in self.refusals()))
        self.assertEqual(self.received(), [])
        # still serving
        small = self.sample("ok.log", 10)
        _out, err, code = await self.curlRun("-f", "-T", str(small), self.httpUrl(self.grant()))
        self.assertEqual(code, 0, err)

    async def test_otherMethods(self) -> None:
        big = self.sample("post.bin", 500_000)
        url = f"http://127.0.0.1:{self.settings.http_port}/u/x/"
        _out, err, code = await self.curlRun("-f", "-X", "POST", "--data-binary", f"@{big}", url)
        self.assertNotEqual(code, 0)
        _out, err, code = await self.curlRun("-f", "-X", "DELETE", url)
        self.assertIn(b"405", err)
        self.assertTrue(any("method DELETE" in e for e in self.refusals()))

    async def test_manyConnections(self) -> None:
        port = self.settings.ftp_port
        sockets = []
        for _ in range(20):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sockets.append(s)
        await deferLater(reactor, 0.5, lambda: None)
        for s in sockets:
            s.close()
        await deferLater(reactor, 0.3, lambda: None)
        self.assertTrue(any("connections already open" in e for e in self.refusals()))
        log = self.sample("after.log", 100)
        _out, err, code = await self.curlRun("-T", str(log), self.ftpUrl(self.grant()))
        self.assertEqual(code, 0, err)


class Deadline(ReceiverCase):
    async def test_grantExpiresDuringTheUpload(self) -> None:
        grant = self.grant(ttl=1.0)
        done = grant.whenDone()
        s = socket.create_connection(("127.0.0.1", self.settings.http_port))
        self.addCleanup(s.close)
        s.sendall(b"PUT /u/" + grant.grant.token.encode() + b"/part HTTP/1.1\r\nHost: x\r\n")
        s.sendall(b"Content-Length: 100\r\n\r\nabc")
        for _ in range(6):
            await deferLater(reactor, 0.3, lambda: None)
            try:
                s.sendall(b"x")
            except OSError:
                break
        self.assertEqual(await done, [])
        s.settimeout(2)
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
        self.assertIn(answer[:12], (b"", b"HTTP/1.1 403"))
        self.assertEqual(self.received(), [])


class SlowClient(ReceiverCase):
    timeouts = 1.0

    async def test_byteAMinute(self) -> None:
        grant = self.grant()
        s = socket.create_connection(("127.0.0.1", self.settings.http_port))
        self.addCleanup(s.close)
        s.sendall(b"PUT /u/" + grant.grant.token.encode() + b"/slow HTTP/1.1\r\nHost: x\r\n")
        s.sendall(b"Content-Length: 100\r\n\r\nabc")
        await deferLater(reactor, 2.5, lambda: None)
        s.settimeout(2)
        try:
            rest = s.recv(100)
        except OSError:
            rest = b""
        self.assertIn(rest[:12], (b"", b"HTTP/1.1 408"))
        self.assertEqual(self.received(), [])
        log = self.sample("after.log", 100)
        _out, err, code = await self.curlRun("-f", "-T", str(log), self.httpUrl(grant))
        self.assertEqual(code, 0, err)


class Firmware(ReceiverCase):
    async def test_resumedRangeDownload(self) -> None:
        image = self.receivers.newImage("fw.img")
        data = os.urandom(500_000)
        image.append(data[:200_000])
        grant = self.receivers.grantDownload("sat1", "127.0.0.1", image, 9, reactor.seconds() + 60)
        url = grant.url("127.0.0.1")
        target = Path(self.mktemp())
        # the first download runs while the image is still being written
        first = self.curlRun("-f", "-o", str(target), url)
        await deferLater(reactor, 0.3, lambda: None)
        image.append(data[200_000:])
        image.finish()
        _out, err, code = await first
        self.assertEqual(code, 0, err)
        self.assertEqual(target.read_bytes(), data)
        # cut it and resume
        target.write_bytes(data[:123_456])
        _out, err, code = await self.curlRun("-f", "-C", "-", "-o", str(target), url)
        self.assertEqual(code, 0, err)
        self.assertEqual(target.read_bytes(), data)
        _out, err, code = await self.curlRun(
            "-s", "-o", "/dev/null", "-w", "%{http_code}", "-r", "600000-", url
        )
        self.assertEqual(_out, b"416")
        other = await self.curlRun("-f", "-o", "/dev/null", url.replace(grant.grant.token, "x"))
        self.assertIn(b"403", other[1])

    async def test_failureEndsReaders(self) -> None:
        image = self.receivers.newImage("bad.img")
        image.append(b"x" * 1000)
        grant = self.receivers.grantDownload("sat1", "127.0.0.1", image, 9, reactor.seconds() + 60)
        running = self.curlRun("-f", "-o", "/dev/null", grant.url("127.0.0.1"))
        await deferLater(reactor, 0.3, lambda: None)
        image.fail("backend went away")
        _out, _err, code = await running
        self.assertNotEqual(code, 0)


class FullDisk(ReceiverCase):
    def setUp(self) -> None:
        self.mount = Path(self.mktemp())
        self.mount.mkdir(parents=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(self.mount)],
            capture_output=True,
        )
        if result.returncode:
            from twisted.trial.unittest import SkipTest

            raise SkipTest(f"cannot mount a tmpfs: {result.stderr!r}")
        self.addCleanup(subprocess.run, ["umount", "-l", str(self.mount)])
        self.minFree = 512 * 1024
        self.maxUpload = 10_000_000
        super().setUp()

    async def test_fullDisk(self) -> None:
        # the receivers' directory on the small tmpfs
        self.service.stopService()
        self.settings = ReceiverSettings(
            ftp_port=freePort(),
            http_port=freePort(),
            directory=str(self.mount / "r"),
            max_upload_bytes=self.maxUpload,
            min_free_bytes=self.minFree,
        )
        self.directory = self.mount / "r"
        self.service = ReceiverService(reactor, self.settings)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.receivers = self.service.receivers
        big = self.sample("big.log", 3_000_000)
        _out, err, code = await self.curlRun("-f", "-T", str(big), self.httpUrl(self.grant()))
        self.assertIn(b"507", err)
        _out, err, code = await self.curlRun(
            "-f", "-H", "Transfer-Encoding: chunked", "-T", str(big), self.httpUrl(self.grant())
        )
        self.assertNotEqual(code, 0)
        _out, err, code = await self.curlRun("-T", str(big), self.ftpUrl(self.grant()))
        # curl reports the 452 reply, or the data connection the receiver closed
        self.assertTrue(b"452" in err or b"(55)" in err or b"(70)" in err, err)
        self.assertTrue(any("free" in e or "writing failed" in e for e in self.refusals()))
        self.assertEqual(self.received(), [])
        small = self.sample("ok.log", 1000)
        _out, err, code = await self.curlRun("-f", "-T", str(small), self.httpUrl(self.grant()))
        self.assertEqual(code, 0, err)


class Listening(ReceiverCase):
    def test_onlyLoopback(self) -> None:
        for port in (self.settings.ftp_port, self.settings.http_port):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.2", port), timeout=2).close()

    def test_wildcardRefused(self) -> None:
        from rcp.config import ConfigError, fromMapping

        for address in ("0.0.0.0", "::"):
            self.assertRaises(ConfigError, fromMapping, ReceiverSettings, {"listen": [address]})


class SlowFtpClient(ReceiverCase):
    timeouts = 1.0

    async def test_silentControlConnection(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.settings.ftp_port))
        self.addCleanup(s.close)
        s.sendall(b"US")
        await deferLater(reactor, 2.5, lambda: None)
        s.settimeout(2)
        data = b""
        try:
            while chunk := s.recv(1000):
                data += chunk
        except OSError:
            pass
        else:
            data += b"<closed>"
        self.assertIn(b"220", data)
        self.assertTrue(data.endswith(b"<closed>"), data)
        log = self.sample("after.log", 100)
        _out, err, code = await self.curlRun("-T", str(log), self.ftpUrl(self.grant()))
        self.assertEqual(code, 0, err)


class UploadsWithoutSplice(Uploads):
    """The same uploads where the kernel cannot move the bytes: read by Twisted."""

    def setUp(self) -> None:
        super().setUp()
        self.service.ftpFactory.splice = False


class FtpCase(ReceiverCase):
    """Uploads over FTP driven by hand (ftplib's own data connection)."""

    def startStor(self, grant: Any, name: str) -> tuple[ftplib.FTP, socket.socket]:
        client = ftplib.FTP()
        client.connect("127.0.0.1", self.settings.ftp_port, timeout=10)
        client.login(grant.grant.board, grant.grant.token)
        client.voidcmd("TYPE I")
        data = client.transfercmd(f"STOR {name}")
        self.addCleanup(client.close)
        self.addCleanup(data.close)
        return client, data

    async def drip(self, data: socket.socket, seconds: float, every: float) -> bool:
        """Send a byte every C{every} s for C{seconds}; whether the receiver closed it."""
        for _ in range(int(seconds / every)):
            try:
                data.sendall(b"x")
            except OSError:
                return True
            await deferLater(reactor, every, lambda: None)
        return False

    async def closedByTheReceiver(self, data: socket.socket) -> bool:
        """Whether the receiver closes C{data} within 5 s (ends it or resets it)."""
        data.settimeout(5)

        def read() -> bool:
            try:
                return data.recv(10) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        return await threads.deferToThread(read)


class FtpDataConnection(FtpCase):
    """A data connection that stalls, outlives its grant, or outlives the service."""

    timeouts = 1.0

    async def test_stalledMidFile(self) -> None:
        grant = self.grant()
        client, data = await threads.deferToThread(self.startStor, grant, "stall.log")
        data.sendall(b"some bytes")
        self.assertTrue(await self.closedByTheReceiver(data))
        with self.assertRaises(ftplib.Error):  # 426
            await threads.deferToThread(client.voidresp)
        self.assertTrue(any("idle too long" in e for e in self.refusals()), self.refusals())
        self.assertEqual(self.received(), [])
        log = self.sample("after.log", 100)
        _out, err, code = await self.curlRun("-T", str(log), self.ftpUrl(self.grant()))
        self.assertEqual(code, 0, err)

    async def test_grantEndsMidFile(self) -> None:
        grant = self.grant(ttl=1.5)
        done = grant.whenDone()
        _client, data = await threads.deferToThread(self.startStor, grant, "late.log")
        closed = await self.drip(data, 4.0, 0.2)
        self.assertTrue(closed or await self.closedByTheReceiver(data))
        self.assertEqual(await done, [])
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.received(), [])

    async def test_serviceStopsMidFile(self) -> None:
        """Stopping the receivers ends a reception in progress at once, file removed."""
        grant = self.grant()
        _client, data = await threads.deferToThread(self.startStor, grant, "cut.log")
        data.sendall(b"x" * 100_000)
        await deferLater(reactor, 0.2, lambda: None)
        started = reactor.seconds()
        await self.service.stopService()
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertTrue(await self.closedByTheReceiver(data))
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.received(), [])


class FtpDataConnectionWithoutSplice(FtpDataConnection):
    def setUp(self) -> None:
        super().setUp()
        self.service.ftpFactory.splice = False


class SlowFtpUploadsHoldNothing(FtpCase):
    """Trickling FTP uploads, more than there are disk threads, hold up no other transfer."""

    timeouts = 20.0

    async def test_otherUploadsGoOn(self) -> None:
        datas = []
        for i in range(6):
            _client, data = await threads.deferToThread(self.startStor, self.grant(), f"t{i}.log")
            data.sendall(b"x")
            datas.append(data)
        log = self.sample("http.log", 1_000_000)
        _out, err, code = await self.curlRun(
            "-f", "--max-time", "8", "-T", str(log), self.httpUrl(self.grant())
        )
        self.assertEqual(code, 0, err)
        _out, err, code = await self.curlRun(
            "--max-time", "8", "-T", str(log), self.ftpUrl(self.grant())
        )
        self.assertEqual(code, 0, err)
        complete = [p for p in self.received() if p.name == "http.log"]
        self.assertEqual([p.stat().st_size for p in complete], [1_000_000, 1_000_000])
        for data in datas:
            data.close()


class HeldFirmware(ReceiverCase):
    """
    A download held before the image's last byte (the aggregator's install
    hold): curl, as core's System downloads, cannot finish until the grant
    is released.
    """

    async def until(self, condition: Any, seconds: float = 10) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail("timed out")

    def finishedImage(self, size: int) -> tuple[Any, bytes]:
        """An image fetched completely: C{size} random bytes."""
        image = self.receivers.newImage("fw.img")
        data = os.urandom(size)
        image.append(data)
        image.finish()
        return image, data

    def heldGrant(self, image: Any) -> tuple[Any, list[float]]:
        grant = self.receivers.grantDownload("sat1", "127.0.0.1", image, 9, reactor.seconds() + 60)
        held: list[float] = []
        grant.holdEnd(lambda: held.append(reactor.seconds()))
        return grant, held

    async def test_heldUntilReleased(self) -> None:
        image = self.receivers.newImage("fw.img")
        data = os.urandom(3_000_000)
        image.append(data[:1_000_000])
        grant, held = self.heldGrant(image)
        target = Path(self.mktemp())
        # -N: what curl received is in the file at once (no stdio buffer)
        download = self.curlRun("-f", "-N", "-o", str(target), grant.url("127.0.0.1"))
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(held, [])  # the image is still being fetched
        image.append(data[1_000_000:])
        image.finish()
        await self.until(lambda: held)
        # every byte but the last has arrived, and curl waits
        await self.until(lambda: target.exists() and target.stat().st_size == len(data) - 1)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(download.called)
        # a range with an end (random access) is not held
        _out, err, code = await self.curlRun(
            "-f", "-o", "/dev/null", "-r", "0-99", grant.url("127.0.0.1")
        )
        self.assertEqual(code, 0, err)
        grant.release()
        _out, err, code = await download
        self.assertEqual(code, 0, err)
        self.assertEqual(target.read_bytes(), data)
        self.assertEqual(len(held), 1)
        # released: a later download is not held
        _out, err, code = await self.curlRun("-f", "-o", str(target), grant.url("127.0.0.1"))
        self.assertEqual(code, 0, err)
        self.assertEqual(target.read_bytes(), data)

    async def test_resumeIsHeldToo(self) -> None:
        image, data = self.finishedImage(500_000)
        grant, held = self.heldGrant(image)
        target = Path(self.mktemp())
        target.write_bytes(data[:100_000])
        download = self.curlRun("-f", "-N", "-C", "-", "-o", str(target), grant.url("127.0.0.1"))
        await self.until(lambda: held)
        await self.until(lambda: target.stat().st_size == len(data) - 1)
        self.assertFalse(download.called)
        grant.release()
        _out, err, code = await download
        self.assertEqual(code, 0, err)
        self.assertEqual(target.read_bytes(), data)

    async def test_rangeToTheEndIsHeld(self) -> None:
        """A range that ends at (or past) the last byte is the whole rest: held like one."""
        image, data = self.finishedImage(300_000)
        grant, held = self.heldGrant(image)
        target = Path(self.mktemp())
        download = self.curlRun(
            "-f", "-N", "-r", f"0-{len(data) + 10}", "-o", str(target), grant.url("127.0.0.1")
        )
        await self.until(lambda: held)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(download.called)
        grant.release()
        _out, err, code = await download
        self.assertEqual(code, 0, err)
        self.assertEqual(target.read_bytes(), data)

    async def test_revokedWhileHeld(self) -> None:
        image, _ = self.finishedImage(200_000)
        grant, held = self.heldGrant(image)
        download = self.curlRun("-f", "-o", "/dev/null", grant.url("127.0.0.1"))
        await self.until(lambda: held)
        grant.revoke()
        _out, _err, code = await download
        self.assertNotEqual(code, 0)

    async def test_revokedWhileRunning(self) -> None:
        # a board still downloading when the others stop waiting is cut off
        image = self.receivers.newImage("fw.img")
        image.append(os.urandom(100_000))
        grant, held = self.heldGrant(image)
        download = self.curlRun("-f", "-o", "/dev/null", grant.url("127.0.0.1"))
        await deferLater(reactor, 0.3, lambda: None)
        grant.revoke()
        image.append(os.urandom(100_000))
        image.finish()
        _out, _err, code = await download
        self.assertNotEqual(code, 0)
        self.assertEqual(held, [])
