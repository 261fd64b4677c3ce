"""
The collection of one log upload request from every board.

Each board is asked to upload to the main board's receivers and ends in one
L{Outcome}: L{UPLOADED} when it reported a final C{Uploaded}, L{REFUSED}
when it did not accept the request, L{FAILED} when it reported a failure
(or its command failed), L{NOT_CONNECTED} when its link is down, and
L{TIMED_OUT} when it had not finished by the collection's deadline
(C{incoming_upload_timeout}).  The collection is complete when every board
has an outcome.

Boards are asked with a request id of the collection's own (not the
caller's), so a status of an earlier, cancelled collection never counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

UPLOADED: Final = "uploaded"
NOT_CONNECTED: Final = "not connected"
REFUSED: Final = "refused"
FAILED: Final = "failed"
TIMED_OUT: Final = "timed out"

Outcome = str

#: what a board's System publishes when its upload failed (collapsed by upstream)
FAILURES: Final = frozenset(
    {"UploadFailure", "PermissionDenied", "BadMessage", "NotSupportedOperation"}
)
#: still under way
PROGRESS: Final = frozenset({"Uploading", "Idle"})


def _cut(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class LogCollection:
    """
    The boards' part of one upload_logs request.

    @param clock: for the deadline.
    @param boards: the boards' names.
    @param requestId: the request id the boards are asked with.
    @param timeout: seconds until boards still uploading are L{TIMED_OUT}.
    @param onBoardDone: called with a board's name when it got its outcome.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        boards: Sequence[str],
        requestId: int,
        timeout: float,
        onBoardDone: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.boards = tuple(boards)
        self.requestId = requestId
        #: the outcome of each board that has one
        self.outcomes: dict[str, Outcome] = {}
        #: why, in a few words, for the manifest
        self.details: dict[str, str] = {}
        self._onBoardDone = onBoardDone
        self._done: Deferred[dict[str, Outcome]] = Deferred()
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._timedOut)
        self.timeout = timeout

    @property
    def complete(self) -> bool:
        return len(self.outcomes) == len(self.boards)

    def whenComplete(self) -> Deferred[dict[str, Outcome]]:
        """Fires with every board's outcome once each has one (the deadline at the latest)."""
        return self._done

    # -- what happened ----------------------------------------------------------

    def answered(self, board: str, answer: Any) -> None:
        """The board's answer to C{upload_logs}."""
        status = answer.get("upload_logs_status") if isinstance(answer, dict) else None
        if status in ("Accepted", "AcceptedCanceled"):
            return
        self.settle(board, REFUSED, f"answered {_cut(status if status is not None else answer)}")

    def received(self, board: str, value: Any) -> None:
        """A C{log_status} published by C{board}."""
        if board not in self.boards or board in self.outcomes:
            return
        if not isinstance(value, dict):
            self.log.warn(
                "log status of {board} dropped: not an object: {value}",
                board=board,
                value=_cut(value),
            )
            return
        status, requestId = value.get("log_status"), value.get("request_id")
        if type(requestId) is not int or requestId != self.requestId:
            self.log.info(
                "log status {status} of {board} ignored: request_id {got}, not {want}",
                status=_cut(status),
                board=board,
                got=_cut(requestId),
                want=self.requestId,
            )
            return
        if status == "Uploaded":
            self.settle(board, UPLOADED, "uploaded")
        elif status in FAILURES or status == "AcceptedCanceled":
            self.settle(board, FAILED, f"reported {status}")
        elif status not in PROGRESS:
            self.log.warn(
                "log status of {board} dropped: unknown status {status}",
                board=board,
                status=_cut(status),
            )

    def settle(self, board: str, outcome: Outcome, detail: str) -> None:
        """Give C{board} its outcome (the first one counts)."""
        if board not in self.boards or board in self.outcomes or self._done.called:
            return
        self.outcomes[board] = outcome
        self.details[board] = detail
        self.log.info(
            "log collection {requestId}: {board}: {outcome} ({detail})",
            requestId=self.requestId,
            board=board,
            outcome=outcome,
            detail=detail,
        )
        if self._onBoardDone is not None:
            try:
                self._onBoardDone(board)
            except Exception:
                self.log.failure("log collection: onBoardDone failed for {board}", board=board)
        if self.complete:
            self._complete()

    def cancel(self) -> None:
        """Stop the deadline; L{whenComplete} never fires."""
        self._stopTimer()

    # -- internals --------------------------------------------------------------

    def _timedOut(self) -> None:
        self._timer = None
        for board in self.boards:
            if board not in self.outcomes:
                self.settle(board, TIMED_OUT, f"no final status within {self.timeout:.0f} s")

    def _complete(self) -> None:
        self._stopTimer()
        if not self._done.called:
            self._done.callback(dict(self.outcomes))

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
