"""
One firmware status for the whole station, from the statuses of its boards.

Upstream's rules (see C{upstream-wire-protocol.md}), by status:

  - L{MAIN_ONLY}: passed on only when the main board reports it;
  - L{ALL_BOARDS}: passed on once every board has reported it;
  - L{FIRST_ONLY}: passed on at once, the first time only; all but
    C{Downloading} are L{FINAL}: nothing more is passed on for that update;
  - C{InvalidSignature} while some but not all boards reported
    C{Downloaded} passes C{Downloaded} on first.

Fixed here: only statuses of the current update's C{request_id} count (an
unsigned update's are -1); the state is fresh for every update; and a board
that reports nothing for C{silenceTimeout} seconds is taken as failed
(C{DownloadFailed} before it reported C{Downloaded}, else
C{InstallationFailed}), so the station's status never waits forever.  A
board whose last status is a scheduled or paused one is not silent, nor is
a board the L{InstallHold} keeps waiting (L{FirmwareStatus.pause}).

L{InstallHold} is rcp's own: no board may install before every board has
the whole image (or has failed), because any board's restart restarts the
station and cuts the downloads still running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: request_id of an unsigned (OCPP 1.6) update
UNSIGNED: Final = -1

MAIN_ONLY: Final = frozenset(
    {
        "DownloadScheduled",
        "DownloadPaused",
        "InstallRebooting",
        "InstallScheduled",
        "SignatureVerified",
    }
)
ALL_BOARDS: Final = frozenset({"Downloaded", "Idle", "Installing", "Installed"})
FIRST_ONLY: Final = frozenset(
    {
        "Downloading",
        "DownloadFailed",
        "InstallationFailed",
        "InstallVerificationFailed",
        "InvalidSignature",
    }
)
FINAL: Final = FIRST_ONLY - {"Downloading"}
#: a board waiting on purpose: not silent
WAITING: Final = frozenset({"DownloadScheduled", "DownloadPaused", "InstallScheduled"})
#: the board's own update is over
_DONE: Final = FINAL | {"Installed"}
#: a board that reports one of these has the whole image
HAS_IMAGE: Final = frozenset(
    {
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "Installing",
        "InstallRebooting",
        "Installed",
    }
)

Publish = Callable[[str, int], None]
"""C{publish(status, requestId)}: the station's status."""

BoardStatus = Callable[[str, str], None]
"""C{seen(board, status)}: one board's status of the current update."""

Release = Callable[[list[str], list[str]], None]
"""C{release(ready, missing)}: the boards that may install, those taken as failed."""


