"""
``rcp demo``: one main board and several satellites on this machine, linked
by rcp over loopback with mutual TLS, running a scripted scenario.

It prints a timeline of what crossed the links and exits 0 only if every
step was observed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TextIO, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from .everest.interface import makeError
from .everest.sim.backend import Backend
from .everest.sim.station import Record
from .receivers.service import ReceiverService
from .settings import ReceiverSettings
from .station import Station, StationOptions, StationSystem
from .transfer import CurlTransfers
from .transfer.native import NativeTransfers


def token(index: int) -> str:
    """The RFID card used at satellite C{index}."""
    return f"CAFE{index + 1:04X}"


STEP_TIMEOUT = 15.0

#: bytes of the firmware image the demo's backend offers
IMAGE_SIZE = 2 * 1024 * 1024


class StepFailed(Exception):
    pass


class Timeline:
    """Prints what happens, with the time since the start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()

    def line(self, where: str, text: str) -> None:
        elapsed = time.monotonic() - self.start
        self.out.write(f"{elapsed:8.3f} s  {where:<12} {text}\n")
        self.out.flush()


def _latency(value: Any, arrival: float) -> str:
    stamp = value.get("timestamp") if isinstance(value, dict) else None
    if not isinstance(stamp, str):
        return ""
    try:
        sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return ""
    return f" ({(arrival - sent) * 1000:.1f} ms after it was published)"


