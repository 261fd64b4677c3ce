"""
L{rcp.aggregator.module.SystemAggregator} driven through the simulated
EVerest side: a main board's L{SystemSim} and eight satellites' on one
L{SimBus}, with fake receivers and transfers.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.aggregator.archive import Packer
from rcp.aggregator.module import SystemAggregator
from rcp.aggregator.ports import IDownloadGrant, IImageWriter, IReceivers, ITransfers, IUploadGrant
from rcp.aggregator.topology import TopologyError
from rcp.everest.interface import rfc3339
from rcp.everest.sim.bus import SimBus
from rcp.everest.sim.system import SystemSim

SATS = [f"sat{n}" for n in range(1, 9)]
IMAGE = b"firmware image " * 100


@implementer(IUploadGrant)
class FakeUploadGrant:
    def __init__(self, board: str, peer: str, requestId: int) -> None:
        self.board, self.peer, self.requestId = board, peer, requestId
        self.token = secrets.token_hex(8)
        self.files: list[str] = []
        self.revoked = False
        self._done: Deferred[list[str]] = Deferred()

    def urlFor(self, template: str, myIp: str) -> str:
        return template.replace("{my-ip}", myIp).replace("<my-ip>", myIp) + self.token + "/"

    def whenDone(self) -> Deferred[list[str]]:
        return self._done

    def revoke(self) -> None:
        if not self.revoked:
            self.revoked = True
            self._done.callback(list(self.files))


@implementer(IImageWriter)
class FakeImage:
    def __init__(self) -> None:
        self.data = b""
        self.finished = False
        self.failed: str | None = None
        self.waiters: list[Deferred[bytes]] = []

    def whenFinished(self) -> Deferred[bytes]:
        """Like a pull-through cache: a board's download waits for the image."""
        if self.finished:
            return succeed(self.data)
        d: Deferred[bytes] = Deferred()
        self.waiters.append(d)
        return d

    def append(self, data: bytes) -> None:
        self.data += data

    def throttles(self, source: object) -> None:
        pass

    def finish(self) -> None:
        self.finished = True
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(self.data)

    def fail(self, reason: str) -> None:
        self.failed = reason
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.errback(OSError(reason))


@implementer(IDownloadGrant)
class FakeDownloadGrant:
    """Like the receivers' grant: a held download stops before the end until released."""

    def __init__(self, board: str, image: FakeImage) -> None:
        self.board, self.image = board, image
        self.token = secrets.token_hex(8)
        self.revoked = False
        self.released = False
        self.onHeld: Any = None
        self.heldAt: float | None = None
        self._waiting: list[Deferred[bytes]] = []
        self.running: list[Deferred[bytes]] = []

    def url(self, myIp: str) -> str:
        return f"http://{myIp}:8080/{self.token}"

    def revoke(self) -> None:
        """Held or still running, the board's download is cut off."""
        self.revoked = True
        waiting, self._waiting = self._waiting + self.running, []
        self.running = []
        for d in waiting:
            if not d.called:
                d.errback(OSError("grant revoked"))

    def holdEnd(self, onHeld: Any) -> None:
        self.onHeld = onHeld

    def release(self) -> None:
        self.released = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.image.data)

    def held(self, now: float) -> Deferred[bytes]:
        """A download that has every byte but the last: it waits for the release."""
        if self.onHeld is None or self.released:
            return succeed(self.image.data)
        d: Deferred[bytes] = Deferred()
        self._waiting.append(d)
        if self.heldAt is None:
            self.heldAt = now
            self.onHeld()
        return d