def _cut(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class FirmwareStatus:
    """
    The status aggregation of one firmware update.

    @param clock: for the silence timers.
    @param boards: the board names taking part, the main board among them.
    @param mainBoard: the main board's name.
    @param requestId: the update's C{request_id} (-1: unsigned).
    @param publish: called with each status for the caller.
    @param silenceTimeout: seconds without a status after which a board
        counts as failed.
    @param startsIn: seconds until the boards start (a C{retrieve_timestamp}
        in the future); the silence timers start then.
    @param onBoard: called with every status of a board of this update
        (C{request_id} checked), the ones the silence stands for too, even
        after the station's final status: for the L{InstallHold}.
    @param onTaken: if given, called instead of C{onBoard} for the statuses
        a board is taken to have (L{takeAs}: silence, the hold's deadline).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        boards: Sequence[str],
        mainBoard: str,
        requestId: int,
        publish: Publish,
        silenceTimeout: float,
        startsIn: float = 0.0,
        onBoard: BoardStatus | None = None,
        onTaken: BoardStatus | None = None,
    ) -> None:
        if mainBoard not in boards:
            raise ValueError(f"the main board {mainBoard} is not among {list(boards)}")
        self.clock = clock
        self.boards = tuple(boards)
        self.mainBoard = mainBoard
        self.requestId = requestId
        self._publish = publish
        self._onBoard = onBoard
        self._onTaken = onTaken
        self.silenceTimeout = silenceTimeout
        #: the boards that reported each status
        self.reported: dict[str, set[str]] = {}
        #: the last status of each board
        self.last: dict[str, str] = {}
        #: statuses passed on, in order
        self.published: list[str] = []
        #: a final status was passed on (or the update was abandoned)
        self.finished = False
        self._abandoned = False
        #: boards kept waiting on purpose (not silent)
        self.paused: set[str] = set()
        self._timers: dict[str, IDelayedCall] = {}
        for board in self.boards:
            self._timers[board] = clock.callLater(
                max(0.0, startsIn) + silenceTimeout, self._silent, board
            )

    # -- input ----------------------------------------------------------------

    def received(self, board: str, value: Any) -> None:
        """A C{firmware_update_status} published by C{board}."""
        if self._abandoned or board not in self.boards:
            return
        if not isinstance(value, dict):
            self.log.warn(
                "firmware status of {board} dropped: not an object: {value}",
                board=board,
                value=_cut(value),
            )
            return
        status, requestId = value.get("firmware_update_status"), value.get("request_id")
        if status not in MAIN_ONLY | ALL_BOARDS | FIRST_ONLY:
            self.log.warn(
                "firmware status of {board} dropped: unknown status {status}",
                board=board,
                status=_cut(status),
            )
            return
        if type(requestId) is not int or requestId != self.requestId:
            if not self.finished:
                self.log.info(
                    "firmware status {status} of {board} ignored: request_id {got}, not {want}",
                    status=status,
                    board=board,
                    got=_cut(requestId),
                    want=self.requestId,
                )
            return
        self._seen(board, status)
        if not self.finished:
            self._board(board, status)

    def takeAs(self, board: str, status: str, why: str) -> None:
        """C{board} is taken to have reported C{status} (it is not waited for any more)."""
        if self._abandoned or board not in self.boards:
            return
        self.paused.discard(board)
        self.log.warn(
            "firmware update {requestId}: {board} {why}: taken as {status}",
            requestId=self.requestId,
            board=board,
            why=why,
            status=status,
        )
        if self._onTaken is not None:
            self._hand(self._onTaken, board, status)
        else:
            self._seen(board, status)
        if not self.finished:
            self._board(board, status)

    def pause(self, board: str) -> None:
        """C{board} is kept waiting on purpose: it is not silent until L{resume}."""
        if board not in self.boards:
            return
        self.paused.add(board)
        timer = self._timers.pop(board, None)
        if timer is not None and timer.active():
            timer.cancel()

    def resume(self, board: str) -> None:
        """C{board} goes on: its silence counts again from now."""
        if board not in self.paused:
            return
        self.paused.discard(board)
        if not self.finished:
            self._rearm(board, self.last.get(board, "Downloading"))

    def abandon(self) -> None:
        """The update is over for the caller (a new one, or a refusal): pass nothing on."""
        self.finished = True
        self._abandoned = True
        self._stopTimers()

    # -- the rules ------------------------------------------------------------

    def _board(self, board: str, status: str) -> None:
        self.last[board] = status
        self.reported.setdefault(status, set()).add(board)
        self._rearm(board, status)
        if status in MAIN_ONLY:
            if board == self.mainBoard:
                self._pass(status)
        elif status in ALL_BOARDS:
            if self.reported[status] >= set(self.boards) and status not in self.published:
                self._pass(status)
                if status == "Installed":
                    self._finish()
        else:
            if status in self.published:
                return
            if status == "InvalidSignature":
                downloaded = self.reported.get("Downloaded", set())
                if downloaded and "Downloaded" not in self.published:
                    self._pass("Downloaded")
            self._pass(status)
            if status in FINAL:
                self._finish()

    def _seen(self, board: str, status: str) -> None:
        if self._onBoard is not None:
            self._hand(self._onBoard, board, status)

    def _hand(self, to: BoardStatus, board: str, status: str) -> None:
        try:
            to(board, status)
        except Exception:
            self.log.failure(
                "handing on the firmware status {status} of {board} failed",
                status=status,
                board=board,
            )

    def _pass(self, status: str) -> None:
        self.published.append(status)
        try:
            self._publish(status, self.requestId)
        except Exception:
            self.log.failure("publishing the firmware status {status} failed", status=status)

    def _finish(self) -> None:
        self.finished = True
        self._stopTimers()

    # -- silence --------------------------------------------------------------

    def _rearm(self, board: str, status: str) -> None:
        timer = self._timers.pop(board, None)
        if timer is not None and timer.active():
            timer.cancel()
        if status in _DONE or status in WAITING or board in self.paused:
            return
        self._timers[board] = self.clock.callLater(self.silenceTimeout, self._silent, board)

    def _silent(self, board: str) -> None:
        self._timers.pop(board, None)
        if self.finished:
            return
        downloaded = board in self.reported.get("Downloaded", set())
        failure = "InstallationFailed" if downloaded else "DownloadFailed"
        self.takeAs(
            board,
            failure,
            f"reported nothing for {self.silenceTimeout:.0f} s"
            f" (last: {self.last.get(board, 'nothing')})",
        )

    def _stopTimers(self) -> None:
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()


class InstallHold:
    """
    No board installs before every board that took the update has the
    whole image, or has failed: the first board to install restarts, and
    with it the whole station, which cuts the downloads still running.

    The hold knows which boards have the image (L{hasImage}: the main
    board's receiver holds a board's download just before its last byte,
    or the board reported a status of L{HAS_IMAGE}) and which failed
    (L{failed}, or their statuses through L{boardStatus}).  It ends once,
    calling C{release(ready, missing)}:

      - as soon as every board has the image or failed: C{missing} is
        empty;
      - at its deadline, C{holdTimeout} seconds after the first board had
        the image (at C{until} at the latest, the download grants' end):
        C{missing} lists the boards still without the image, which the
        caller reports failed; the others install.

    @param clock: for the deadline.
    @param boards: every board taking part.
    @param requestId: the update's C{request_id}, for the log.
    @param holdTimeout: seconds the boards that have the image wait for
        the others, from the first of them.
    @param until: the clock's time by which the hold ends anyway.
    @param release: called once when the hold ends.
    @param attempts: how often a board's System tries its download: it has
        failed at its last C{DownloadFailed} (a silence, or any other final
        status, at once).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        boards: Sequence[str],
        requestId: int,
        holdTimeout: float,
        until: float,
        release: Release,
        attempts: int = 1,
    ) -> None:
        self.clock = clock
        #: a board's System tries the download this often: a failed attempt
        #: before the last is not the board's failure
        self.attempts = max(1, attempts)
        self._downloadFailures: dict[str, int] = {}
        self.boards = tuple(boards)
        self.requestId = requestId
        self.holdTimeout = holdTimeout
        self.until = until
        self._release = release
        #: the boards that have the whole image
        self.ready: set[str] = set()
        #: the boards whose update failed
        self.failedBoards: set[str] = set()
        #: when the first board had the image
        self.firstReady: float | None = None
        #: the hold ended (released, or abandoned)
        self.open = False
        #: the boards the deadline took as failed
        self.missing: list[str] = []
        self._timer: IDelayedCall | None = clock.callLater(
            max(0.0, until - clock.seconds()), self._deadline
        )

    # -- input ----------------------------------------------------------------

    def boardStatus(self, board: str, status: str) -> None:
        """A status of C{board} for this update (see L{FirmwareStatus}'s C{onBoard})."""
        if status in HAS_IMAGE:
            self.hasImage(board)
        elif status == "DownloadFailed":
            count = self._downloadFailures.get(board, 0) + 1
            self._downloadFailures[board] = count
            if count >= self.attempts:
                self.failed(board)
        elif status in FINAL:
            self.failed(board)

    def hasImage(self, board: str) -> None:
        """C{board} has the whole image, bar what the receiver holds back."""
        if self.open or board not in self.boards or board in self.ready:
            return
        self.failedBoards.discard(board)
        self.ready.add(board)
        if self.firstReady is None:
            self.firstReady = self.clock.seconds()
            deadline = min(self.firstReady + self.holdTimeout, self.until)
            self._schedule(deadline)
            self.log.info(
                "firmware update {requestId}: {board} is the first board with the image;"
                " the others have {seconds:.0f} s to catch up",
                requestId=self.requestId,
                board=board,
                seconds=max(0.0, deadline - self.firstReady),
            )
        self._check()

    def failed(self, board: str) -> None:
        """C{board}'s update failed: it is not waited for."""
        if self.open or board not in self.boards or board in self.failedBoards:
            return
        self.ready.discard(board)
        self.failedBoards.add(board)
        self._check()

    def abandon(self) -> None:
        """The update was abandoned: no release."""
        self.open = True
        self._cancel()

    # -- the rule -------------------------------------------------------------

    def waitingFor(self) -> list[str]:
        """The boards that have neither the image nor failed, in board order."""
        return [b for b in self.boards if b not in self.ready and b not in self.failedBoards]

    def _check(self) -> None:
        if not self.waitingFor():
            self._end([])

    def _deadline(self) -> None:
        self._timer = None
        if self.open:
            return
        missing = self.waitingFor()
        waited = (
            f"{self.clock.seconds() - self.firstReady:.0f} s after the first board had the image"
            if self.firstReady is not None
            else "at the end of the download grants"
        )
        self.log.warn(
            "firmware update {requestId}: {missing} still without the image {waited}:"
            " not waited for any more",
            requestId=self.requestId,
            missing=", ".join(missing),
            waited=waited,
        )
        self._end(missing)

    def _end(self, missing: list[str]) -> None:
        self.open = True
        self.missing = missing
        self._cancel()
        ready = [b for b in self.boards if b in self.ready]
        self.log.info(
            "firmware update {requestId}: installation may begin on {ready}{failed}",
            requestId=self.requestId,
            ready=", ".join(ready) or "no board",
            failed=(
                f" (failed: {', '.join(b for b in self.boards if b not in self.ready)})"
                if len(ready) < len(self.boards)
                else ""
            ),
        )
        try:
            self._release(ready, missing)
        except Exception:
            self.log.failure(
                "releasing firmware update {requestId} failed", requestId=self.requestId
            )

    def _schedule(self, when: float) -> None:
        self._cancel()
        self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._deadline)

    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