class Demo:
    def __init__(
        self,
        reactor: Any,
        satellites: int,
        out: TextIO,
        pki: Path,
        system: StationSystem | None = None,
        backend: Backend | None = None,
    ) -> None:
        """
        @param system: the main board's SystemAggregator with its receivers;
            with C{backend}, the diagnostics and firmware steps run too.
        """
        self.reactor = reactor
        self.backend = backend
        self.timeline = Timeline(out)
        self.station = Station(
            reactor,
            StationOptions(
                satellites=satellites,
                meterInterval=0.5,
                acceptedTokens=tuple(token(i) for i in range(satellites)),
            ),
            pki,
            self.timeline.line,
            system,
        )
        self.results: list[tuple[str, bool, str]] = []
        self._seenPower: set[tuple[int, int]] = set()

    # -- helpers --------------------------------------------------------------

    def _record(self, record: Record) -> None:
        main = self.station.main
        if record.source == "evse" and record.index is not None:
            where = f"satellite-{record.index + 1}"
            if record.name == "session_event":
                event = record.value.get("event")
                self.timeline.line(
                    "main",
                    f"<- {where} session_event {event}{_latency(record.value, record.time)}",
                )
            elif record.name == "powermeter":
                key = (main.boots, record.index)
                if key not in self._seenPower:
                    self._seenPower.add(key)
                    self.timeline.line(
                        "main", f"<- {where} powermeter values arriving (first: {_power(record)})"
                    )
        elif record.source == "error":
            self.timeline.line(
                "main",
                f"<- error {record.value.get('type')}/{record.value.get('sub_type')}"
                f" {record.value.get('state')} (origin {record.value['origin']['module_id']})",
            )

    async def until(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                raise StepFailed(f"not observed within {STEP_TIMEOUT:g} s: {what}")
            await deferLater(self.reactor, 0.01)

    async def step(self, name: str, body: Callable[[], Awaitable[str]]) -> None:
        self.timeline.line("demo", f"== {name}")
        started = time.monotonic()
        try:
            detail = await body()
        except Exception as e:
            self.results.append((name, False, str(e)))
            self.timeline.line("demo", f"   FAILED: {e}")
            return
        took = time.monotonic() - started
        self.results.append((name, True, f"{detail} ({took:.2f} s)"))
        self.timeline.line("demo", f"   ok: {detail}")

    def events(self, index: int) -> list[str]:
        return self.station.main.consumer.events(index)

    # -- the scenario -----------------------------------------------------------

    async def run(self) -> bool:
        station = self.station
        n = len(station.satellites)
        await self.step("start the station: every link synchronised", self._start)
        for i in range(n):
            await self.step(f"charging session on satellite-{i + 1}", self._sessionStep(i))
        await self.step("pause and resume satellite-1 from the main board", self._pauseResume)
        if n >= 2:
            await self.step("remote stop of satellite-2 from the main board", self._remoteStop)
        await self.step(f"error on satellite-{n} raised and cleared", lambda: self._error(n - 1))
        await self.step("reset of satellite-1: the station returns to a common start", self._reset)
        if self.backend is not None and station.main.ocpp is not None:
            await self.step("diagnostics: every board's logs in one archive", self._diagnostics)
            await self.step(
                "firmware update of the whole station, fetched once", self._firmwareUpdate
            )
        station.stop()
        self._summary()
        return all(ok for _, ok, _ in self.results)

    async def _start(self) -> str:
        await self.station.start()
        self.station.main.consumer.observe(self._record)
        return f"{len(self.station.satellites)} satellites linked over mutual TLS"

    def _sessionStep(self, index: int) -> Callable[[], Awaitable[str]]:
        return lambda: self._session(index)

    async def _session(self, index: int) -> str:
        satellite = self.station.satellites[index]
        satellite.evse.plugIn()
        self.timeline.line(satellite.name, "car plugged in")
        await self.until(
            "AuthRequired on the main board", lambda: "AuthRequired" in self.events(index)
        )
        card = token(index)
        satellite.evse.swipeCard(card)
        self.timeline.line(satellite.name, f"card {card} read at the satellite's reader")
        await self.until(
            "TransactionStarted on the main board",
            lambda: "TransactionStarted" in self.events(index),
        )
        consumer = self.station.main.consumer

        def energy() -> list[float]:
            return [_energy(v) for v in consumer.values(index, "powermeter")]

        await self.until("rising meter values", lambda: len(set(energy())) >= 2)
        return f"authorized on the main board, meter at {max(energy()):.1f} Wh"

    async def _pauseResume(self) -> str:
        consumer = self.station.main.consumer
        started = time.monotonic()
        paused = await consumer.pause(0)
        rtt = (time.monotonic() - started) * 1000
        self.timeline.line("main", f"-> satellite-1 pause_charging: {paused} ({rtt:.1f} ms)")
        await self.until("ChargingPausedEVSE", lambda: "ChargingPausedEVSE" in self.events(0))
        resumed = await consumer.resume(0)
        self.timeline.line("main", f"-> satellite-1 resume_charging: {resumed}")
        await self.until(
            "charging again", lambda: self.events(0)[-1] in ("ChargingStarted", "SessionResumed")
        )
        if not (paused and resumed):
            raise StepFailed(f"pause answered {paused}, resume answered {resumed}")
        return "paused and resumed"

    async def _remoteStop(self) -> str:
        stopped = await self.station.main.consumer.remoteStop(1)
        self.timeline.line("main", f"-> satellite-2 stop_transaction: {stopped}")
        await self.until("TransactionFinished", lambda: "TransactionFinished" in self.events(1))
        return "transaction finished on request"

    async def _error(self, index: int) -> str:
        satellite = self.station.satellites[index]
        consumer = self.station.main.consumer
        error = makeError(
            "evse_manager/MREC4OverCurrentFailure", "connector_1", "evse", "over current", "L2"
        )
        satellite.evse.module.raiseError("evse", error)
        self.timeline.line(satellite.name, "raises evse_manager/MREC4OverCurrentFailure (L2)")

        def states() -> list[str]:
            return [
                e["state"]
                for e in consumer.errors()
                if e["type"] == error["type"] and e["sub_type"] == "L2"
            ]

        await self.until("the error on the main board", lambda: "Active" in states())
        satellite.evse.module.clearError("evse", error)
        self.timeline.line(satellite.name, "clears it")
        await self.until("the clear on the main board", lambda: "ClearedByModule" in states())
        return "raised and cleared with its sub_type and origin"

    async def _reset(self) -> str:
        station = self.station
        main = station.main
        boots = [s.boots for s in station.satellites]
        mainBoots = main.boots
        result = await main.engineer.call("system", "reset", {"type": "Soft", "scheduled": False})
        self.timeline.line("main", f"-> satellite-1 reset: {result}")
        await self.until("the main board restarted", lambda: main.boots > mainBoots)
        await self.until(
            "every satellite rebooted",
            lambda: all(s.boots > b for s, b in zip(station.satellites, boots, strict=True)),
        )
        await main.whenReady()
        reasons = ", ".join(f"{s.name}: {s.bootReason}" for s in station.satellites)
        return f"every board restarted and every link synchronised again ({reasons})"

    async def _diagnostics(self) -> str:
        main, backend = self.station.main, self.backend
        assert main.ocpp is not None and backend is not None
        statuses: list[Any] = []
        main.ocpp.subscribeVar("system", "log_status", statuses.append)
        request = {
            "location": backend.uploadUrl,
            "type": "DiagnosticsLog",
            "retries": 2,
            "retry_interval_s": 1,
            "request_id": 17,
        }
        answer = await main.ocpp.call("system", "upload_logs", {"upload_logs_request": request})
        self.timeline.line("main", f"-> station upload_logs: {answer}")

        def status() -> str | None:
            found = [s for s in statuses if isinstance(s, dict) and s.get("request_id") == 17]
            return found[-1].get("log_status") if found else None

        await self.until("the archive uploaded", lambda: status() in ("Uploaded", "UploadFailure"))
        if status() != "Uploaded" or not backend.received:
            raise StepFailed(f"log_status {status()}")
        archive = backend.received[-1]
        with tarfile.open(archive) as tar:
            manifest = json.load(cast(IO[bytes], tar.extractfile("manifest.json")))
            folders = sorted({m.name.split("/", 1)[0] for m in tar.getmembers() if "/" in m.name})
        boards = [b.get("board") for b in manifest.get("boards", [])]
        missing = [b for b in manifest.get("boards", []) if b.get("outcome") != "uploaded"]
        self.timeline.line("backend", f"<- {archive.name}: {', '.join(folders)}")
        if missing or len(folders) != len(self.station.satellites) + 1:
            raise StepFailed(f"boards missing from {archive.name}: {missing or folders}")
        return (
            f"archive {archive.name} with the logs of {len(boards)} boards ({', '.join(folders)})"
        )

    async def _firmwareUpdate(self) -> str:
        station, backend = self.station, self.backend
        main = station.main
        assert main.ocpp is not None and backend is not None
        certificate, signature = signImage(backend.image)
        statuses: list[Any] = []
        main.ocpp.subscribeVar("system", "firmware_update_status", statuses.append)
        boots = [s.boots for s in station.satellites]
        mainBoots = main.boots
        request = {
            "request_id": 18,
            "location": backend.imageUrl,
            "retrieve_timestamp": _rfc3339(datetime.now(UTC)),
            # no install_timestamp: the aggregator holds every board's
            # download before its last byte until all have the image, so no
            # board restarts (and restarts the station) while others download
            "retries": 2,
            "retry_interval_s": 1,
            "signing_certificate": certificate,
            "signature": signature,
        }
        answer = await main.ocpp.call(
            "system", "update_firmware", {"firmware_update_request": request}
        )
        self.timeline.line("main", f"-> station update_firmware (signed): {answer}")
        if answer != "Accepted":
            raise StepFailed(f"update_firmware answered {answer}")
        satellites = [s.system for s in station.satellites]
        await self.until(
            "every board rebooted into the new firmware",
            lambda: (
                main.boots > mainBoots
                and all(s.boots > b for s, b in zip(station.satellites, boots, strict=True))
            ),
        )
        await main.whenReady()
        seen = [str(s.get("firmware_update_status")) for s in statuses if isinstance(s, dict)]
        self.timeline.line("main", f"<- station firmware_update_status: {', '.join(seen)}")
        digest = hashlib.sha256(backend.image).hexdigest()
        installed = [hashlib.sha256(s.installedFirmware or b"").hexdigest() for s in satellites]
        if installed != [digest] * len(satellites):
            raise StepFailed("a satellite did not install the image")
        if backend.fetches != 1:
            raise StepFailed(f"the backend was asked {backend.fetches} times for the image")
        return (
            f"{len(backend.image)} bytes fetched from the backend once"
            f" ({backend.bytesServed} bytes served), installed by {len(satellites)} satellites"
            " and the main board, every signature checked on its board; the station"
            " came back through a common start"
        )

    def _summary(self) -> None:
        line = self.timeline.line
        line("demo", "== summary")
        for name, ok, detail in self.results:
            line("demo", f"   [{'ok' if ok else 'FAILED'}] {name}: {detail}")
        passed = sum(ok for _, ok, _ in self.results)
        line("demo", f"{passed} of {len(self.results)} steps observed")


def _energy(value: Any) -> float:
    try:
        return float(value["energy_Wh_import"]["total"])
    except (KeyError, TypeError, ValueError):
        return 0.0


def _power(record: Record) -> str:
    try:
        return f"{float(record.value['power_W']['total']):.0f} W"
    except (KeyError, TypeError, ValueError):
        return "?"


@dataclass
class _Receivers:
    service: ReceiverService
    ftpPort: int

    @property
    def receivers(self) -> Any:
        return self.service.receivers

    async def stop(self) -> None:
        stopped = self.service.stopService()
        if stopped is not None:
            await stopped


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def startReceivers(reactor: Any, directory: Path) -> _Receivers:
    """The main board's receivers, on loopback (every board of the demo is there)."""
    ftpPort = _freePort()
    settings = replace(
        ReceiverSettings(),
        ftp_port=ftpPort,
        http_port=_freePort(),
        directory=str(directory),
        min_free_bytes=0,
    )
    service = ReceiverService(reactor, settings)
    service.startService()
    return _Receivers(service, ftpPort)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def signImage(image: bytes) -> tuple[str, str]:
    """A signing certificate (PEM) of a fresh key, and its signature of C{image} (base64)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rcp demo firmware signer")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    signature = key.sign(image, ec.ECDSA(hashes.SHA256()))
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return pem, base64.b64encode(signature).decode()


def run(reactor: Any, satellites: int = 3, out: TextIO = sys.stdout) -> Deferred[bool]:
    """Run the demo; the Deferred fires with whether every step was observed."""

    async def go() -> bool:
        with tempfile.TemporaryDirectory(prefix="rcp-demo-") as tmp:
            base = Path(tmp)
            backend = Backend(reactor, base / "backend", os.urandom(IMAGE_SIZE))
            await backend.start()
            receivers = await startReceivers(reactor, base / "receivers")
            system = StationSystem(
                receivers.receivers,
                CurlTransfers(reactor) if shutil.which("curl") else NativeTransfers(reactor),
                {
                    "upload_url_template": f"ftp://{{my-ip}}:{receivers.ftpPort}/",
                    "incoming_upload_timeout": 20,
                    "command_timeout": 5,
                    "default_retries": 2,
                    "default_retry_interval": 1,
                },
            )
            try:
                demo = Demo(reactor, satellites, out, base / "pki", system, backend)
                return await demo.run()
            finally:
                await receivers.stop()
                stopped = backend.stop()
                if stopped is not None:
                    await stopped

    return Deferred.fromCoroutine(go())
