"""
The SystemAggregator: one C{system} for the whole station.

Towards its caller (OCPP) the station is one system; behind it every board,
the main board's own System and each satellite's, is asked in parallel,
each call with a deadline (C{command_timeout}).

update_firmware
  The image crosses the backend link once: every board gets the request
  with its location replaced by a one-time download grant of the main
  board's receivers, which serve the image as it is fetched from the
  backend.  The answer is the worst of the boards' answers in upstream's
  order (Accepted < Rejected < AcceptedCanceled < InvalidCertificate <
  RevokedCertificate), except that an AcceptedCanceled never hides a
  refusal.  A board that does not answer in time, or whose link is down,
  refuses.  When any board refuses, the update is abandoned for the whole
  station: the image is not fetched, every board's grant is revoked (so a
  board that accepted fails its download and installs nothing), and no
  status of that update is passed on.  Statuses are combined by
  L{rcp.aggregator.firmware.FirmwareStatus}.

  No board installs before every board has the image: any board's restart
  restarts the station and would cut the downloads still running.  The
  receivers serve each board's download up to the image's last byte and
  hold it there (L{IDownloadGrant.holdEnd}); once every board is held
  there, or reported a status of having the image, or failed, every grant
  is released and the boards finish together
  (L{rcp.aggregator.firmware.InstallHold}).  The hold lasts at most
  C{install_hold_timeout} seconds from the first board with the image;
  then the boards still downloading are cut off (grant revoked) and
  reported failed, and the others go on.  The backend's own
  C{install_timestamp} is handed on unchanged: a System that honours it
  (core's C{System}, signed updates) installs at that time if it is later.

upload_logs
  Every board uploads to the receivers with its own grant; once each has an
  outcome (L{rcp.aggregator.logs}) the files are packed into one archive
  with a manifest naming the missing boards, uploaded to the requested
  location with the requested retries, and every file is removed.  A new
  request cancels the running one (AcceptedCanceled, also published for the
  old request id) and starts.

reset
  The satellites first, the main board once they answered or their
  deadline passed.

is_reset_allowed, set_system_time
  The boards' answers AND-ed; a board that fails to answer says no.

allow_firmware_installation
  To every board; during a firmware update's hold it is kept and sent once
  the hold ends (a System that holds its restart for it, as core's
  C{Linux_Systemd_Rauc}, restarts only then).

get_boot_reason
  Every board's reason is logged and kept in L{bootReasons}; the answer is
  the main board's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any, Final

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..everest.interface import IEverestModule
from .archive import BoardLogs, Packer, archiveName
from .fanout import Answer, callOne, fanOut
from .firmware import FINAL, UNSIGNED, FirmwareStatus, InstallHold
from .logs import FAILED, NOT_CONNECTED, LogCollection
from .ports import IDownloadGrant, IImageWriter, IReceivers, ITransfers, IUploadGrant
from .settings import AggregatorSettings
from .topology import SATELLITE, SYSTEM, Board, Topology, topologyOf

#: the main board's address towards itself
LOOPBACK: Final = "127.0.0.1"

#: the worst answer wins, in upstream's order
FIRMWARE_ANSWERS: Final = (
    "Accepted",
    "Rejected",
    "AcceptedCanceled",
    "InvalidCertificate",
    "RevokedCertificate",
)
_ACCEPTING: Final = frozenset({"Accepted", "AcceptedCanceled"})


def worstAnswer(answers: list[str]) -> str:
    """The station's answer to update_firmware from its boards' (see the module docstring)."""
    refusals = [a for a in answers if a not in _ACCEPTING]
    considered = refusals or answers
    return max(
        considered,
        key=lambda a: FIRMWARE_ANSWERS.index(a) if a in FIRMWARE_ANSWERS else 1,
    )


def _cut(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _LogRun:
    """One upload_logs request under way."""

    def __init__(self, callerRequestId: int, requestId: int, name: str) -> None:
        self.callerRequestId = callerRequestId
        self.requestId = requestId
        self.name = name
        self.collection: LogCollection | None = None
        self.grants: dict[str, IUploadGrant] = {}
        self.deferred: Deferred[None] | None = None
        self.canceled = False


class _FirmwareRun:
    """One update_firmware request."""

    def __init__(self, requestId: int) -> None:
        self.requestId = requestId
        self.status: FirmwareStatus | None = None
        self.hold: InstallHold | None = None
        self.image: IImageWriter | None = None
        self.grants: list[IDownloadGrant] = []
        self.grantOf: dict[str, IDownloadGrant] = {}
        self.fetch: Deferred[int] | None = None
        self.abandoned = False
        #: statuses that arrived before every board answered, replayed then
        self.early: list[tuple[str, Any]] = []
        #: boards held at the image's end before every board answered
        #: allow_firmware_installation arrived during the hold
        self.allowWanted = False


class SystemAggregator:
    """
    The SystemAggregator module (see the module docstring).

    @param module: provides C{system}, requires C{system} and C{satellite}.
    @param clock: the only source of time.
    @param receivers: the main board's receivers.
    @param transfers: transfers to and from the backend.
    @param packer: packs archives in a thread (a default L{Packer}).
    @param settings: by default from the module's config.
    """

    log = Logger()

    def __init__(
        self,
        module: IEverestModule,
        clock: IReactorTime,
        receivers: IReceivers,
        transfers: ITransfers,
        packer: Packer | None = None,
        settings: AggregatorSettings | None = None,
    ) -> None:
        self.module = module
        self.clock = clock
        self.receivers = receivers
        self.transfers = transfers
        self.packer = packer or Packer()
        self._settings = settings
        self.topology: Topology | None = None
        #: every board's last boot reason
        self.bootReasons: dict[str, str] = {}
        #: the last archive and its manifest
        self.lastManifest: dict[str, Any] | None = None
        self._firmware: _FirmwareRun | None = None
        self._logRun: _LogRun | None = None
        self._logRequests = 0
        self._started = False

    @property
    def settings(self) -> AggregatorSettings:
        if self._settings is None:
            raise RuntimeError("SystemAggregator not started")
        return self._settings

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """
        Check the topology, offer the commands, subscribe every board's
        statuses, signal ready.

        @raise ValueError: the topology or the config is wrong (one line).
        """
        if self._started:
            raise RuntimeError("SystemAggregator started twice")
        moduleId = self.module.moduleId
        topology = topologyOf(
            moduleId,
            self.module.connectedModules(SYSTEM),
            self.module.connectedModules(SATELLITE),
        )
        if self._settings is None:
            self._settings = AggregatorSettings.fromConfig(moduleId, self.module.config())
        self._started = True
        self.topology = topology
        self.log.info(
            "{module}: SystemAggregator for {count} boards: main {main}, satellites {sats}",
            module=moduleId,
            count=len(topology.boards),
            main=topology.main.name,
            sats=", ".join(b.name for b in topology.satellites) or "none",
        )
        for command, handler in (
            ("update_firmware", self._updateFirmware),
            ("allow_firmware_installation", self._allowFirmwareInstallation),
            ("upload_logs", self._uploadLogs),
            ("is_reset_allowed", self._isResetAllowed),
            ("reset", self._reset),
            ("set_system_time", self._setSystemTime),
            ("get_boot_reason", self._getBootReason),
        ):
            self.module.provideCommand(SYSTEM, command, self._guarded(command, handler))
        for board in topology.boards:
            self.module.subscribeVar(
                SYSTEM, "firmware_update_status", self._firmwareStatus(board), board.systemIndex
            )
            self.module.subscribeVar(
                SYSTEM, "log_status", self._logStatus(board), board.systemIndex
            )
        self.module.signalReady().addErrback(
            lambda f: self.log.failure("{module}: ready failed", f, module=moduleId)
        )

    def stop(self) -> None:
        """Abandon what is under way (the process ends)."""
        if self._firmware is not None:
            self._abandonFirmware(self._firmware, "the aggregator stops", handOn=False)
        if self._logRun is not None:
            self._cancelLogs(self._logRun, publish=False)

    # -- helpers ----------------------------------------------------------------

    def _guarded(
        self, command: str, handler: Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]
    ) -> Callable[[dict[str, Any] | None], Deferred[Any]]:
        def run(args: dict[str, Any] | None) -> Deferred[Any]:
            safe = args if isinstance(args, dict) else {}
            return Deferred.fromCoroutine(handler(safe))

        return run

    def _boards(self) -> tuple[Board, ...]:
        assert self.topology is not None
        return self.topology.boards

    def _callBoard(self, board: Board, command: str, args: dict[str, Any]) -> Deferred[Any]:
        return self.module.call(SYSTEM, command, args, board.systemIndex)

    def _fanOut(
        self, command: str, args: Callable[[Board], dict[str, Any]]
    ) -> Deferred[dict[str, Answer]]:
        return fanOut(
            self.clock,
            {
                b.name: (lambda b=b: self._callBoard(b, command, args(b)))  # type: ignore[misc]
                for b in self._boards()
            },
            self.settings.command_timeout,
        )

    async def _addresses(self, board: Board) -> tuple[str, str] | None:
        """(the main board's address towards C{board}, C{board}'s address); None if unlinked."""
        if board.satelliteIndex is None:
            return LOOPBACK, LOOPBACK
        index = board.satelliteIndex
        answers = await DeferredList(
            [
                callOne(
                    self.clock,
                    lambda c=c: self.module.call(SATELLITE, c, {}, index),  # type: ignore[misc]
                    self.settings.command_timeout,
                )
                for c in ("get_local_endpoint_address", "get_remote_endpoint_address")
            ]
        )
        local, remote = (answer for _, answer in answers)
        if not (local.ok and remote.ok):
            return None
        if not (isinstance(local.value, str) and local.value and isinstance(remote.value, str)):
            return None
        if not remote.value:
            return None
        return local.value[:64], remote.value[:64]

    def _attempts(self, request: dict[str, Any]) -> tuple[int, float]:
        retries = request.get("retries")
        if type(retries) is not int or retries < 1:
            retries = self.settings.attempts
        interval = request.get("retry_interval_s")
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            interval = self.settings.default_retry_interval
        return min(retries, 100), float(interval)

    # -- firmware ---------------------------------------------------------------

    async def _updateFirmware(self, args: dict[str, Any]) -> str:
        request = args.get("firmware_update_request")
        if not isinstance(request, dict) or not isinstance(request.get("location"), str):
            self.log.warn(
                "update_firmware refused: no request with a location: {args}", args=_cut(args)
            )
            return "Rejected"
        requestId = request.get("request_id", UNSIGNED)
        if type(requestId) is not int:
            self.log.warn("update_firmware refused: request_id {id}", id=_cut(requestId))
            return "Rejected"
        if self._firmware is not None:
            self._abandonFirmware(self._firmware, "a new update_firmware arrived")
        run = _FirmwareRun(requestId)
        self._firmware = run
        run.image = self.receivers.newImage(f"firmware-{requestId}-{int(self.clock.seconds())}")
        started = self.clock.seconds()
        deadline = started + self.settings.firmware_download_timeout
        addresses = await DeferredList(
            [Deferred.fromCoroutine(self._addresses(b)) for b in self._boards()]
        )
        requests: dict[str, dict[str, Any]] = {}
        answers: dict[str, str] = {}
        for board, (_, where) in zip(self._boards(), addresses, strict=True):
            if run.abandoned:
                return "AcceptedCanceled"
            if where is None:
                answers[board.name] = "Rejected"
                self.log.warn("update_firmware: {board} is not connected", board=board.name)
                continue
            myIp, peer = where
            grant = self.receivers.grantDownload(board.name, peer, run.image, requestId, deadline)
            grant.holdEnd(lambda board=board: self._held(run, board.name))  # type: ignore[misc]
            run.grants.append(grant)
            run.grantOf[board.name] = grant
            requests[board.name] = {**request, "location": grant.url(myIp)}
        replies = await fanOut(
            self.clock,
            {
                b.name: (
                    lambda b=b: self._callBoard(  # type: ignore[misc]
                        b, "update_firmware", {"firmware_update_request": requests[b.name]}
                    )
                )
                for b in self._boards()
                if b.name in requests
            },
            self.settings.command_timeout,
        )
        for name, reply in replies.items():
            if reply.ok and reply.value in FIRMWARE_ANSWERS:
                answers[name] = reply.value
            else:
                answers[name] = "Rejected"
                self.log.warn(
                    "update_firmware: {board} answered {answer}: taken as Rejected",
                    board=name,
                    answer=_cut(reply.value) if reply.ok else reply.error,
                )
        answer = worstAnswer([answers[b.name] for b in self._boards()])
        self.log.info(
            "update_firmware {id}: answers {answers}: {answer}",
            id=requestId,
            answers=", ".join(f"{b.name} {answers[b.name]}" for b in self._boards()),
            answer=answer,
        )
        if run.abandoned:
            return answer
        if answer not in _ACCEPTING:
            self._abandonFirmware(run, f"the station answered {answer}")
            return answer
        names = [b.name for b in self._boards()]
        retries, interval = self._attempts(request)
        run.hold = InstallHold(
            self.clock,
            names,
            requestId,
            self.settings.install_hold_timeout,
            started + self.settings.installHoldEnd,
            lambda ready, missing: self._release(run, ready, missing),
            attempts=retries,
        )
        run.status = FirmwareStatus(
            self.clock,
            names,
            self._boards()[0].name,
            requestId,
            self._publishFirmware,
            self.settings.silence_timeout,
            onBoard=run.hold.boardStatus,
            # a board taken as failed (silent) has failed, whatever its retries
            onTaken=lambda board, _status: run.hold.failed(board) if run.hold else None,
        )
        early, run.early = run.early, []
        if requestId == UNSIGNED:
            # every unsigned update is -1: a final status that came before the
            # answers may be the last update's (its revoked downloads' failures)
            early = [
                (name, value)
                for name, value in early
                if not (isinstance(value, dict) and value.get("firmware_update_status") in FINAL)
            ]
        for name, value in early:
            run.status.received(name, value)
        run.fetch = self.transfers.fetch(request["location"], run.image, retries, interval)
        run.fetch.addCallbacks(
            lambda size: self.log.info(
                "update_firmware {id}: {size} bytes fetched from the backend",
                id=requestId,
                size=size,
            ),
            lambda f: (
                None
                if f.check(CancelledError)
                else self.log.warn(
                    "update_firmware {id}: the image cannot be fetched: {error}",
                    id=requestId,
                    error=f.getErrorMessage()[:200],
                )
            ),
        )
        return answer

    def _abandonFirmware(self, run: _FirmwareRun, why: str, handOn: bool = True) -> None:
        if run.abandoned:
            return
        run.abandoned = True
        if run.allowWanted and handOn:
            # nothing is held any more: as without a hold
            run.allowWanted = False
            Deferred.fromCoroutine(self._allowAll({})).addErrback(
                lambda f: self.log.failure("allow_firmware_installation failed", f)
            )
        self.log.info("update_firmware {id} abandoned: {why}", id=run.requestId, why=why)
        if run.hold is not None:
            run.hold.abandon()
        if run.status is not None:
            run.status.abandon()
        for grant in run.grants:
            grant.revoke()
        if run.fetch is not None and not run.fetch.called:
            run.fetch.cancel()
        elif run.fetch is None and run.image is not None:
            run.image.fail(why)
        if self._firmware is run:
            self._firmware = None

    def _held(self, run: _FirmwareRun, board: str) -> None:
        """C{board} received the whole image but its last byte: it waits for the others."""
        # (the hold exists before the fetch starts: no board is held earlier)
        if run.abandoned or run.hold is None or run.status is None:
            return
        if run.hold.open:
            return
        self.log.info(
            "update_firmware {id}: {board} has the image and waits for {others}",
            id=run.requestId,
            board=board,
            others=", ".join(b for b in run.hold.waitingFor() if b != board) or "no board",
        )
        first = run.hold.firstReady is None
        run.status.pause(board)
        run.hold.hasImage(board)
        if first and not run.hold.open:
            # from now on the hold's deadline bounds the wait for the others,
            # not their silence (a board downloading slowly reports nothing)
            for other in run.hold.waitingFor():
                run.status.pause(other)

    def _release(self, run: _FirmwareRun, ready: list[str], missing: list[str]) -> None:
        """The hold ended: the late boards are cut off, the others finish their downloads."""
        if run.abandoned:
            return
        status = run.status
        for name in missing:
            grant = run.grantOf.get(name)
            if grant is not None:
                grant.revoke()
            if status is not None:
                status.takeAs(
                    name,
                    "DownloadFailed",
                    "still had no image when the others stopped waiting",
                )
        for name, grant in run.grantOf.items():
            if name in ready:
                grant.release()
            elif name not in missing:
                # failed: it is not to finish its download and install alone
                grant.revoke()
        if status is not None:
            for name in run.grantOf:
                if name not in missing:
                    status.resume(name)
        if run.allowWanted:
            run.allowWanted = False
            self.log.info(
                "update_firmware {id}: allow_firmware_installation handed on now",
                id=run.requestId,
            )
            Deferred.fromCoroutine(self._allowAll({})).addErrback(
                lambda f: self.log.failure("allow_firmware_installation failed", f)
            )

    def _firmwareStatus(self, board: Board) -> Callable[[Any], None]:
        def received(value: Any) -> None:
            run = self._firmware
            if run is None:
                return
            if run.status is not None:
                run.status.received(board.name, value)
            elif len(run.early) < 100:
                run.early.append((board.name, value))

        return received

    def _publishFirmware(self, status: str, requestId: int) -> None:
        self.module.publishVar(
            SYSTEM,
            "firmware_update_status",
            {"firmware_update_status": status, "request_id": requestId},
        )

    # -- logs -------------------------------------------------------------------

    async def _uploadLogs(self, args: dict[str, Any]) -> dict[str, Any]:
        request = args.get("upload_logs_request")
        if not isinstance(request, dict) or not isinstance(request.get("location"), str):
            self.log.warn(
                "upload_logs refused: no request with a location: {args}", args=_cut(args)
            )
            return {"upload_logs_status": "Rejected"}
        callerId = request.get("request_id", -1)
        if type(callerId) is not int:
            callerId = -1
        status = "Accepted"
        if self._logRun is not None:
            self._cancelLogs(self._logRun, publish=True)
            status = "AcceptedCanceled"
        self._logRequests += 1
        name = archiveName(request.get("type"), self.clock.seconds())
        run = _LogRun(callerId, self._logRequests, name)
        self._logRun = run
        self._publishLog(run, "Uploading")
        run.deferred = Deferred.fromCoroutine(self._collect(run, request))
        run.deferred.addErrback(self._logRunFailed, run)
        return {"upload_logs_status": status, "file_name": name}

    def _logRunFailed(self, failure: Failure, run: _LogRun) -> None:
        if failure.check(CancelledError) or run.canceled:
            return
        if failure.check(OSError):
            self.log.error(
                "upload_logs {id} failed: {problem}",
                id=run.callerRequestId,
                problem=failure.getErrorMessage(),
            )
        else:
            self.log.failure("upload_logs {id} failed", failure, id=run.callerRequestId)
        # the caller always hears the end of its request
        self.module.publishVar(
            SYSTEM, "log_status", {"log_status": "UploadFailure", "request_id": run.callerRequestId}
        )
        if self._logRun is run:
            self._logRun = None

    def _cancelLogs(self, run: _LogRun, publish: bool) -> None:
        run.canceled = True
        if self._logRun is run:
            self._logRun = None
        if run.collection is not None:
            run.collection.cancel()
        self.log.info("upload_logs {id} ({name}) canceled", id=run.callerRequestId, name=run.name)
        if publish:
            self.module.publishVar(
                SYSTEM,
                "log_status",
                {"log_status": "AcceptedCanceled", "request_id": run.callerRequestId},
            )
        if run.deferred is not None:
            run.deferred.cancel()

    def _publishLog(self, run: _LogRun, status: str) -> None:
        if self._logRun is run:
            self.module.publishVar(
                SYSTEM, "log_status", {"log_status": status, "request_id": run.callerRequestId}
            )

    def _logStatus(self, board: Board) -> Callable[[Any], None]:
        def received(value: Any) -> None:
            run = self._logRun
            if run is not None and run.collection is not None:
                run.collection.received(board.name, value)

        return received

    async def _askBoard(self, run: _LogRun, board: Board, request: dict[str, Any]) -> None:
        assert run.collection is not None
        collection = run.collection
        where = await self._addresses(board)
        if run.canceled:
            return
        if where is None:
            collection.settle(board.name, NOT_CONNECTED, "no link")
            return
        myIp, peer = where
        settings = self.settings
        grant = self.receivers.grantUpload(
            board.name,
            peer,
            run.requestId,
            self.clock.seconds() + settings.incoming_upload_timeout,
            settings.max_upload_bytes,
        )
        run.grants[board.name] = grant
        boardRequest = {
            **request,
            "location": grant.urlFor(settings.upload_url_template, myIp),
            "request_id": run.requestId,
            "retries": 1,
        }
        answer = await callOne(
            self.clock,
            lambda: self._callBoard(board, "upload_logs", {"upload_logs_request": boardRequest}),
            settings.command_timeout,
        )
        if answer.ok:
            collection.answered(board.name, answer.value)
        else:
            collection.settle(board.name, FAILED, f"upload_logs failed: {answer.error}")

    def _checkLinks(self, run: _LogRun) -> Deferred[Any]:
        collection = run.collection
        assert collection is not None and self.topology is not None
        checks = []
        for board in self.topology.satellites:
            if board.name in collection.outcomes or board.satelliteIndex is None:
                continue
            index = board.satelliteIndex

            def seen(answer: Answer, board: Board = board) -> None:
                if not (answer.ok and answer.value is True):
                    collection.settle(board.name, NOT_CONNECTED, "the link went down")

            checks.append(
                callOne(
                    self.clock,
                    lambda index=index: self.module.call(SATELLITE, "is_connected", {}, index),  # type: ignore[misc]
                    self.settings.command_timeout,
                ).addCallback(seen)
            )
        return DeferredList(checks)

    async def _collect(self, run: _LogRun, request: dict[str, Any]) -> None:
        settings = self.settings
        boards = self._boards()
        run.collection = LogCollection(
            self.clock, [b.name for b in boards], run.requestId, settings.incoming_upload_timeout
        )
        checker = LoopingCall(self._checkLinks, run)
        checker.clock = self.clock
        archive: str | None = None
        incoming: list[str] = []
        collection = run.collection

        def askFailed(failure: Failure, board: Board) -> None:
            collection.settle(board.name, FAILED, failure.getErrorMessage()[:200])

        try:
            for board in boards:
                Deferred.fromCoroutine(self._askBoard(run, board, request)).addErrback(
                    askFailed, board
                )
            checker.start(settings.link_check_interval, now=False)
            outcomes = await run.collection.whenComplete()
            checker.stop()
            for grant in run.grants.values():
                grant.revoke()
            files: dict[str, list[str]] = {}
            for name, grant in run.grants.items():
                files[name] = list(await grant.whenDone())
                incoming.extend(files[name])
            contributions = [
                BoardLogs(
                    "main" if board.isMain else board.name,
                    board.name,
                    outcomes[board.name],
                    run.collection.details.get(board.name, ""),
                    files.get(board.name, []),
                )
                for board in boards
            ]
            directory = settings.incoming_uploads_dir or tempfile.gettempdir()
            os.makedirs(directory, mode=0o700, exist_ok=True)
            archive = os.path.join(directory, run.name)
            _, manifest = await self.packer.pack(
                directory,
                run.name,
                contributions,
                {
                    "type": request.get("type") if isinstance(request.get("type"), str) else None,
                    "request_id": run.callerRequestId,
                    "created_epoch": self.clock.seconds(),
                    "aggregator": self.module.moduleId,
                },
            )
            self.lastManifest = manifest
            self.log.info(
                "upload_logs {id}: {name} packed: {boards}; missing: {missing}",
                id=run.callerRequestId,
                name=run.name,
                boards=", ".join(f"{b.moduleId} {b.outcome}" for b in contributions),
                missing=", ".join(f"{m['module_id']} ({m['reason']})" for m in manifest["missing"])
                or "none",
            )
            retries, interval = self._attempts(request)
            try:
                await self.transfers.upload(archive, request["location"], retries, interval)
            except CancelledError:
                raise
            except Exception as e:
                self.log.warn(
                    "upload_logs {id}: {name} not uploaded: {error}",
                    id=run.callerRequestId,
                    name=run.name,
                    error=str(e)[:200],
                )
                self._publishLog(run, "UploadFailure")
            else:
                self._publishLog(run, "Uploaded")
        finally:
            if checker.running:
                checker.stop()
            if self._logRun is run:
                self._logRun = None
            self._cleanUp(run, incoming, archive)

    def _cleanUp(self, run: _LogRun, incoming: list[str], archive: str | None) -> None:
        """Revoke the grants and remove every file of C{run}, in the background."""
        if run.collection is not None:
            run.collection.cancel()
        pending: list[Deferred[Any]] = []
        for grant in run.grants.values():
            grant.revoke()
        paths = list(incoming) + ([archive] if archive else [])

        def removeAll(_: object) -> Deferred[None]:
            return self.packer.remove(paths)

        if not incoming:
            # the files were never collected (canceled): ask the grants
            for grant in run.grants.values():
                pending.append(grant.whenDone().addCallback(paths.extend))
        DeferredList(pending).addCallback(removeAll).addErrback(
            lambda f: self.log.failure(
                "upload_logs {id}: cleaning up failed", f, id=run.callerRequestId
            )
        )

    # -- the other commands -------------------------------------------------------

    async def _allowFirmwareInstallation(self, args: dict[str, Any]) -> None:
        run = self._firmware
        if run is not None and not run.abandoned and not (run.hold is not None and run.hold.open):
            # handed on when the hold ends (_release)
            run.allowWanted = True
            self.log.info(
                "allow_firmware_installation kept until every board has the image of update {id}",
                id=run.requestId,
            )
            return None
        await self._allowAll(args)
        return None

    async def _allowAll(self, args: dict[str, Any]) -> None:
        answers = await self._fanOut("allow_firmware_installation", lambda b: dict(args))
        self._logRefusals("allow_firmware_installation", answers)

    async def _isResetAllowed(self, args: dict[str, Any]) -> bool:
        answers = await self._fanOut("is_reset_allowed", lambda b: dict(args))
        return self._allTrue("is_reset_allowed", answers)

    async def _setSystemTime(self, args: dict[str, Any]) -> bool:
        answers = await self._fanOut("set_system_time", lambda b: dict(args))
        return self._allTrue("set_system_time", answers)

    async def _reset(self, args: dict[str, Any]) -> None:
        assert self.topology is not None
        timeout = self.settings.command_timeout
        satellites = await fanOut(
            self.clock,
            {
                b.name: (lambda b=b: self._callBoard(b, "reset", dict(args)))  # type: ignore[misc]
                for b in self.topology.satellites
            },
            timeout,
        )
        self._logRefusals("reset", satellites)
        main = self.topology.main
        answer = await callOne(
            self.clock, lambda: self._callBoard(main, "reset", dict(args)), timeout
        )
        self._logRefusals("reset", {main.name: answer})
        return None

    async def _getBootReason(self, args: dict[str, Any]) -> str:
        answers = await self._fanOut("get_boot_reason", lambda b: dict(args))
        for name, answer in answers.items():
            reason = answer.value if answer.ok and isinstance(answer.value, str) else "Unknown"
            self.bootReasons[name] = reason[:64]
            self.log.info(
                "boot reason of {board}: {reason}{error}",
                board=name,
                reason=reason[:64],
                error="" if answer.ok else f" ({answer.error})",
            )
        assert self.topology is not None
        return self.bootReasons[self.topology.main.name]

    def _allTrue(self, command: str, answers: dict[str, Answer]) -> bool:
        self._logRefusals(command, answers)
        return all(a.ok and a.value is True for a in answers.values())

    def _logRefusals(self, command: str, answers: dict[str, Answer]) -> None:
        for name, answer in answers.items():
            if not answer.ok:
                self.log.warn(
                    "{command}: {board} failed: {error}",
                    command=command,
                    board=name,
                    error=answer.error,
                )
            elif answer.value is False:
                self.log.info("{command}: {board} said no", command=command, board=name)
