"""
The SystemAggregator's policy (L{rcp.aggregator}), without sockets: the
topology check, firmware status aggregation, log collection, the archive.
"""

from __future__ import annotations

import json
import os
import tarfile
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.aggregator.archive import BoardLogs, Packer, archiveName, safeName
from rcp.aggregator.firmware import FirmwareStatus, InstallHold
from rcp.aggregator.logs import FAILED, NOT_CONNECTED, REFUSED, TIMED_OUT, UPLOADED, LogCollection
from rcp.aggregator.module import worstAnswer
from rcp.aggregator.topology import TopologyError, topologyOf
from rcp.everest.sim.bus import SimBus

SATS = [f"satellite_{n}" for n in range(1, 9)]


class TopologyTests(SynchronousTestCase):
    def test_matchedByModuleId(self) -> None:
        topology = topologyOf("agg", ["system", "s2", "s1"], ["s1", "s2"])
        self.assertEqual([b.name for b in topology.boards], ["system", "s2", "s1"])
        self.assertEqual(topology.board("s1").satelliteIndex, 0)
        self.assertEqual(topology.board("s1").systemIndex, 2)
        self.assertTrue(topology.main.isMain)

    def test_eightSatellites(self) -> None:
        topology = topologyOf("agg", ["system", *SATS], list(reversed(SATS)))
        self.assertEqual(len(topology.satellites), 8)
        self.assertEqual(topology.board("satellite_8").satelliteIndex, 0)

    def test_mismatches(self) -> None:
        for systems, satellites, expected in (
            ([], ["s1"], "agg: no System connected to the requirement system"),
            (["system", "s1", "s1"], ["s1"], "agg: connected twice to the requirement system: s1"),
            (["system", "s1"], ["s1", "s1"], "connected twice to the requirement satellite: s1"),
            (["system", "s1"], ["s2"], "no satellite link for the system of s1; no system for"),
            (["system", "s1", "s2"], ["s1"], "agg: no satellite link for the system of s2 ("),
            (["s1", "system"], ["s1"], "the first system (s1) must be the main board's"),
        ):
            error = self.assertRaises(TopologyError, topologyOf, "agg", systems, satellites)
            self.assertIn(expected, str(error))
            self.assertNotIn("\n", str(error))

    def test_simConnectedModules(self) -> None:
        bus = SimBus(Clock())
        module = bus.module("agg", {"system": [("system", "main"), ("s1", "system")]})
        self.assertEqual(module.connectedModules("system"), ["system", "s1"])
        self.assertEqual(module.connectedModules("satellite"), [])


class FirmwareStatusTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.published: list[tuple[str, int]] = []

    def status(
        self, requestId: int = 5, boards: list[str] | None = None, silence: float = 100
    ) -> FirmwareStatus:
        return FirmwareStatus(
            self.clock,
            boards or ["main", "s1", "s2"],
            "main",
            requestId,
            lambda s, r: self.published.append((s, r)),
            silence,
        )

    def feed(self, status: FirmwareStatus, board: str, value: str, requestId: int = 5) -> None:
        status.received(board, {"firmware_update_status": value, "request_id": requestId})

    def names(self) -> list[str]:
        return [s for s, _ in self.published]

    def test_mainOnly(self) -> None:
        s = self.status()
        for n, value in enumerate(("DownloadScheduled", "SignatureVerified", "InstallScheduled")):
            self.feed(s, "s1", value)
            self.assertEqual(len(self.published), n)
            self.feed(s, "main", value)
        self.assertEqual(
            self.names(), ["DownloadScheduled", "SignatureVerified", "InstallScheduled"]
        )

    def test_allBoards(self) -> None:
        s = self.status()
        for value in ("Downloaded", "Installing", "Installed"):
            self.feed(s, "main", value)
            self.feed(s, "s1", value)
            self.assertNotIn(value, self.names())
            self.feed(s, "s2", value)
            self.feed(s, "s2", value)
        self.assertEqual(self.published, [("Downloaded", 5), ("Installing", 5), ("Installed", 5)])
        self.assertTrue(s.finished)

    def test_firstOnly(self) -> None:
        s = self.status()
        self.feed(s, "s1", "Downloading")
        self.feed(s, "main", "Downloading")
        self.assertEqual(self.names(), ["Downloading"])
        self.feed(s, "s2", "DownloadFailed")
        self.feed(s, "main", "Downloaded")
        self.feed(s, "main", "InstallationFailed")
        self.assertEqual(self.names(), ["Downloading", "DownloadFailed"])

    def test_eachFinal(self) -> None:
        for final in ("InstallationFailed", "InstallVerificationFailed", "InvalidSignature"):
            self.published.clear()
            s = self.status()
            self.feed(s, "s1", final)
            self.feed(s, "main", "SignatureVerified")
            self.assertEqual(self.names(), [final])

    def test_invalidSignaturePublishesDownloadedFirst(self) -> None:
        s = self.status()
        self.feed(s, "main", "Downloaded")
        self.feed(s, "s1", "InvalidSignature")
        self.assertEqual(self.names(), ["Downloaded", "InvalidSignature"])

    def test_otherRequestIgnored(self) -> None:
        # fixed: upstream counted every request's statuses
        s = self.status(requestId=5)
        for board in ("main", "s1"):
            self.feed(s, board, "Downloaded")
        self.feed(s, "s2", "Downloaded", requestId=4)
        self.feed(s, "s2", "DownloadFailed", requestId=-1)
        self.assertEqual(self.published, [])
        self.feed(s, "s2", "Downloaded")
        self.assertEqual(self.published, [("Downloaded", 5)])

    def test_unsignedIsMinusOne(self) -> None:
        s = self.status(requestId=-1, boards=["main"])
        self.feed(s, "main", "Downloading", requestId=-1)
        self.assertEqual(self.published, [("Downloading", -1)])

    def test_newUpdateFreshState(self) -> None:
        # fixed: the final flag was uninitialised and never reset upstream
        first = self.status()
        self.feed(first, "s1", "DownloadFailed")
        first.abandon()
        second = self.status()
        self.feed(second, "s1", "Downloading")
        self.feed(second, "s1", "DownloadFailed")
        self.assertEqual(self.names(), ["DownloadFailed", "Downloading", "DownloadFailed"])

    def test_silentBoardFails(self) -> None:
        s = self.status(silence=100)
        for board in ("main", "s1", "s2"):
            self.feed(s, board, "Downloading")
        self.clock.advance(60)
        for board in ("main", "s1"):
            self.feed(s, board, "Downloaded")
        self.clock.advance(60)  # s2 silent for 120 s
        self.assertEqual(self.names(), ["Downloading", "DownloadFailed"])
        self.assertTrue(s.finished)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silentAfterDownloadIsInstallationFailed(self) -> None:
        s = self.status(boards=["main"], silence=10)
        self.feed(s, "main", "Downloaded")
        self.clock.advance(10)
        self.assertEqual(self.names(), ["Downloaded", "InstallationFailed"])

    def test_scheduledIsNotSilent(self) -> None:
        s = self.status(boards=["main"], silence=10)
        self.feed(s, "main", "InstallScheduled")
        self.clock.advance(1000)
        self.assertEqual(self.names(), ["InstallScheduled"])

    def test_badValues(self) -> None:
        s = self.status(boards=["main"])
        for value in (None, "x", {"firmware_update_status": "Nope", "request_id": 5}, {}):
            s.received("main", value)
        s.received("main", {"firmware_update_status": "Downloading", "request_id": True})
        s.received("stranger", {"firmware_update_status": "Downloading", "request_id": 5})
        self.assertEqual(self.published, [])

    def test_worstAnswer(self) -> None:
        self.assertEqual(worstAnswer(["Accepted", "Accepted"]), "Accepted")
        self.assertEqual(worstAnswer(["Accepted", "AcceptedCanceled"]), "AcceptedCanceled")
        self.assertEqual(worstAnswer(["AcceptedCanceled", "Rejected"]), "Rejected")
        self.assertEqual(
            worstAnswer(["Rejected", "RevokedCertificate", "InvalidCertificate"]),
            "RevokedCertificate",
        )


