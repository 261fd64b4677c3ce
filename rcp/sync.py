"""
The single common start point of a satellite link, as two pure state machines.

Upstream's start-up handshake (``upstream-wire-protocol.md``, "Start-up
synchronisation") and its liveness rules ("Events from agent to controller:
polling"):

  - The controller connects and calls ``i_am_here`` with a 5 s timeout. On a
    connection error it tries again every second, on a timeout at once, until
    the agent answers C{False}; then it calls ``i_am_ready`` and the link is
    synchronised.
  - The agent answers C{False} to the first ``i_am_here`` since it booted and
    only then offers its other methods. Any later ``i_am_here`` means a
    controller restarted (or a second one turned up): the agent answers
    C{True}, closes the link and soft-resets its board, so both sides start
    again from the single common start point.
  - Once synchronised, a poll that takes more than 30 s or a lost connection
    ends the controller (exit code 1), and an agent that sees no poll for
    60 s resets its board, unless a disconnect was expected (an accepted
    firmware update, a requested reset). An unusable answer to a poll (a
    protocol violation, rcp's rule) ends the controller with exit code 1
    in any case.

L{AgentSync} and L{ControllerSync} enforce those rules and nothing else. They
are pure: no transport, no global reactor. Everything they may touch is in
their core (L{AgentSyncCore}, L{ControllerSyncCore}): an injected clock, the
timings and a few callbacks, so the tests drive them with a
L{twisted.internet.task.Clock} and recording lambdas.

Inputs arrive from the network, so they may come late or out of order: every
input is accepted in every state. One that makes no sense where the machine is
now is logged and absorbed; the ``ended`` states absorb everything. No input
ever raises L{automat.NoTransition}, and no timer outlives the state that armed
it.

Each transition that ends or restarts something logs its reason (with the
C{reason} field) and passes the same reason to the callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = [
    "AgentSync",
    "AgentSyncCore",
    "AgentSyncInputs",
    "ControllerSync",
    "ControllerSyncCore",
    "ControllerSyncInputs",
    "SyncTimings",
]


@dataclass(frozen=True)
class SyncTimings:
    """
    Every timing of the start-up and liveness rules, in seconds; the defaults
    are upstream's.
    """

    #: controller: how long one ``i_am_here`` call may take before it is
    #: called again at once
    here_timeout: float = 5.0
    #: controller: the pause before connecting again after a failure
    retry_interval: float = 1.0
    #: controller: a poll that takes longer ends the link
    poll_timeout: float = 30.0
    #: agent: no poll for this long resets the board
    poll_watchdog: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(
                    f"SyncTimings.{f.name} must be a positive number of seconds, not {value!r}"
                )


def _defaultLog() -> Logger:
    return Logger(namespace=__name__)


class _Deadline:
    """
    A restartable timer: the data of the states that wait for something. Every
    transition out of such a state cancels it.
    """

    def __init__(self, clock: IReactorTime, seconds: float, expired: Callable[[], None]) -> None:
        self._clock = clock
        self._seconds = seconds
        self._expired = expired
        self._call: IDelayedCall = clock.callLater(seconds, expired)

    def restart(self) -> None:
        if self._call.active():
            self._call.reset(self._seconds)
        else:
            self._call = self._clock.callLater(self._seconds, self._expired)

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class _HasLog(Protocol):
    @property
    def log(self) -> Logger: ...


def _absorbing(
    machine: str, state: str, level: LogLevel, *inputs: Callable[..., None]
) -> list[tuple[Callable[..., None], Callable[..., None]]]:
    """
    Behaviours for inputs that mean nothing in C{state}: each logs its input
    and changes nothing.
    """

    def absorb(input: str) -> Callable[..., None]:
        def ignored(inputs: object, core: _HasLog, /, *args: object, **kwargs: object) -> None:
            core.log.emit(
                level,
                "{machine} sync: {input} ignored while {state}",
                machine=machine,
                input=input,
                state=state,
            )

        ignored.__name__ = f"ignore_{input}"
        return ignored

    return [(i, absorb(i.__name__)) for i in inputs]


def _seconds(value: float) -> str:
    return f"{value:g} s"


# -- the agent --------------------------------------------------------------------


class AgentSyncInputs(Protocol):
    """
    What happens to the agent's end of the link. The RPC layer calls these;
    L{watchdogExpired} is fed back by the machine's own timer.
    """

    def hereCalled(self) -> bool:
        """
        The controller called ``i_am_here``; returns the answer: C{False} the
        first time, C{True} ever after (the board then resets).
        """

    def readyCalled(self) -> None:
        "The controller called ``i_am_ready``."

    def exitCalled(self) -> None:
        "The controller called ``exit``: it shuts down on purpose."

    def pollArrived(self) -> None:
        "A ``retrieve_vars_and_errors`` call arrived."

    def linkLost(self) -> None:
        "The controller's RPC connection dropped."

    def queueOverflowed(self) -> None:
        "The event queue hit its cap."

    def disconnectExpected(self, reason: str) -> None:
        """
        A firmware update was accepted or a reset requested: from now on a lost
        link or a silent controller does not reset the board.
        """

    def watchdogExpired(self) -> None:
        "No poll arrived for C{poll_watchdog} seconds (fed back by the machine)."


@dataclass
class AgentSyncCore:
    """
    Everything L{AgentSync} may touch.

    @ivar registerMethods: offer the tunnelled RPC methods (after the first
        ``i_am_here``).
    @ivar linkSynced: the link is synchronised; the agent may announce EVerest
        ready.
    @ivar closeLink: close the controller's connection (after the answer being
        written now) and take no more.
    @ivar resetBoard: soft-reset the board, with the reason.
    @ivar log: where the machine logs; pass one per link to tell boards apart.
    """

    clock: IReactorTime
    timings: SyncTimings
    registerMethods: Callable[[], None]
    linkSynced: Callable[[], None]
    closeLink: Callable[[], None]
    resetBoard: Callable[[str], None]
    log: Logger = field(default_factory=_defaultLog)


def _armWatchdog(
    inputs: AgentSyncInputs, core: AgentSyncCore, /, *args: object, **kwargs: object
) -> _Deadline:
    # Data factory of the synced states, entered by readyCalled() or
    # disconnectExpected(reason).
    return _Deadline(core.clock, core.timings.poll_watchdog, inputs.watchdogExpired)


def _agentEnds(
    core: AgentSyncCore,
    reason: str,
    *,
    close: bool,
    reset: bool,
    level: LogLevel = LogLevel.warn,
) -> None:
    if reset:
        core.log.emit(level, "agent sync: {reason}; resetting the board", reason=reason)
    else:
        core.log.info(
            "agent sync: {reason}; a disconnect was expected, not resetting the board",
            reason=reason,
        )
    if close:
        core.closeLink()
    if reset:
        core.resetBoard(reason)


#: the error text of a poll the agent answers when another controller took
#: over (the first controller logs it as the cause of its lost link)
TAKEN_OVER = "another controller took over this satellite"

_SECOND_HERE = "second i_am_here: a controller had already been here since the board booted"
_EXIT = "controller exit"
_LINK_LOST = "link lost"
_OVERFLOW = "event queue overflow"

_agent = TypeMachineBuilder(AgentSyncInputs, AgentSyncCore)
# No i_am_here yet: only i_am_here, i_am_ready and exit exist.
_aFresh = _agent.state("fresh")
# The first i_am_here was answered; waiting for i_am_ready.
_aGreeted = _agent.state("greeted")
_aGreetedExpecting = _agent.state("greetedExpecting")
# Synchronised; the poll watchdog runs.
_aSynced = _agent.state("synced", _armWatchdog)
_aSyncedExpecting = _agent.state("syncedExpecting", _armWatchdog)
# Terminal: the board resets, or the expected disconnect has happened.
_aEnded = _agent.state("ended")


@_aFresh.upon(AgentSyncInputs.hereCalled).to(_aGreeted)
def _firstHere(inputs: AgentSyncInputs, core: AgentSyncCore) -> bool:
    core.log.info("agent sync: first i_am_here; offering the link's methods")
    core.registerMethods()
    return False


@_aGreeted.upon(AgentSyncInputs.hereCalled).to(_aEnded)
@_aGreetedExpecting.upon(AgentSyncInputs.hereCalled).to(_aEnded)
def _secondHere(inputs: AgentSyncInputs, core: AgentSyncCore) -> bool:
    _agentEnds(core, _SECOND_HERE, close=True, reset=True)
    return True


@_aSynced.upon(AgentSyncInputs.hereCalled).to(_aEnded)
@_aSyncedExpecting.upon(AgentSyncInputs.hereCalled).to(_aEnded)
def _secondHereSynced(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> bool:
    watchdog.cancel()
    return _secondHere(inputs, core)


@_aEnded.upon(AgentSyncInputs.hereCalled).loop()
def _hereAfterEnd(inputs: AgentSyncInputs, core: AgentSyncCore) -> bool:
    core.log.info("agent sync: i_am_here refused: the link has ended")
    return True


@_aGreeted.upon(AgentSyncInputs.readyCalled).to(_aSynced)
@_aGreetedExpecting.upon(AgentSyncInputs.readyCalled).to(_aSyncedExpecting)
def _ready(inputs: AgentSyncInputs, core: AgentSyncCore) -> None:
    core.log.info(
        "agent sync: i_am_ready; synchronised, poll watchdog {watchdog}",
        watchdog=_seconds(core.timings.poll_watchdog),
    )
    core.linkSynced()


@_aFresh.upon(AgentSyncInputs.exitCalled).to(_aEnded)
@_aGreeted.upon(AgentSyncInputs.exitCalled).to(_aEnded)
@_aGreetedExpecting.upon(AgentSyncInputs.exitCalled).to(_aEnded)
def _exit(inputs: AgentSyncInputs, core: AgentSyncCore) -> None:
    _agentEnds(core, _EXIT, close=True, reset=True, level=LogLevel.info)


@_aSynced.upon(AgentSyncInputs.exitCalled).to(_aEnded)
@_aSyncedExpecting.upon(AgentSyncInputs.exitCalled).to(_aEnded)
def _exitSynced(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> None:
    watchdog.cancel()
    _exit(inputs, core)


@_aSynced.upon(AgentSyncInputs.pollArrived).loop()
@_aSyncedExpecting.upon(AgentSyncInputs.pollArrived).loop()
def _polled(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> None:
    watchdog.restart()


@_aGreeted.upon(AgentSyncInputs.linkLost).to(_aEnded)
def _lost(inputs: AgentSyncInputs, core: AgentSyncCore) -> None:
    _agentEnds(core, _LINK_LOST, close=False, reset=True)


@_aGreetedExpecting.upon(AgentSyncInputs.linkLost).to(_aEnded)
def _lostAsExpected(inputs: AgentSyncInputs, core: AgentSyncCore) -> None:
    _agentEnds(core, _LINK_LOST, close=False, reset=False)


@_aSynced.upon(AgentSyncInputs.linkLost).to(_aEnded)
def _lostSynced(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> None:
    watchdog.cancel()
    _lost(inputs, core)


@_aSyncedExpecting.upon(AgentSyncInputs.linkLost).to(_aEnded)
def _lostSyncedAsExpected(
    inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline
) -> None:
    watchdog.cancel()
    _lostAsExpected(inputs, core)


@_aFresh.upon(AgentSyncInputs.queueOverflowed).to(_aEnded)
@_aGreeted.upon(AgentSyncInputs.queueOverflowed).to(_aEnded)
@_aGreetedExpecting.upon(AgentSyncInputs.queueOverflowed).to(_aEnded)
def _overflowed(inputs: AgentSyncInputs, core: AgentSyncCore) -> None:
    _agentEnds(core, _OVERFLOW, close=True, reset=True)


@_aSynced.upon(AgentSyncInputs.queueOverflowed).to(_aEnded)
@_aSyncedExpecting.upon(AgentSyncInputs.queueOverflowed).to(_aEnded)
def _overflowedSynced(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> None:
    watchdog.cancel()
    _overflowed(inputs, core)


@_aGreeted.upon(AgentSyncInputs.disconnectExpected).to(_aGreetedExpecting)
@_aGreetedExpecting.upon(AgentSyncInputs.disconnectExpected).loop()
def _expect(inputs: AgentSyncInputs, core: AgentSyncCore, reason: str) -> None:
    core.log.info(
        "agent sync: disconnect expected: {reason}; a lost link will not reset the board",
        reason=reason,
    )


@_aSynced.upon(AgentSyncInputs.disconnectExpected).to(_aSyncedExpecting)
def _expectSynced(
    inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline, reason: str
) -> None:
    watchdog.cancel()  # syncedExpecting arms its own
    _expect(inputs, core, reason)


@_aSyncedExpecting.upon(AgentSyncInputs.disconnectExpected).loop()
def _expectAgain(
    inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline, reason: str
) -> None:
    _expect(inputs, core, reason)


@_aSynced.upon(AgentSyncInputs.watchdogExpired).to(_aEnded)
def _silent(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> None:
    watchdog.cancel()  # it has fired, unless watchdogExpired came from elsewhere
    reason = f"no poll for {_seconds(core.timings.poll_watchdog)}"
    _agentEnds(core, reason, close=True, reset=True)


@_aSyncedExpecting.upon(AgentSyncInputs.watchdogExpired).to(_aEnded)
def _silentAsExpected(inputs: AgentSyncInputs, core: AgentSyncCore, watchdog: _Deadline) -> None:
    watchdog.cancel()  # it has fired, unless watchdogExpired came from elsewhere
    reason = f"no poll for {_seconds(core.timings.poll_watchdog)}"
    _agentEnds(core, reason, close=True, reset=False)


_I = AgentSyncInputs
for _state in (_aFresh,):
    for _input, _behaviour in _absorbing(
        "agent", _state.name, LogLevel.info, _I.readyCalled, _I.disconnectExpected
    ) + _absorbing(
        "agent", _state.name, LogLevel.debug, _I.pollArrived, _I.linkLost, _I.watchdogExpired
    ):
        _state.upon(_input).loop()(_behaviour)
for _state in (_aGreeted, _aGreetedExpecting):
    for _input, _behaviour in _absorbing(
        "agent", _state.name, LogLevel.debug, _I.pollArrived, _I.watchdogExpired
    ):
        _state.upon(_input).loop()(_behaviour)
for _dataState in (_aSynced, _aSyncedExpecting):
    for _input, _behaviour in _absorbing("agent", _dataState.name, LogLevel.info, _I.readyCalled):
        _dataState.upon(_input, nodata=True).loop()(_behaviour)
for _input, _behaviour in _absorbing(
    "agent",
    _aEnded.name,
    LogLevel.debug,
    _I.readyCalled,
    _I.exitCalled,
    _I.pollArrived,
    _I.linkLost,
    _I.queueOverflowed,
    _I.disconnectExpected,
    _I.watchdogExpired,
):
    _aEnded.upon(_input).loop()(_behaviour)

AgentSync = _agent.build()
"""
The agent's start-up machine: C{AgentSync(AgentSyncCore(...))} is an
L{AgentSyncInputs}, one per board boot.
"""


# -- the controller -----------------------------------------------------------------


class ControllerSyncInputs(Protocol):
    """
    What happens to the controller's end of one satellite link. The caller
    makes one connection attempt per L{ControllerSyncCore.connect} and reports
    only events of the current attempt or connection. The last four inputs are
    fed back by the machine itself.
    """

    def start(self) -> None:
        "Begin: connect to the agent."

    def connected(self) -> None:
        "The connection attempt succeeded."

    def connectFailed(self, reason: str) -> None:
        "The connection attempt failed."

    def hereAnswered(self, seen: bool) -> None:
        "The agent answered ``i_am_here``."

    def readyAnswered(self) -> None:
        "The agent answered ``i_am_ready``."

    def callFailed(self, reason: str) -> None:
        """
        ``i_am_here`` or ``i_am_ready`` failed with an error (the caller's
        timeout of ``i_am_ready`` included; not a timed-out ``i_am_here``,
        which the machine times itself).
        """

    def lost(self, reason: str) -> None:
        "The connection dropped."

    def pollOverdue(self) -> None:
        "A poll took longer than C{poll_timeout}."

    def protocolViolation(self, reason: str) -> None:
        """
        The agent broke the protocol (an unusable answer to a poll): the
        link is over, as after a loss, whatever disconnect was expected.
        """

    def disconnectExpected(self, reason: str) -> None:
        "A firmware update was accepted or a reset requested."

    def stop(self) -> None:
        "The process shuts down on purpose."

    def hereTimedOut(self) -> None:
        "No answer to ``i_am_here`` within C{here_timeout} (fed back)."

    def retryDue(self) -> None:
        "C{retry_interval} has passed since a failure (fed back)."

    def agentFresh(self) -> None:
        "``i_am_here`` was answered C{False} (fed back)."

    def agentResetting(self) -> None:
        "``i_am_here`` was answered C{True} (fed back)."


@dataclass
class ControllerSyncCore:
    """
    Everything L{ControllerSync} may touch.

    @ivar connect: make one connection attempt; report it with C{connected} or
        C{connectFailed}.
    @ivar callHere: call ``i_am_here`` without a timeout of its own; report the
        answer with C{hereAnswered}, an error with C{callFailed}.
    @ivar cancelHere: forget the ``i_am_here`` call in flight (it timed out).
    @ivar callReady: call ``i_am_ready`` with a timeout of C{here_timeout};
        report C{readyAnswered} or C{callFailed}.
    @ivar dropConnection: close the connection; no C{lost} is expected for it.
    @ivar linkSynced: synchronised: start polling (time each poll, report
        C{pollOverdue}); EVerest may be told ready.
    @ivar sayExit: tell the agent ``exit`` and close the connection.
    @ivar end: the link is over, with an exit code (0 after an expected
        disconnect, else 1) and the reason.
    @ivar log: where the machine logs; pass one per link to tell satellites
        apart.
    """

    clock: IReactorTime
    timings: SyncTimings
    connect: Callable[[], None]
    callHere: Callable[[], None]
    cancelHere: Callable[[], None]
    callReady: Callable[[], None]
    dropConnection: Callable[[], None]
    linkSynced: Callable[[], None]
    sayExit: Callable[[], None]
    end: Callable[[int, str], None]
    log: Logger = field(default_factory=_defaultLog)


def _armHereTimeout(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> _Deadline:
    return _Deadline(core.clock, core.timings.here_timeout, inputs.hereTimedOut)


def _armRetry(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, /, *args: object, **kwargs: object
) -> _Deadline:
    # Entered by connectFailed(reason), lost(reason), callFailed(reason) and
    # agentResetting().
    return _Deadline(core.clock, core.timings.retry_interval, inputs.retryDue)


def _expectedReason(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> str:
    return reason


def _retrying(core: ControllerSyncCore, reason: str) -> None:
    core.log.info(
        "controller sync: {reason}; connecting again in {delay}",
        reason=reason,
        delay=_seconds(core.timings.retry_interval),
    )


def _controllerEnds(core: ControllerSyncCore, code: int, reason: str) -> None:
    core.log.emit(
        LogLevel.warn if code else LogLevel.info,
        "controller sync: link ended: {reason} (exit code {code})",
        reason=reason,
        code=code,
    )
    core.end(code, reason)


_controller = TypeMachineBuilder(ControllerSyncInputs, ControllerSyncCore)
# Not started.
_cIdle = _controller.state("idle")
# One connection attempt in flight.
_cConnecting = _controller.state("connecting")
# i_am_here in flight, under here_timeout.
_cGreeting = _controller.state("greeting", _armHereTimeout)
# i_am_here answered; the answer is being sorted out (never seen between inputs).
_cAnswered = _controller.state("answered")
# i_am_ready in flight (the caller times it).
_cReadying = _controller.state("readying")
# After a failure: connecting again after retry_interval.
_cWaiting = _controller.state("waiting", _armRetry)
# Synchronised: polling.
_cSynced = _controller.state("synced")
_cSyncedExpecting = _controller.state("syncedExpecting", _expectedReason)
# Terminal.
_cEnded = _controller.state("ended")


@_cIdle.upon(ControllerSyncInputs.start).to(_cConnecting)
def _connect(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.log.debug("controller sync: connecting")
    core.connect()


@_cWaiting.upon(ControllerSyncInputs.retryDue).to(_cConnecting)
def _retry(inputs: ControllerSyncInputs, core: ControllerSyncCore, timer: _Deadline) -> None:
    timer.cancel()  # it has fired, unless retryDue came from elsewhere
    _connect(inputs, core)


@_cConnecting.upon(ControllerSyncInputs.connected).to(_cGreeting)
def _greet(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.log.debug("controller sync: connected; calling i_am_here")
    core.callHere()


@_cConnecting.upon(ControllerSyncInputs.connectFailed).to(_cWaiting)
def _connectFailed(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> None:
    _retrying(core, f"connection failed: {reason}")


@_cConnecting.upon(ControllerSyncInputs.lost).to(_cWaiting)
def _lostConnecting(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> None:
    _retrying(core, f"link lost before sync: {reason}")


@_cGreeting.upon(ControllerSyncInputs.hereTimedOut).loop()
def _greetAgain(inputs: ControllerSyncInputs, core: ControllerSyncCore, timer: _Deadline) -> None:
    core.log.info(
        "controller sync: {reason}; calling it again",
        reason=f"no answer to i_am_here within {_seconds(core.timings.here_timeout)}",
    )
    core.cancelHere()
    core.callHere()
    timer.restart()


@_cGreeting.upon(ControllerSyncInputs.hereAnswered).to(_cAnswered)
def _answered(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, timer: _Deadline, seen: bool
) -> None:
    timer.cancel()
    # Automat picks the transition by input, not by argument: feed the answer
    # back as one of two inputs (queued, run before this call returns).
    if seen:
        inputs.agentResetting()
    else:
        inputs.agentFresh()


@_cAnswered.upon(ControllerSyncInputs.agentFresh).to(_cReadying)
def _callReady(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.log.debug("controller sync: i_am_here answered false; calling i_am_ready")
    core.callReady()


@_cAnswered.upon(ControllerSyncInputs.agentResetting).to(_cWaiting)
def _agentResetting(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.dropConnection()
    _retrying(core, "the agent had already seen a controller and resets its board")


@_cGreeting.upon(ControllerSyncInputs.callFailed).to(_cWaiting)
def _callFailedGreeting(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, timer: _Deadline, reason: str
) -> None:
    timer.cancel()
    _callFailed(inputs, core, reason)


@_cReadying.upon(ControllerSyncInputs.callFailed).to(_cWaiting)
def _callFailed(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> None:
    core.dropConnection()
    _retrying(core, f"start-up call failed: {reason}")


@_cGreeting.upon(ControllerSyncInputs.lost).to(_cWaiting)
def _lostGreeting(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, timer: _Deadline, reason: str
) -> None:
    timer.cancel()
    _lostConnecting(inputs, core, reason)


_cReadying.upon(ControllerSyncInputs.lost).to(_cWaiting)(_lostConnecting)


@_cReadying.upon(ControllerSyncInputs.readyAnswered).to(_cSynced)
def _synced(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.log.info("controller sync: i_am_ready answered; synchronised")
    core.linkSynced()


@_cSynced.upon(ControllerSyncInputs.lost).to(_cEnded)
def _endOnLoss(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> None:
    _controllerEnds(core, 1, f"link lost: {reason}")


@_cSyncedExpecting.upon(ControllerSyncInputs.lost).to(_cEnded)
def _endOnExpectedLoss(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, expected: str, reason: str
) -> None:
    _controllerEnds(core, 0, f"the satellite resets as requested ({expected}): link lost: {reason}")


@_cSynced.upon(ControllerSyncInputs.pollOverdue).to(_cEnded)
def _pollOverdue(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    reason = f"no answer to a poll within {_seconds(core.timings.poll_timeout)}"
    _controllerEnds(core, 1, reason)


@_cSyncedExpecting.upon(ControllerSyncInputs.pollOverdue).to(_cEnded)
def _pollOverdueAsExpected(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, expected: str
) -> None:
    reason = f"no answer to a poll within {_seconds(core.timings.poll_timeout)}"
    _controllerEnds(core, 0, f"the satellite resets as requested ({expected}): {reason}")


@_cSynced.upon(ControllerSyncInputs.protocolViolation).to(_cEnded)
def _violation(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> None:
    _controllerEnds(core, 1, f"protocol violation: {reason}")


# A satellite that was asked to reset does not answer garbage: exit code 1
# all the same, the station restarts into a common start.
@_cSyncedExpecting.upon(ControllerSyncInputs.protocolViolation).to(_cEnded)
def _violationExpecting(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, expected: str, reason: str
) -> None:
    _violation(inputs, core, reason)


@_cSynced.upon(ControllerSyncInputs.disconnectExpected).to(_cSyncedExpecting)
def _expectDisconnect(inputs: ControllerSyncInputs, core: ControllerSyncCore, reason: str) -> None:
    core.log.info(
        "controller sync: disconnect expected: {reason}; losing the link will end it with code 0",
        reason=reason,
    )


@_cSyncedExpecting.upon(ControllerSyncInputs.disconnectExpected).loop()
def _expectDisconnectAgain(
    inputs: ControllerSyncInputs, core: ControllerSyncCore, expected: str, reason: str
) -> None:
    core.log.info(
        "controller sync: disconnect expected: {reason} (already expected: {expected})",
        reason=reason,
        expected=expected,
    )


@_cSynced.upon(ControllerSyncInputs.stop).to(_cEnded)
def _sayExit(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.log.info("controller sync: {reason}; telling the agent exit", reason="stopping")
    core.sayExit()


# (Automat 25.4 passes the data to a behaviour leaving a data state for a plain
# one even with nodata=True, so such behaviours take it.)
@_cSyncedExpecting.upon(ControllerSyncInputs.stop).to(_cEnded)
def _sayExitAnyway(inputs: ControllerSyncInputs, core: ControllerSyncCore, expected: str) -> None:
    _sayExit(inputs, core)


@_cIdle.upon(ControllerSyncInputs.stop).to(_cEnded)
@_cConnecting.upon(ControllerSyncInputs.stop).to(_cEnded)
@_cAnswered.upon(ControllerSyncInputs.stop).to(_cEnded)
@_cReadying.upon(ControllerSyncInputs.stop).to(_cEnded)
def _stopUnsynced(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    core.log.info("controller sync: {reason} before sync; no exit", reason="stopping")


@_cGreeting.upon(ControllerSyncInputs.stop).to(_cEnded)
@_cWaiting.upon(ControllerSyncInputs.stop).to(_cEnded)
def _stopWaiting(inputs: ControllerSyncInputs, core: ControllerSyncCore, timer: _Deadline) -> None:
    timer.cancel()
    _stopUnsynced(inputs, core)


@_cEnded.upon(ControllerSyncInputs.connected).loop()
def _lateConnection(inputs: ControllerSyncInputs, core: ControllerSyncCore) -> None:
    # A connection attempt made before stop() succeeded after it.
    core.log.info("controller sync: dropping a connection made after the link ended")
    core.dropConnection()


_C = ControllerSyncInputs
_everything = (
    _C.start,
    _C.connected,
    _C.connectFailed,
    _C.hereAnswered,
    _C.readyAnswered,
    _C.callFailed,
    _C.lost,
    _C.pollOverdue,
    _C.protocolViolation,
    _C.disconnectExpected,
    _C.stop,
    _C.hereTimedOut,
    _C.retryDue,
    _C.agentFresh,
    _C.agentResetting,
)


def _except(*handled: Callable[..., None]) -> tuple[Callable[..., None], ...]:
    return tuple(i for i in _everything if i not in handled)


for _cState, _cHandled in [
    (_cIdle, (_C.start, _C.stop)),
    (_cConnecting, (_C.connected, _C.connectFailed, _C.lost, _C.stop)),
    (_cAnswered, (_C.agentFresh, _C.agentResetting, _C.stop)),
    (_cReadying, (_C.readyAnswered, _C.callFailed, _C.lost, _C.stop)),
    (_cSynced, (_C.lost, _C.pollOverdue, _C.protocolViolation, _C.disconnectExpected, _C.stop)),
]:
    for _input, _behaviour in _absorbing(
        "controller", _cState.name, LogLevel.info, *_except(*_cHandled)
    ):
        _cState.upon(_input).loop()(_behaviour)
for _input, _behaviour in _absorbing(
    "controller",
    _cGreeting.name,
    LogLevel.info,
    *_except(_C.hereTimedOut, _C.hereAnswered, _C.callFailed, _C.lost, _C.stop),
):
    _cGreeting.upon(_input, nodata=True).loop()(_behaviour)
for _input, _behaviour in _absorbing(
    "controller",
    _cSyncedExpecting.name,
    LogLevel.info,
    *_except(_C.lost, _C.pollOverdue, _C.protocolViolation, _C.disconnectExpected, _C.stop),
):
    _cSyncedExpecting.upon(_input, nodata=True).loop()(_behaviour)
# After dropConnection() a late answer, error or loss of the old connection is normal.
for _input, _behaviour in _absorbing(
    "controller", _cWaiting.name, LogLevel.debug, *_except(_C.retryDue, _C.stop)
):
    _cWaiting.upon(_input, nodata=True).loop()(_behaviour)
for _input, _behaviour in _absorbing(
    "controller", _cEnded.name, LogLevel.debug, *_except(_C.connected)
):
    _cEnded.upon(_input).loop()(_behaviour)

ControllerSync = _controller.build()
"""
The controller's start-up machine for one satellite:
C{ControllerSync(ControllerSyncCore(...))} is a L{ControllerSyncInputs}.
"""

del _state, _dataState, _cState, _cHandled, _input, _behaviour
