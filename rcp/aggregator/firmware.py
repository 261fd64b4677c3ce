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
board whose last status is a scheduled or paused one is not silent.
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

Publish = Callable[[str, int], None]
"""C{publish(status, requestId)}: the station's status."""


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
    ) -> None:
        if mainBoard not in boards:
            raise ValueError(f"the main board {mainBoard} is not among {list(boards)}")
        self.clock = clock
        self.boards = tuple(boards)
        self.mainBoard = mainBoard
        self.requestId = requestId
        self._publish = publish
        self.silenceTimeout = silenceTimeout
        #: the boards that reported each status
        self.reported: dict[str, set[str]] = {}
        #: the last status of each board
        self.last: dict[str, str] = {}
        #: statuses passed on, in order
        self.published: list[str] = []
        #: a final status was passed on (or the update was abandoned)
        self.finished = False
        self._timers: dict[str, IDelayedCall] = {}
        for board in self.boards:
            self._timers[board] = clock.callLater(
                max(0.0, startsIn) + silenceTimeout, self._silent, board
            )

    # -- input ----------------------------------------------------------------

    def received(self, board: str, value: Any) -> None:
        """A C{firmware_update_status} published by C{board}."""
        if self.finished or board not in self.boards:
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
            self.log.info(
                "firmware status {status} of {board} ignored: request_id {got}, not {want}",
                status=status,
                board=board,
                got=_cut(requestId),
                want=self.requestId,
            )
            return
        self._board(board, status)

    def abandon(self) -> None:
        """The update is over for the caller (a new one, or a refusal): pass nothing on."""
        self.finished = True
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
        if status in _DONE or status in WAITING:
            return
        self._timers[board] = self.clock.callLater(self.silenceTimeout, self._silent, board)

    def _silent(self, board: str) -> None:
        self._timers.pop(board, None)
        if self.finished:
            return
        downloaded = board in self.reported.get("Downloaded", set())
        failure = "InstallationFailed" if downloaded else "DownloadFailed"
        self.log.warn(
            "firmware update {requestId}: {board} reported nothing for {seconds:.0f} s"
            " (last: {last}): taken as {failure}",
            requestId=self.requestId,
            board=board,
            seconds=self.silenceTimeout,
            last=self.last.get(board, "nothing"),
            failure=failure,
        )
        self._board(board, failure)

    def _stopTimers(self) -> None:
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()