class FirmwareStatusHooksTests(SynchronousTestCase):
    """What the L{InstallHold} needs from L{FirmwareStatus}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.published: list[str] = []
        self.boardStatuses: list[tuple[str, str]] = []
        self.s = FirmwareStatus(
            self.clock,
            ["main", "s1"],
            "main",
            5,
            lambda status, _: self.published.append(status),
            10,
            onBoard=lambda board, status: self.boardStatuses.append((board, status)),
        )

    def feed(self, board: str, value: str, requestId: int = 5) -> None:
        self.s.received(board, {"firmware_update_status": value, "request_id": requestId})

    def test_everyBoardStatusEvenAfterTheFinalOne(self) -> None:
        self.feed("s1", "DownloadFailed")
        self.feed("main", "Downloaded")
        self.feed("main", "Downloaded", requestId=4)  # another update's: not handed on
        self.assertEqual(self.published, ["DownloadFailed"])
        self.assertEqual(self.boardStatuses, [("s1", "DownloadFailed"), ("main", "Downloaded")])

    def test_pausedIsNotSilent(self) -> None:
        self.feed("main", "Downloading")
        self.feed("s1", "Downloading")
        self.s.pause("main")
        self.clock.advance(9)
        self.feed("s1", "Downloading")
        self.clock.advance(9)
        self.assertEqual(self.published, ["Downloading"])
        self.s.resume("main")
        self.feed("s1", "Downloaded")
        self.clock.advance(10)
        # silent for 10 s since it went on
        self.assertEqual(self.published, ["Downloading", "DownloadFailed"])
        self.assertIn(("main", "DownloadFailed"), self.boardStatuses)

    def test_takeAs(self) -> None:
        self.s.takeAs("s1", "DownloadFailed", "still had no image")
        self.assertEqual(self.published, ["DownloadFailed"])
        self.assertEqual(self.boardStatuses, [("s1", "DownloadFailed")])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class InstallHoldTests(SynchronousTestCase):
    """No board installs before every board has the image or failed, for a bounded time."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.released: list[tuple[float, list[str], list[str]]] = []

    def hold(self, timeout: float = 100, until: float = 1000, attempts: int = 1) -> InstallHold:
        return InstallHold(
            self.clock,
            ["main", "s1", "s2"],
            5,
            timeout,
            until,
            lambda ready, missing: self.released.append((self.clock.seconds(), ready, missing)),
            attempts=attempts,
        )

    def test_downloadRetriesAreWaitedFor(self) -> None:
        """A failed attempt before the board's last is not its failure: it tries again."""
        h = self.hold(attempts=3)
        h.hasImage("main")
        h.hasImage("s1")
        h.boardStatus("s2", "DownloadFailed")
        h.boardStatus("s2", "DownloadFailed")
        self.assertEqual(self.released, [])
        h.boardStatus("s2", "DownloadFailed")
        self.assertEqual(self.released, [(0, ["main", "s1"], [])])
        h = self.hold(attempts=3)
        h.hasImage("main")
        h.hasImage("s1")
        h.boardStatus("s2", "DownloadFailed")
        h.hasImage("s2")  # its second attempt got it
        self.assertEqual(self.released[-1], (0, ["main", "s1", "s2"], []))
        h = self.hold(attempts=3)
        h.hasImage("main")
        h.hasImage("s1")
        h.boardStatus("s2", "InvalidSignature")  # no retry helps: at once
        self.assertEqual(self.released[-1], (0, ["main", "s1"], []))

    def test_allHaveTheImage(self) -> None:
        h = self.hold()
        h.hasImage("s1")
        self.clock.advance(3)
        h.boardStatus("main", "SignatureVerified")  # a board that was not held
        self.assertEqual(self.released, [])
        self.assertEqual(h.waitingFor(), ["s2"])
        h.hasImage("s2")
        self.assertEqual(self.released, [(3, ["main", "s1", "s2"], [])])
        h.hasImage("s2")
        h.failed("s1")
        self.assertEqual(len(self.released), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowBoardHolds(self) -> None:
        h = self.hold()
        h.hasImage("main")
        h.hasImage("s1")
        self.clock.advance(99)
        self.assertEqual(self.released, [])
        h.hasImage("s2")
        self.assertEqual(self.released, [(99, ["main", "s1", "s2"], [])])

    def test_failureDoesNotHold(self) -> None:
        h = self.hold()
        h.hasImage("main")
        h.hasImage("s1")
        self.clock.advance(7)
        h.boardStatus("s2", "Downloading")
        h.boardStatus("s2", "DownloadFailed")
        self.assertEqual(self.released, [(7, ["main", "s1"], [])])

    def test_retryAfterFailure(self) -> None:
        h = self.hold()
        h.boardStatus("s2", "DownloadFailed")  # core's System tries again (retries)
        h.hasImage("main")
        h.boardStatus("s1", "InvalidSignature")  # has the image, installs nothing
        self.assertEqual(self.released, [(0, ["main"], [])])
        h = self.hold()
        h.failed("s2")
        h.hasImage("main")
        h.hasImage("s2")
        h.hasImage("s1")
        self.assertEqual(self.released[-1], (0, ["main", "s1", "s2"], []))

    def test_deadlineFromTheFirstWithTheImage(self) -> None:
        h = self.hold(timeout=100)
        self.clock.advance(50)  # the image is still being fetched
        h.hasImage("main")
        self.clock.advance(60)
        h.hasImage("s1")
        self.clock.advance(39.9)
        self.assertEqual(self.released, [])
        self.clock.advance(0.1)
        self.assertEqual(self.released, [(150, ["main", "s1"], ["s2"])])
        self.assertEqual(h.missing, ["s2"])
        h.hasImage("s2")  # too late
        self.assertEqual(len(self.released), 1)

    def test_deadlineNeverAfterTheGrants(self) -> None:
        h = self.hold(timeout=100, until=120)
        self.clock.advance(80)
        h.hasImage("s1")
        self.clock.advance(40)
        self.assertEqual(self.released, [(120, ["s1"], ["main", "s2"])])

    def test_nobodyHasTheImage(self) -> None:
        self.hold(timeout=100, until=500)
        self.clock.advance(500)
        self.assertEqual(self.released, [(500, [], ["main", "s1", "s2"])])

    def test_abandon(self) -> None:
        h = self.hold()
        h.hasImage("main")
        h.abandon()
        h.hasImage("s1")
        h.hasImage("s2")
        self.clock.advance(2000)
        self.assertEqual(self.released, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LogCollectionTests(SynchronousTestCase):
    def test_outcomes(self) -> None:
        clock = Clock()
        boards = ["main", *SATS]
        c = LogCollection(clock, boards, 3, 120)
        done: list[dict[str, str]] = []
        c.whenComplete().addCallback(done.append)
        c.received("main", {"log_status": "Uploading", "request_id": 3})
        c.received("main", {"log_status": "Uploaded", "request_id": 3})
        c.received("satellite_1", {"log_status": "Uploaded", "request_id": 2})  # old request
        c.received("satellite_2", {"log_status": "PermissionDenied", "request_id": 3})
        c.answered("satellite_3", {"upload_logs_status": "Rejected"})
        c.answered("satellite_4", {"upload_logs_status": "Accepted"})
        c.settle("satellite_5", NOT_CONNECTED, "no link")
        c.received("satellite_6", "garbage")
        self.assertEqual(done, [])
        clock.advance(120)
        [outcomes] = done
        self.assertEqual(outcomes["main"], UPLOADED)
        self.assertEqual(outcomes["satellite_1"], TIMED_OUT)
        self.assertEqual(outcomes["satellite_2"], FAILED)
        self.assertEqual(outcomes["satellite_3"], REFUSED)
        self.assertEqual(outcomes["satellite_5"], NOT_CONNECTED)
        self.assertEqual(len(outcomes), 9)

    def test_completeBeforeDeadline(self) -> None:
        clock = Clock()
        c = LogCollection(clock, ["main", "s1"], 1, 120)
        for board in ("main", "s1"):
            c.received(board, {"log_status": "Uploaded", "request_id": 1})
        self.assertEqual(self.successResultOf(c.whenComplete()), {"main": UPLOADED, "s1": UPLOADED})
        self.assertEqual(clock.getDelayedCalls(), [])


class ArchiveTests(TestCase):
    def test_names(self) -> None:
        self.assertEqual(
            archiveName("DiagnosticsLog", 0), "DiagnosticsLog_1970-01-01T00-00-00Z.tar.gz"
        )
        self.assertEqual(archiveName("../x y", 0), "..xy_1970-01-01T00-00-00Z.tar.gz")
        self.assertEqual(archiveName(None, 0), "DiagnosticsLog_1970-01-01T00-00-00Z.tar.gz")
        self.assertEqual(safeName("../../etc/passwd"), "passwd")
        self.assertIsNone(safeName(".."))
        self.assertEqual(safeName("a\x00b\nc"), "abc")

    def _pack(self, run: Any) -> Deferred[tuple[str, dict[str, Any]]]:
        directory = self.mktemp()
        os.makedirs(directory)
        log = os.path.join(directory, "in.log")
        with open(log, "wb") as f:
            f.write(b"hello\n")
        boards = [
            BoardLogs("main", "system", UPLOADED, "uploaded", [log]),
            BoardLogs("satellite_1", "satellite_1", TIMED_OUT, "no final status"),
            BoardLogs("satellite_2", "satellite_2", NOT_CONNECTED, "the link went down"),
        ]
        return Packer(run).pack(
            directory, "T_1970-01-01T00-00-00Z.tar.gz", boards, {"request_id": 4}
        )

    def check(self, result: tuple[str, dict[str, Any]]) -> None:
        path, manifest = result
        with tarfile.open(path) as tar:
            names = tar.getnames()
            stored = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        self.assertEqual(sorted(names), ["main/in.log", "manifest.json"])
        self.assertEqual(stored, manifest)
        self.assertEqual(
            [(m["module_id"], m["reason"]) for m in manifest["missing"]],
            [("satellite_1", "timed out"), ("satellite_2", "not connected")],
        )
        [main] = [b for b in manifest["boards"] if b["board"] == "main"]
        self.assertEqual(main["files"][0]["size"], 6)
        self.assertEqual(
            main["files"][0]["sha256"],
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
        )

    def test_partialArchiveSynchronous(self) -> None:
        self.check(self.successResultOf(self._pack(maybeDeferred)))

    async def test_partialArchiveInThread(self) -> None:
        self.check(await self._pack(None))


class SettingsTests(SynchronousTestCase):
    def test_fromConfig(self) -> None:
        from rcp.aggregator.settings import AggregatorSettings

        settings = AggregatorSettings.fromConfig(
            "agg", {"default_retries": 0, "incoming_upload_timeout": 60, "other": 1}
        )
        self.assertEqual(settings.attempts, 1)
        self.assertEqual(settings.incoming_upload_timeout, 60.0)
        self.assertEqual(settings.upload_url_template, "ftp://{my-ip}:2121/")
        self.assertEqual(settings.install_hold_timeout, 900.0)
        held = AggregatorSettings.fromConfig("agg", {"install_hold_timeout": 60})
        self.assertEqual(held.install_hold_timeout, 60.0)
        # the hold ends a margin before the download grants: the last bytes fit
        self.assertEqual(held.installHoldEnd, 3600 - 360)
        short = AggregatorSettings.fromConfig(
            "agg", {"install_hold_timeout": 10, "firmware_download_timeout": 100}
        )
        self.assertEqual(short.installHoldEnd, 50)
        for bad in (
            {"default_retries": "x"},
            {"command_timeout": True},
            {"silence_timeout": -1},
            {"install_hold_timeout": "soon"},
            {"upload_url_template": ""},
            {"install_hold_timeout": 3600},
            {"install_hold_timeout": 100, "firmware_download_timeout": 50},
        ):
            error = self.assertRaises(ValueError, AggregatorSettings.fromConfig, "agg", bad)
            self.assertTrue(str(error).startswith("agg: config "), str(error))
