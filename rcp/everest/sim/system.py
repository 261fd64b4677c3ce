"""
A simulated System module (core's C{modules/Misc/System}): firmware
updates, log uploads, resets and the boot reason, with the status sequences
and answers of the real module.

Transfers are real (L{rcp.everest.sim.transfer}) unless the caller injects
its own; the steps between two statuses, which the real module's scripts
spend sleeping, take C{stepDelay} seconds of the injected clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from collections.abc import Callable, Coroutine
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interface import IEverestModule
from .common import secondsUntil, sleep, timestamp
from .transfer import Transfers, checkFileName, redactURL

#: the implementation id of the manifest
MAIN: Final = "main"

#: request_id of the standard (unsigned, OCPP 1.6) firmware update
STANDARD_REQUEST: Final = -1

FetchFunction = Callable[[str], Deferred[bytes]]
"""C{fetch(url)}: the content at C{url}."""

UploadFunction = Callable[[str, str, bytes], Deferred[None]]
"""C{upload(location, fileName, data)}: store C{data} as C{fileName} at C{location}."""

VerifyFunction = Callable[[bytes, str, str], bool]
"""C{verify(data, signatureBase64, certificatePem)}: whether the signature holds."""

ResetCallback = Callable[[str], object]
"""C{onReset(type)}: the board is to restart now."""

_RANDOM_ALPHABET: Final = string.ascii_lowercase + string.digits
_JOURNAL_LINES: Final = 200


def verifySignature(data: bytes, signature: str, certificate: str) -> bool:
    """
    What the signed firmware downloader checks with openssl: C{signature}
    (base64) is a SHA-256 signature of C{data} by the key of C{certificate}
    (PEM; RSA PKCS#1 v1.5 or ECDSA).
    """
    try:
        key = x509.load_pem_x509_certificate(certificate.encode()).public_key()
        raw = base64.b64decode("".join(signature.split()), validate=True)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (ValueError, TypeError, binascii.Error, InvalidSignature):
        return False
    return True


class _Run:
    """One background job: a download, an installation, an upload."""

    def __init__(self, requestId: int) -> None:
        self.requestId = requestId
        self.deferred: Deferred[None] | None = None

    def cancel(self) -> None:
        if self.deferred is not None:
            self.deferred.cancel()


class SystemSim:
    """
    The simulated C{system} provider of one board.

    @param module: provides the implementation C{main} (interface system).
    @param clock: the only source of time.
    @param stepDelay: seconds between two steps of a script (the real
        scripts sleep 2 s).
    @param fetch: how firmware is fetched; real transfers by default.
    @param upload: how log files are uploaded; real transfers by default.
    @param verify: how a firmware signature is checked; L{verifySignature}
        by default.
    @param onReset: called with the reset type when the board is to
        restart; the board wrapper restarts the simulated board and passes
        L{nextBootReason} as the new C{bootReason}.
    @param bootReason: what C{get_boot_reason} answers (once, as the real
        module deletes it from its store; then C{PowerUp}).
    @param resetDelay: seconds from C{reset} to C{onReset}; by default the
        module's C{ResetDelay} configuration, else 0.5.
    @param defaultRetries: attempts when a request gives none; by default
        the module's C{DefaultRetries} configuration, else 1.
    @param defaultRetryInterval: seconds between attempts when a request
        gives none; by default C{DefaultRetryInterval}, else 1.
    """

    log = Logger()

    def __init__(
        self,
        module: IEverestModule,
        clock: IReactorTime,
        *,
        stepDelay: float = 1.0,
        fetch: FetchFunction | None = None,
        upload: UploadFunction | None = None,
        verify: VerifyFunction | None = None,
        onReset: ResetCallback | None = None,
        bootReason: str = "PowerUp",
        resetDelay: float | None = None,
        defaultRetries: int | None = None,
        defaultRetryInterval: float | None = None,
    ) -> None:
        self.module = module
        self.clock = clock
        self.stepDelay = stepDelay
        config = module.config()
        self.resetDelay = float(
            resetDelay if resetDelay is not None else config.get("ResetDelay", 0.5)
        )
        self.defaultRetries = int(
            defaultRetries if defaultRetries is not None else config.get("DefaultRetries", 1)
        )
        self.defaultRetryInterval = float(
            defaultRetryInterval
            if defaultRetryInterval is not None
            else config.get("DefaultRetryInterval", 1)
        )
        if fetch is None or upload is None:
            # the clock when it is a whole reactor, else the global one
            transfers = Transfers(clock if IReactorTCP.providedBy(clock) else None)
            fetch = fetch or transfers.fetch
            upload = upload or transfers.upload
        self._fetch: FetchFunction = fetch
        self._upload: UploadFunction = upload
        self._verify: VerifyFunction = verify or verifySignature
        self.onReset = onReset

        #: the boot reason the restarted board should report (None: PowerUp)
        self.nextBootReason: str | None = None
        #: the last firmware image installed
        self.installedFirmware: bytes | None = None
        #: the last set_system_time value
        self.systemTime: str | None = None
        #: what the generated log files contain: one line per status
        self.journal: list[str] = []
        #: (location, file name, content) of the last log file uploaded
        self.lastUpload: tuple[str, str, bytes] | None = None

        self._bootReason = bootReason
        self._standardRun: _Run | None = None
        self._signedRun: _Run | None = None
        #: an installation waiting for its install_timestamp (core: one timer)
        self._installTimer: _Run | None = None
        self._installRun: _Run | None = None
        #: an installation has begun in this boot (core never clears its flag)
        self._installing = False
        self._logRun: _Run | None = None
        self._resetCall: IDelayedCall | None = None
        self._started = False

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Offer every command, then tell EVerest this module is ready."""
        if self._started:
            raise RuntimeError("SystemSim started twice")
        self._started = True
        for name, handler in (
            ("update_firmware", self._updateFirmware),
            ("allow_firmware_installation", self._allowFirmwareInstallation),
            ("upload_logs", self._uploadLogs),
            ("is_reset_allowed", self._isResetAllowed),
            ("reset", self._resetCommand),
            ("set_system_time", self._setSystemTime),
            ("get_boot_reason", self._getBootReason),
        ):
            self.module.provideCommand(MAIN, name, handler)
        self.module.signalReady().addErrback(
            lambda f: self.log.failure("{module}: ready failed", f, module=self.module.moduleId)
        )
        self._note(f"boot, reason {self._bootReason}")

    def stop(self) -> None:
        """Abandon every job and a pending reset (the board goes down)."""
        for run in (
            self._standardRun,
            self._signedRun,
            self._installTimer,
            self._installRun,
            self._logRun,
        ):
            if run is not None:
                run.cancel()
        if self._resetCall is not None and self._resetCall.active():
            self._resetCall.cancel()
        self._resetCall = None

    @property
    def busy(self) -> bool:
        """Whether a download, an installation, an upload or a reset is under way."""
        return any(
            run is not None
            for run in (
                self._standardRun,
                self._signedRun,
                self._installTimer,
                self._installRun,
                self._logRun,
            )
        ) or (self._resetCall is not None and self._resetCall.active())

    # -- commands -------------------------------------------------------------

    def _updateFirmware(self, args: dict[str, Any]) -> str:
        request = args.get("firmware_update_request")
        if not isinstance(request, dict) or not isinstance(request.get("location"), str):
            return "Rejected"
        requestId = request.get("request_id", STANDARD_REQUEST)
        if not isinstance(requestId, int) or isinstance(requestId, bool):
            return "Rejected"
        if requestId == STANDARD_REQUEST:
            return self._standardUpdate(request)
        return self._signedUpdate(request, requestId)

    def _allowFirmwareInstallation(self, args: dict[str, Any]) -> None:
        return None  # a no-op in the real module too

    def _uploadLogs(self, args: dict[str, Any]) -> dict[str, Any]:
        request = args.get("upload_logs_request")
        if not isinstance(request, dict) or not isinstance(request.get("location"), str):
            return {"upload_logs_status": "Rejected"}
        requestId = request.get("request_id", -1)
        if not isinstance(requestId, int) or isinstance(requestId, bool):
            requestId = -1
        status = "Accepted"
        old = self._logRun
        if old is not None:
            self._logRun = None
            old.cancel()
            self._logStatus("AcceptedCanceled", old.requestId)
            status = "AcceptedCanceled"
        fileName = self.logFileName()
        data = self._logFile(request)
        retries, interval = self._retries(request)
        run = _Run(requestId)
        self._logRun = run
        run.deferred = self._spawn(
            self._uploadRun(run, request["location"], fileName, data, retries, interval),
            "log upload",
        )
        return {"upload_logs_status": status, "file_name": fileName}

    def _isResetAllowed(self, args: dict[str, Any]) -> bool:
        return True

    def _resetCommand(self, args: dict[str, Any]) -> None:
        kind = args.get("type", "NotSpecified")
        self._note(f"reset {kind} requested (scheduled: {args.get('scheduled', False)})")
        self._reset(kind if isinstance(kind, str) else "NotSpecified")

    def _setSystemTime(self, args: dict[str, Any]) -> bool:
        value = args.get("timestamp")
        if isinstance(value, str):
            self.systemTime = value
        return True

    def _getBootReason(self, args: dict[str, Any]) -> str:
        # read and delete, as the real module does with its store
        reason, self._bootReason = self._bootReason, "PowerUp"
        return reason

    # -- firmware -------------------------------------------------------------

    def _standardUpdate(self, request: dict[str, Any]) -> str:
        if self._standardRun is not None:
            return "Rejected"
        delay = secondsUntil(self.clock, request.get("retrieve_timestamp"))
        run = _Run(STANDARD_REQUEST)
        self._standardRun = run
        # a start in the future is a plain timer: no DownloadScheduled here
        run.deferred = self._spawn(self._standardRunner(run, request, delay), "firmware update")
        return "Accepted"

    async def _standardRunner(self, run: _Run, request: dict[str, Any], delay: float) -> None:
        requestId = STANDARD_REQUEST
        try:
            if delay > 0:
                await sleep(self.clock, delay)
            retries, interval = self._retries(request)
            for attempt in range(retries):
                if attempt:
                    await sleep(self.clock, interval)
                self._firmwareStatus("Downloading", requestId)
                data = await self._tryFetch(request["location"])
                await sleep(self.clock, self.stepDelay)
                if data is None:
                    self._firmwareStatus("DownloadFailed", requestId)
                    continue
                self._firmwareStatus("Downloaded", requestId)
                await sleep(self.clock, self.stepDelay)
                self._firmwareStatus("Installing", requestId)
                await sleep(self.clock, self.stepDelay)
                self.installedFirmware = data
                self._firmwareStatus("Installed", requestId)
                self.nextBootReason = "FirmwareUpdate"
                return
        finally:
            if self._standardRun is run:
                self._standardRun = None

    def _signedUpdate(self, request: dict[str, Any], requestId: int) -> str:
        if not request.get("signing_certificate") or not request.get("signature"):
            return "Rejected"
        result = "Accepted"
        old = self._signedRun
        if old is not None:
            self._signedRun = None
            old.cancel()
            result = "AcceptedCanceled"
        elif self._installing:
            # an installation is under way (a scheduled one is not): the
            # download still starts; its installation will fail
            result = "Rejected"
        delay = secondsUntil(self.clock, request.get("retrieve_timestamp"))
        if delay > 0:
            self._firmwareStatus("DownloadScheduled", requestId)
        run = _Run(requestId)
        self._signedRun = run
        run.deferred = self._spawn(
            self._signedRunner(run, request, delay), "signed firmware download"
        )
        return result

    async def _signedRunner(self, run: _Run, request: dict[str, Any], delay: float) -> None:
        requestId = run.requestId
        try:
            if delay > 0:
                await sleep(self.clock, delay)
            retries, interval = self._retries(request)
            data: bytes | None = None
            for attempt in range(retries):
                if attempt:
                    await sleep(self.clock, interval)
                await sleep(self.clock, self.stepDelay)
                self._firmwareStatus("Downloading", requestId)
                await sleep(self.clock, self.stepDelay)
                data = await self._tryFetch(request["location"])
                await sleep(self.clock, self.stepDelay)
                if data is None:
                    self._firmwareStatus("DownloadFailed", requestId)
                    continue
                self._firmwareStatus("Downloaded", requestId)
                break
            if data is None:
                return
            if not self._verify(
                data, str(request["signature"]), str(request["signing_certificate"])
            ):
                self._firmwareStatus("InvalidSignature", requestId)
                return
            self._firmwareStatus("SignatureVerified", requestId)
        finally:
            if self._signedRun is run:
                self._signedRun = None
        self._startInstallation(request, requestId, data)

    def _startInstallation(self, request: dict[str, Any], requestId: int, data: bytes) -> None:
        delay = secondsUntil(self.clock, request.get("install_timestamp"))
        if delay <= 0:
            self._install(requestId, data)
            return
        # core has one install timer: a new schedule replaces the waiting one
        old = self._installTimer
        if old is not None:
            self._installTimer = None
            old.cancel()
        self._firmwareStatus("InstallScheduled", requestId)
        run = _Run(requestId)
        self._installTimer = run
        run.deferred = self._spawn(self._scheduled(run, data, delay), "scheduled installation")

    async def _scheduled(self, run: _Run, data: bytes, delay: float) -> None:
        try:
            await sleep(self.clock, delay)
        finally:
            if self._installTimer is run:
                self._installTimer = None
        self._install(run.requestId, data)

    def _install(self, requestId: int, data: bytes) -> None:
        if self._installing:
            self._firmwareStatus("InstallationFailed", requestId)
            return
        self._installing = True
        run = _Run(requestId)
        self._installRun = run
        run.deferred = self._spawn(self._installRunner(run, data), "firmware installation")

    async def _installRunner(self, run: _Run, data: bytes) -> None:
        try:
            self._firmwareStatus("Installing", run.requestId)
            await sleep(self.clock, self.stepDelay)
            self.installedFirmware = data
            self._firmwareStatus("Installed", run.requestId)
        finally:
            if self._installRun is run:
                self._installRun = None
        self.nextBootReason = "FirmwareUpdate"
        self._reset("Hard")

    async def _tryFetch(self, location: str) -> bytes | None:
        try:
            return await self._fetch(location)
        except CancelledError:
            raise
        except Exception as e:
            self.log.info(
                "{module}: cannot fetch {location}: {error}",
                module=self.module.moduleId,
                location=redactURL(location),
                error=e,
            )
            return None

    # -- logs -----------------------------------------------------------------

    def logFileName(self) -> str:
        """A fresh log file name: C{diagnostics-<timestamp><6 random characters>}."""
        suffix = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(6))
        return checkFileName(f"diagnostics-{timestamp(self.clock)}{suffix}")

    def _logFile(self, request: dict[str, Any]) -> bytes:
        content = {
            "diagnostics": {
                "module": self.module.moduleId,
                "created": timestamp(self.clock),
                "type": str(request.get("type", "DiagnosticsLog")),
                "journal": self.journal[-50:],
            }
        }
        return (json.dumps(content, indent=2) + "\n").encode()

    async def _uploadRun(
        self,
        run: _Run,
        location: str,
        fileName: str,
        data: bytes,
        retries: int,
        interval: float,
    ) -> None:
        try:
            for attempt in range(retries):
                if attempt:
                    await sleep(self.clock, interval)
                self._logStatus("Uploading", run.requestId)
                await sleep(self.clock, self.stepDelay)
                try:
                    await self._upload(location, fileName, data)
                except CancelledError:
                    raise
                except Exception as e:
                    self.log.info(
                        "{module}: cannot upload {file} to {location}: {error}",
                        module=self.module.moduleId,
                        file=fileName,
                        location=redactURL(location),
                        error=e,
                    )
                    self._logStatus("UploadFailure", run.requestId)
                    continue
                self.lastUpload = (location, fileName, data)
                self._logStatus("Uploaded", run.requestId)
                return
        finally:
            if self._logRun is run:
                self._logRun = None

    # -- internals ------------------------------------------------------------

    def _reset(self, kind: str) -> None:
        if self.nextBootReason is None:
            self.nextBootReason = "RemoteReset"
        if self._resetCall is not None and self._resetCall.active():
            return
        self._resetCall = self.clock.callLater(self.resetDelay, self._doReset, kind)

    def _doReset(self, kind: str) -> None:
        self._resetCall = None
        self.log.info("{module}: {kind} reset", module=self.module.moduleId, kind=kind)
        if self.onReset is None:
            return
        try:
            self.onReset(kind)
        except Exception:
            self.log.failure("{module}: onReset failed", module=self.module.moduleId)

    def _retries(self, request: dict[str, Any]) -> tuple[int, float]:
        retries = request.get("retries")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 1:
            retries = max(1, self.defaultRetries)
        interval = request.get("retry_interval_s")
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            interval = self.defaultRetryInterval
        return retries, float(interval)

    def _spawn(self, coroutine: Coroutine[Deferred[Any], Any, None], what: str) -> Deferred[None]:
        d = Deferred.fromCoroutine(coroutine)

        def ended(failure: Failure) -> None:
            if not failure.check(CancelledError):
                self.log.failure(
                    "{module}: {what} failed", failure, module=self.module.moduleId, what=what
                )

        d.addErrback(ended)
        return d

    def _firmwareStatus(self, status: str, requestId: int) -> None:
        self._note(f"firmware {status} ({requestId})")
        self.module.publishVar(
            MAIN,
            "firmware_update_status",
            {"firmware_update_status": status, "request_id": requestId},
        )

    def _logStatus(self, status: str, requestId: int) -> None:
        self._note(f"log upload {status} ({requestId})")
        self.module.publishVar(MAIN, "log_status", {"log_status": status, "request_id": requestId})

    def _note(self, text: str) -> None:
        self.journal.append(f"{timestamp(self.clock)} {text}")
        del self.journal[:-_JOURNAL_LINES]