@implementer(IReceivers)
class FakeReceivers:
    """
    @ivar seconds: how long each board's download of the image takes, once
        the image is complete (0 by default).
    @ivar failing: boards whose download fails after its C{seconds}.
    """

    def __init__(self, directory: str, clock: Clock) -> None:
        self.directory = directory
        self.clock = clock
        self.uploads: dict[str, FakeUploadGrant] = {}
        self.downloads: dict[str, FakeDownloadGrant] = {}
        self.seconds: dict[str, float] = {}
        self.failing: set[str] = set()

    def grantOf(self, board: str) -> FakeDownloadGrant:
        [grant] = [g for g in self.downloads.values() if g.board == board]
        return grant

    def grantUpload(
        self, board: str, peerHost: str, requestId: int, deadline: float, maxBytes: int
    ) -> FakeUploadGrant:
        grant = FakeUploadGrant(board, peerHost, requestId)
        self.uploads[grant.token] = grant
        return grant

    def newImage(self, name: str) -> FakeImage:
        return FakeImage()

    def grantDownload(
        self, board: str, peerHost: str, image: Any, requestId: int, deadline: float
    ) -> FakeDownloadGrant:
        grant = FakeDownloadGrant(board, image)
        self.downloads[grant.token] = grant
        return grant

    # what the boards' Systems do with the URLs
    def upload(self, location: str, fileName: str, data: bytes) -> Deferred[None]:
        token = location.rstrip("/").rsplit("/", 1)[-1]
        grant = self.uploads.get(token)
        if grant is None or grant.revoked:
            return fail(OSError("refused"))
        path = os.path.join(self.directory, f"{token}-{fileName}")
        with open(path, "wb") as f:
            f.write(data)
        grant.files.append(path)
        return succeed(None)

    def fetch(self, url: str) -> Deferred[bytes]:
        grant = self.downloads.get(url.rsplit("/", 1)[-1])
        if grant is None or grant.revoked:
            return fail(OSError("no grant"))

        def transferred(_: object) -> Deferred[bytes]:
            if grant.revoked:
                return fail(OSError("grant revoked"))
            if grant.board in self.failing:
                return fail(OSError("connection reset"))
            return grant.held(self.clock.seconds())

        # the board's download: cut off when the grant is revoked (grant.running)
        result: Deferred[bytes] = Deferred()
        grant.running.append(result)

        def ended(outcome: bytes | Failure) -> None:
            if result in grant.running:
                grant.running.remove(result)
            if result.called:
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        seconds = self.seconds.get(grant.board, 0.0)
        transfer = grant.image.whenFinished()
        transfer.addCallback(lambda _: deferLater(self.clock, seconds, lambda: None))
        transfer.addCallback(transferred).addBoth(ended)
        return result


@implementer(ITransfers)
class FakeTransfers:
    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.uploaded: dict[str, bytes] = {}
        self.failUploads = False

    def fetch(self, url: str, into: Any, retries: int, retryInterval: float) -> Deferred[int]:
        self.fetched.append(url)
        into.append(IMAGE)
        into.finish()
        return succeed(len(IMAGE))

    def upload(self, path: str, url: str, retries: int, retryInterval: float) -> Deferred[None]:
        if self.failUploads:
            return fail(OSError("backend down"))
        with open(path, "rb") as f:
            self.uploaded[url] = f.read()
        return succeed(None)


class AggregatorModuleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.bus = SimBus(self.clock, "main")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.receivers = FakeReceivers(self.directory, self.clock)
        self.transfers = FakeTransfers()
        self.resets: list[str] = []
        #: (seconds since the start, board, status) of every board's firmware status
        self.boardStatuses: list[tuple[float, str, str]] = []
        self.start = self.clock.seconds()
        self.connected = {name: True for name in SATS}
        self.systems: dict[str, SystemSim] = {}
        for name in ["system", *SATS]:
            module = self.bus.module(name)
            self.systems[name] = SystemSim(
                module,
                self.clock,
                fetch=self.receivers.fetch,
                upload=self.receivers.upload,
                verify=lambda data, signature, certificate: True,
                onReset=self._resetOf(name),
            )
            self._recordStatuses(name, self.systems[name])
            if name != "system":
                self._satellite(module, name)
        self.aggModule = self.bus.module(
            "agg",
            {
                "system": [("system", "main")] + [(n, "main") for n in SATS],
                "satellite": [(n, "satellite") for n in reversed(SATS)],
            },
            config={"incoming_uploads_dir": self.directory, "default_retries": 2},
        )
        self.aggregator = SystemAggregator(
            self.aggModule,
            self.clock,
            self.receivers,
            self.transfers,
            Packer(maybeDeferred),
        )
        self.caller = self.bus.module("ocpp", {"system": [("agg", "system")]})
        self.seen: dict[str, list[Any]] = {"firmware_update_status": [], "log_status": []}
        for var, values in self.seen.items():
            self.caller.subscribeVar("system", var, values.append)
        for system in self.systems.values():
            system.start()
        self.aggregator.start()

    def _resetOf(self, name: str) -> Any:
        return lambda kind: self.resets.append(name)

    def _recordStatuses(self, name: str, system: SystemSim) -> None:
        publish = system._firmwareStatus

        def recorded(status: str, requestId: int) -> None:
            self.boardStatuses.append((self.clock.seconds() - self.start, name, status))
            publish(status, requestId)

        system._firmwareStatus = recorded  # type: ignore[method-assign]

    def _satellite(self, module: Any, name: str) -> None:
        index = SATS.index(name) + 2
        module.provideCommand(
            "satellite",
            "get_local_endpoint_address",
            lambda a: f"10.0.{index}.1" if self.connected[name] else "",
        )
        module.provideCommand(
            "satellite",
            "get_remote_endpoint_address",
            lambda a: f"10.0.{index}.2" if self.connected[name] else "",
        )
        module.provideCommand("satellite", "is_connected", lambda a: self.connected[name])

    def settle(self, d: Deferred[Any], seconds: float = 0.5, steps: int = 400) -> Any:
        for _ in range(steps):
            if d.called:
                break
            self.clock.advance(seconds)
        return self.successResultOf(d)

    def turn(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def call(self, command: str, args: dict[str, Any] | None) -> Any:
        return self.settle(self.caller.call("system", command, args))  # type: ignore[arg-type]

    def test_topologyChecked(self) -> None:
        module = self.bus.module(
            "agg2", {"system": [("system", "main"), ("sat1", "main")], "satellite": []}
        )
        aggregator = SystemAggregator(module, self.clock, self.receivers, self.transfers)
        error = self.assertRaises(TopologyError, aggregator.start)
        self.assertIn("agg2: no satellite link for the system of sat1", str(error))

    def test_uploadLogsEightSatellites(self) -> None:
        self.connected["sat8"] = False
        answer = self.call(
            "upload_logs",
            {
                "upload_logs_request": {
                    "location": "ftp://b/",
                    "request_id": 9,
                    "type": "DiagnosticsLog",
                }
            },
        )
        self.assertEqual(answer["upload_logs_status"], "Accepted")
        self.assertTrue(answer["file_name"].startswith("DiagnosticsLog_2023-11-14T"))
        self.turn(10)
        self.assertEqual(
            [s["log_status"] for s in self.seen["log_status"]], ["Uploading", "Uploaded"]
        )
        self.assertEqual({s["request_id"] for s in self.seen["log_status"]}, {9})
        # each satellite was given its own grant at its link's address
        peers = {g.board: g.peer for g in self.receivers.uploads.values()}
        self.assertEqual(peers["sat3"], "10.0.4.2")
        self.assertEqual(peers["system"], "127.0.0.1")
        self.assertEqual(self.systems["sat3"].lastUpload[0].split("/")[2], "10.0.4.1:2121")  # type: ignore[index]
        data = self.transfers.uploaded["ftp://b/"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            folders = {n.split("/")[0] for n in tar.getnames() if "/" in n}
        self.assertEqual(folders, {"main", *SATS[:7]})
        self.assertEqual(
            manifest["missing"],
            [
                {
                    "board": "sat8",
                    "module_id": "sat8",
                    "reason": "not connected",
                    "detail": "no link",
                }
            ],
        )
        self.assertEqual(os.listdir(self.directory), [])  # everything cleaned up

    def test_newRequestCancelsAndStarts(self) -> None:
        # fixed: upstream never started the second request
        self.systems["sat1"].stepDelay = 50  # slow, so the first is still running
        first = self.call(
            "upload_logs", {"upload_logs_request": {"location": "ftp://b/1/", "request_id": 1}}
        )
        second = self.call(
            "upload_logs", {"upload_logs_request": {"location": "ftp://b/2/", "request_id": 2}}
        )
        self.assertEqual(first["upload_logs_status"], "Accepted")
        self.assertEqual(second["upload_logs_status"], "AcceptedCanceled")
        self.turn(200)
        statuses = [(s["log_status"], s["request_id"]) for s in self.seen["log_status"]]
        self.assertEqual(
            statuses,
            [("Uploading", 1), ("AcceptedCanceled", 1), ("Uploading", 2), ("Uploaded", 2)],
        )
        self.assertEqual(list(self.transfers.uploaded), ["ftp://b/2/"])

    def test_satelliteDisconnectsMidUpload(self) -> None:
        self.systems["sat2"].stepDelay = 60
        self.call("upload_logs", {"upload_logs_request": {"location": "ftp://b/", "request_id": 3}})
        self.turn(3)
        self.connected["sat2"] = False
        self.turn(20)
        self.assertEqual(self.seen["log_status"][-1]["log_status"], "Uploaded")
        manifest = self.aggregator.lastManifest
        assert manifest is not None
        self.assertEqual(
            [(m["module_id"], m["reason"]) for m in manifest["missing"]],
            [("sat2", "not connected")],
        )

    def test_archiveUploadFails(self) -> None:
        self.transfers.failUploads = True
        self.call("upload_logs", {"upload_logs_request": {"location": "ftp://b/"}})
        self.turn(10)
        self.assertEqual(
            [(s["log_status"], s["request_id"]) for s in self.seen["log_status"]],
            [("Uploading", -1), ("UploadFailure", -1)],
        )

    def test_updateFirmwareOnceFromTheBackend(self) -> None:
        request = {"location": "https://backend/fw.bin", "request_id": -1}
        self.assertEqual(
            self.call("update_firmware", {"firmware_update_request": request}), "Accepted"
        )
        self.turn(20)
        self.assertEqual(self.transfers.fetched, ["https://backend/fw.bin"])
        for system in self.systems.values():
            self.assertEqual(system.installedFirmware, IMAGE)
        self.assertEqual(
            [s["firmware_update_status"] for s in self.seen["firmware_update_status"]],
            ["Downloading", "Downloaded", "Installing", "Installed"],
        )

    def test_oneRefusalAbandonsTheUpdate(self) -> None:
        # sat4 is busy with an update of its own: it answers Rejected
        self.systems["sat4"]._standardRun = object()  # type: ignore[assignment]
        request = {"location": "https://backend/fw.bin", "request_id": -1}
        self.assertEqual(
            self.call("update_firmware", {"firmware_update_request": request}), "Rejected"
        )
        self.turn(20)
        self.assertEqual(self.transfers.fetched, [])
        self.assertTrue(all(g.revoked for g in self.receivers.downloads.values()))
        self.assertEqual(self.systems["sat1"].installedFirmware, None)
        self.assertEqual(self.seen["firmware_update_status"], [])

    def test_resetSatellitesFirst(self) -> None:
        self.assertIsNone(self.call("reset", {"type": "Soft", "scheduled": False}))
        self.turn(2)
        self.assertEqual(sorted(self.resets[:-1]), sorted(SATS))
        self.assertEqual(self.resets[-1], "system")

    def test_booleansAndBootReasons(self) -> None:
        self.assertIs(self.call("is_reset_allowed", {"type": "Soft"}), True)
        self.assertIs(self.call("set_system_time", {"timestamp": "2026-01-01T00:00:00Z"}), True)
        self.assertEqual(self.systems["sat5"].systemTime, "2026-01-01T00:00:00Z")
        self.systems["sat3"]._bootReason = "Watchdog"
        self.assertEqual(self.call("get_boot_reason", None), "PowerUp")
        self.assertEqual(self.aggregator.bootReasons["sat3"], "Watchdog")
        self.bus._commands.pop(("sat6", "main", "is_reset_allowed"))
        self.assertIs(self.call("is_reset_allowed", {"type": "Soft"}), False)


class InstallTogetherTests(AggregatorModuleTests):
    """
    No board installs before every board has the image (or failed): any
    board's restart restarts the station and would cut the others'
    downloads.  The boards are core's System (signed updates: verified,
    then installed and restarted; a future install_timestamp is waited for).
    """

    def signed(self, **extra: Any) -> dict[str, Any]:
        request = {
            "location": "https://backend/fw.bin",
            "request_id": 7,
            "signing_certificate": "-----BEGIN CERTIFICATE-----",
            "signature": "c2lnbmF0dXJl",
            "retries": 1,
        }
        request.update(extra)
        answer = self.call("update_firmware", {"firmware_update_request": request})
        self.assertEqual(answer, "Accepted")
        return request

    def times(self, status: str) -> dict[str, float]:
        """When each board first reported C{status}."""
        seen: dict[str, float] = {}
        for when, board, value in self.boardStatuses:
            if value == status:
                seen.setdefault(board, when)
        return seen

    def station(self) -> list[str]:
        return [s["firmware_update_status"] for s in self.seen["firmware_update_status"]]

    def heldAt(self) -> dict[str, float]:
        grants = self.receivers.downloads.values()
        return {g.board: g.heldAt - self.start for g in grants if g.heldAt is not None}

    def test_allDownloadThenInstallTogether(self) -> None:
        for n, name in enumerate(SATS):
            self.receivers.seconds[name] = 2.0 * (n + 1)  # sat8 the slowest: 16 s
        self.signed()
        self.turn(60)
        boards = ["system", *SATS]
        held = self.heldAt()
        self.assertEqual(set(held), set(boards))
        lastHeld = max(held.values())
        self.assertGreaterEqual(lastHeld, 16)
        downloaded, installing = self.times("Downloaded"), self.times("Installing")
        self.assertEqual(set(installing), set(boards))
        # nobody finished its download, so nobody installed, before the last had the image
        self.assertGreaterEqual(min(downloaded.values()), lastHeld)
        self.assertGreaterEqual(min(installing.values()), lastHeld)
        # and then they went on together (one step of core's scripts apart at most)
        self.assertLessEqual(max(installing.values()) - min(installing.values()), 1.0)
        for system in self.systems.values():
            self.assertEqual(system.installedFirmware, IMAGE)
        self.assertEqual(sorted(self.resets), sorted(boards))
        # upstream's rules: SignatureVerified as the main board reports it,
        # Downloaded once every board did
        self.assertEqual(
            self.station(),
            ["Downloading", "SignatureVerified", "Downloaded", "Installing", "Installed"],
        )

    def test_oneSlowBoardHoldsTheOthers(self) -> None:
        self.receivers.seconds["sat5"] = 120
        self.signed()
        self.turn(100)
        # every other board has every byte but the last and waits; nothing installed
        self.assertEqual(set(self.heldAt()), {"system", *SATS} - {"sat5"})
        self.assertEqual(self.times("Downloaded"), {})
        self.assertEqual(self.resets, [])
        self.assertEqual(self.station(), ["Downloading"])
        self.turn(30)
        self.assertGreaterEqual(min(self.times("Installing").values()), 120)
        self.assertEqual(len(self.times("Installed")), 9)
        self.assertEqual(self.station()[-1], "Installed")

    def test_failedDownloadDoesNotHoldTheOthers(self) -> None:
        self.receivers.seconds["sat5"] = 20
        self.receivers.failing.add("sat5")
        self.signed()
        self.turn(60)
        failedAt = self.times("DownloadFailed")["sat5"]
        self.assertGreaterEqual(failedAt, 20)
        downloaded = self.times("Downloaded")
        self.assertEqual(set(downloaded), {"system", *SATS} - {"sat5"})
        # released at sat5's failure, not at the hold's deadline
        self.assertLessEqual(min(downloaded.values()) - failedAt, 1.0)
        self.assertGreaterEqual(min(downloaded.values()), failedAt)
        self.assertEqual(self.systems["sat5"].installedFirmware, None)
        self.assertEqual(self.systems["sat4"].installedFirmware, IMAGE)
        # it is not to finish a download later and install on its own
        self.assertTrue(self.receivers.grantOf("sat5").revoked)
        # upstream's rule: DownloadFailed is final for the station
        self.assertEqual(self.station(), ["Downloading", "DownloadFailed"])

    def test_slowSilentBoardIsWaitedForToTheHoldsDeadline(self) -> None:
        """Once a board has the image, the hold's deadline bounds the others, not their silence."""
        self.aggregator._settings = replace(
            self.aggregator.settings, silence_timeout=100, install_hold_timeout=500
        )
        self.receivers.seconds["sat5"] = 300  # reports nothing while it downloads
        self.signed()
        self.turn(400)
        self.assertNotIn("sat5", self.times("DownloadFailed"))
        self.assertEqual(len(self.times("Installed")), 9)
        self.assertGreaterEqual(min(self.times("Installing").values()), 300)

    def test_holdEndsBeforeTheGrants(self) -> None:
        self.signed()
        run = self.aggregator._firmware
        assert run is not None and run.hold is not None
        grants = self.start + self.aggregator.settings.firmware_download_timeout
        self.assertLessEqual(run.hold.until, grants - 60)

    def test_holdDeadline(self) -> None:
        self.aggregator._settings = replace(self.aggregator.settings, install_hold_timeout=60)
        self.receivers.seconds["sat5"] = 10_000
        self.signed()
        self.turn(50)
        self.assertEqual(self.times("Downloaded"), {})
        self.turn(30)
        held = self.heldAt()
        firstHeld = min(held.values())
        downloaded = self.times("Downloaded")
        self.assertEqual(set(downloaded), {"system", *SATS} - {"sat5"})
        self.assertGreaterEqual(min(downloaded.values()), firstHeld + 60)
        # the late board was cut off and reported failed; the others installed
        self.assertTrue(self.receivers.grantOf("sat5").revoked)
        self.assertEqual(self.station(), ["Downloading", "DownloadFailed"])
        self.assertEqual(len(self.times("Installed")), 8)
        self.turn(20)
        self.assertEqual(self.systems["sat5"].installedFirmware, None)
        self.assertIn("sat5", self.times("DownloadFailed"))

    def test_backendInstallTimestampLater(self) -> None:
        later = rfc3339(datetime.fromtimestamp(self.start + 300, UTC))
        self.receivers.seconds["sat2"] = 30
        self.signed(install_timestamp=later)
        self.turn(100)
        # every board has the image since sat2 got it, and waits for the backend's time
        self.assertEqual(len(self.times("InstallScheduled")), 9)
        self.assertGreaterEqual(min(self.times("Downloaded").values()), 30)
        self.assertEqual(self.times("Installing"), {})
        self.turn(220)
        installing = self.times("Installing")
        self.assertEqual(len(installing), 9)
        self.assertGreaterEqual(min(installing.values()), 300)
        self.assertLessEqual(max(installing.values()), 301)
        self.assertEqual(
            self.station(),
            [
                "Downloading",
                "SignatureVerified",
                "InstallScheduled",
                "Downloaded",
                "Installing",
                "Installed",
            ],
        )

    def test_allowKeptDuringTheHold(self) -> None:
        allowed: list[tuple[float, str]] = []
        for name in ["system", *SATS]:
            key = (name, "main", "allow_firmware_installation")
            handler = self.bus._commands[key]

            def spy(args: Any, name: str = name, handler: Any = handler) -> Any:
                allowed.append((self.clock.seconds() - self.start, name))
                return handler(args)

            self.bus._commands[key] = spy
        self.receivers.seconds["sat3"] = 40
        self.signed()
        self.turn(10)
        # the backend allows early (OCPP: every connector is unavailable)
        self.assertIsNone(self.call("allow_firmware_installation", None))
        self.assertEqual(allowed, [])
        self.turn(40)
        self.assertEqual(sorted(name for _, name in allowed), sorted(["system", *SATS]))
        self.assertGreaterEqual(min(when for when, _ in allowed), 40)
        # after the hold it is handed on at once
        allowed.clear()
        self.call("allow_firmware_installation", None)
        self.assertEqual(len(allowed), 9)
