"""
The agent's queue of events for the controller, answered by long polls.

``retrieve_vars_and_errors`` answers at once when events are queued, and
otherwise waits up to C{holdTime} for the next one: a variable reaches the
main board within about one round trip, an idle link costs one call per
C{holdTime}, and a C++ controller (which polls every 25 ms and waits up to
30 s) is served just the same.

Order is kept: one answer holds either variables or errors, the longest run
of one kind at the head of the queue, so no consumer can see a variable and
an error in another order than they happened, whichever list it reads
first.  A queued measurement superseded by a newer one of the same variable
is dropped (L{Var.coalesce}); events never are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .table import dumps

#: upstream's cap: more queued events than this reset the board
DEFAULT_LIMIT = 1000
#: how long an empty poll is held, seconds
DEFAULT_HOLD = 1.0

EMPTY = dumps({"errors": [], "vars": []})


@dataclass(slots=True)
class _Entry:
    kind: str  # "vars" or "errors"
    item: dict[str, Any]
    key: tuple[str, str] | None  # (interface, var) of a coalescable var


class EventQueue:
    """
    @param onOverflow: called once when more than C{limit} events wait; the
        queue then takes no more.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        onOverflow: Callable[[], None],
        limit: int = DEFAULT_LIMIT,
        holdTime: float = DEFAULT_HOLD,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.holdTime = holdTime
        self._onOverflow = onOverflow
        self._entries: list[_Entry] = []
        self._waiting: Deferred[str] | None = None
        self._holdTimer: IDelayedCall | None = None
        self._flushTimer: IDelayedCall | None = None
        self.overflowed = False
        self.closed = False
        #: counters for monitoring
        self.coalesced = 0
        self.delivered = 0

    def __len__(self) -> int:
        return len(self._entries)

    def addVar(self, interface: str, var: str, value: Any, coalesce: bool = False) -> None:
        key = (interface, var) if coalesce else None
        if key is not None:
            for i in range(len(self._entries) - 1, -1, -1):
                if self._entries[i].key == key:
                    del self._entries[i]
                    self.coalesced += 1
                    break
        self._add(_Entry("vars", {"interface": interface, "var": var, "value": value}, key))

    def addError(self, action: str, error: dict[str, Any]) -> None:
        self._add(_Entry("errors", {"action": action, "error": error}, None))

    def _add(self, entry: _Entry) -> None:
        if self.overflowed or self.closed:
            return
        if len(self._entries) >= self.limit:
            self.overflowed = True
            self.log.error(
                "event queue: more than {limit} events wait for the controller",
                limit=self.limit,
            )
            self._onOverflow()
            return
        self._entries.append(entry)
        if self._waiting is not None and self._flushTimer is None:
            # Answer in the next turn, so events published together travel
            # together.
            self._flushTimer = self.clock.callLater(0, self._flush)

    def retrieve(self) -> Deferred[str]:
        """
        The next batch as the JSON text of the wire document, now or when
        an event arrives, or an empty batch after C{holdTime}.
        """
        if self._waiting is not None:
            # A new poll supersedes a waiting one (its caller gave up).
            self._answer(EMPTY)
        d: Deferred[str] = Deferred()
        if self._entries or self.closed:
            d.callback(self._take())
            return d
        self._waiting = d
        self._holdTimer = self.clock.callLater(self.holdTime, self._flush)
        return d

    def close(self) -> None:
        """The link is over: answer a waiting poll, queue nothing more."""
        self.closed = True
        self._answer(EMPTY)
        self._entries.clear()

    def _flush(self) -> None:
        # Either timer: answer the waiting poll with what is queued now.
        if self._waiting is not None:
            self._answer(self._take())

    def _answer(self, batch: str) -> None:
        for timer in (self._holdTimer, self._flushTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._holdTimer = self._flushTimer = None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(batch)

    def _take(self) -> str:
        if not self._entries:
            return EMPTY
        kind = self._entries[0].kind
        run = 0
        while run < len(self._entries) and self._entries[run].kind == kind:
            run += 1
        items = [e.item for e in self._entries[:run]]
        del self._entries[:run]
        self.delivered += len(items)
        batch: dict[str, list[dict[str, Any]]] = {"errors": [], "vars": []}
        batch[kind] = items
        return dumps(batch)
