"""
L{rcp.sync}: the start-up machines of both ends of a satellite link, alone
with a L{Clock} and recording callbacks, then wired to each other over a fake
network, and finally every input in every state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import FrozenInstanceError
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.sync import (
    AgentSync,
    AgentSyncCore,
    AgentSyncInputs,
    ControllerSync,
    ControllerSyncCore,
    ControllerSyncInputs,
    SyncTimings,
)

SECOND_HERE = "second i_am_here: a controller had already been here since the board booted"

Transition = tuple[str, str, str]
#: a sequence of (input name, arguments); "advance" advances the clock
Calls = list[tuple[str, tuple[object, ...]]]

AGENT_SYNCED: Calls = [("hereCalled", ()), ("readyCalled", ())]
AGENT_EXPECTING: Calls = [*AGENT_SYNCED, ("disconnectExpected", ("reset requested",))]
#: every state of the agent before the end
AGENT_LIVE: list[Calls] = [[], [("hereCalled", ())], AGENT_SYNCED, AGENT_EXPECTING]


@implementer(ILogObserver)
class LogEvents(list[LogEvent]):
    """A log observer that keeps the events."""

    def __call__(self, event: LogEvent) -> None:
        self.append(event)

    def texts(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(e) for e in self if level is None or e["log_level"] is level]

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self if "reason" in e]


def trace(machine: object, initial: str) -> list[Transition]:
    """
    Record a machine's transitions as (old state, input, new state) names.
    Tests only: this reaches into Automat's internals.
    """
    transitions: list[Transition] = [("", "", initial)]

    def tracer(old: Any, input: str, new: Any) -> None:
        transitions.append((old.name, input, new.name))

    vars(machine)["__automat_transitioner__"].setTrace(tracer)
    return transitions


def allTransitions(machine: Any) -> set[Transition]:
    """Every transition a built machine declares, by name (Automat internals)."""
    return {
        (old.name, input, new.name)
        for old, input, new, _ in machine.__automat_automaton__.allTransitions()
    }


class AgentHarness:
    def __init__(self, timings: SyncTimings | None = None) -> None:
        self.clock = Clock()
        self.effects: list[object] = []
        self.logged = LogEvents()
        self.sync = AgentSync(
            AgentSyncCore(
                clock=self.clock,
                timings=timings or SyncTimings(),
                registerMethods=lambda: self.effects.append("register"),
                linkSynced=lambda: self.effects.append("synced"),
                closeLink=lambda: self.effects.append("close"),
                resetBoard=lambda reason: self.effects.append(("reset", reason)),
                log=Logger(namespace="test.agent", observer=self.logged),
            )
        )
        self.transitions = trace(self.sync, "fresh")

    @property
    def state(self) -> str:
        return self.transitions[-1][2]

    def drive(self, calls: Calls) -> None:
        for name, args in calls:
            getattr(self.clock if name == "advance" else self.sync, name)(*args)

    def timers(self) -> list[float]:
        return [call.getTime() for call in self.clock.getDelayedCalls()]


class ControllerHarness:
    def __init__(self, timings: SyncTimings | None = None, state: Any = None) -> None:
        """
        @param state: start in this state of L{ControllerSync}, not "idle"
            (a plain state; Automat internals).
        """
        self.clock = Clock()
        self.effects: list[object] = []
        self.logged = LogEvents()
        core = ControllerSyncCore(
            clock=self.clock,
            timings=timings or SyncTimings(),
            connect=lambda: self.effects.append("connect"),
            callHere=lambda: self.effects.append("here"),
            cancelHere=lambda: self.effects.append("cancelHere"),
            callReady=lambda: self.effects.append("ready"),
            dropConnection=lambda: self.effects.append("drop"),
            linkSynced=lambda: self.effects.append("synced"),
            sayExit=lambda: self.effects.append("exit"),
            end=lambda code, reason: self.effects.append(("end", code, reason)),
            log=Logger(namespace="test.controller", observer=self.logged),
        )
        self.sync = ControllerSync(core) if state is None else ControllerSync(core, state)
        self.transitions = trace(self.sync, "idle" if state is None else state.name)

    @property
    def state(self) -> str:
        return self.transitions[-1][2]

    def drive(self, calls: Calls) -> None:
        for name, args in calls:
            getattr(self.clock if name == "advance" else self.sync, name)(*args)

    def timers(self) -> list[float]:
        return [call.getTime() for call in self.clock.getDelayedCalls()]

    def synchronise(self) -> None:
        self.sync.start()
        self.sync.connected()
        self.sync.hereAnswered(False)
        self.sync.readyAnswered()
        assert self.effects == ["connect", "here", "ready", "synced"], self.effects
        del self.effects[:]


class SyncTimingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """The defaults are upstream's."""
        timings = SyncTimings()
        self.assertEqual(timings.here_timeout, 5.0)
        self.assertEqual(timings.retry_interval, 1.0)
        self.assertEqual(timings.poll_timeout, 30.0)
        self.assertEqual(timings.poll_watchdog, 60.0)

    def test_positive(self) -> None:
        """Every timing must be a positive, finite number of seconds."""
        for name in ("here_timeout", "retry_interval", "poll_timeout", "poll_watchdog"):
            for bad in (0, 0.0, -1.0, math.nan, math.inf, True, "5", None):
                with self.assertRaises(ValueError, msg=f"{name}={bad!r}") as caught:
                    SyncTimings(**{name: bad})  # type: ignore[arg-type]
                self.assertIn(name, str(caught.exception))
            self.assertEqual(getattr(SyncTimings(**{name: 2}), name), 2)
            self.assertEqual(getattr(SyncTimings(**{name: 0.001}), name), 0.001)

    def test_frozen(self) -> None:
        timings = SyncTimings()
        with self.assertRaises(FrozenInstanceError):
            timings.poll_watchdog = 1.0  # type: ignore[misc]


class AgentSyncTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AgentHarness()

    def synchronise(self) -> None:
        self.assertIs(self.h.sync.hereCalled(), False)
        self.h.sync.readyCalled()
        self.assertEqual(self.h.effects, ["register", "synced"])
        del self.h.effects[:]

    def assertEnded(self, effects: Sequence[object]) -> None:
        self.assertEqual(self.h.effects, list(effects))
        self.assertEqual(self.h.state, "ended")
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_handshake(self) -> None:
        """
        The first i_am_here is answered False and brings the other methods;
        i_am_ready synchronises the link and arms the poll watchdog.
        """
        self.assertIs(self.h.sync.hereCalled(), False)
        self.assertEqual(self.h.effects, ["register"])
        self.assertEqual(self.h.timers(), [])
        self.h.sync.readyCalled()
        self.assertEqual(self.h.effects, ["register", "synced"])
        self.assertEqual(self.h.timers(), [60.0])
        self.assertEqual(self.h.state, "synced")

    def test_readyBeforeHere(self) -> None:
        """i_am_ready before any i_am_here is ignored, with a log line."""
        self.h.sync.readyCalled()
        self.assertEqual(self.h.effects, [])
        self.assertEqual(self.h.timers(), [])
        self.assertEqual(
            self.h.logged.texts(LogLevel.info), ["agent sync: readyCalled ignored while fresh"]
        )
        self.synchronise()  # still possible

    def test_secondReady(self) -> None:
        """A second i_am_ready is ignored (logged); the watchdog keeps its deadline."""
        self.synchronise()
        self.h.clock.advance(10)
        self.h.sync.readyCalled()
        self.assertEqual(self.h.effects, [])
        self.assertEqual(self.h.timers(), [60.0])
        self.assertIn("agent sync: readyCalled ignored while synced", self.h.logged.texts())

    def test_pollsBeforeSync(self) -> None:
        """Polls before i_am_ready are harmless and arm nothing."""
        self.h.sync.pollArrived()
        self.assertIs(self.h.sync.hereCalled(), False)
        self.h.sync.pollArrived()
        self.assertEqual(self.h.effects, ["register"])
        self.assertEqual(self.h.timers(), [])

    def test_watchdog(self) -> None:
        """No poll for 60 s after i_am_ready closes the link and resets the board."""
        self.synchronise()
        self.h.clock.advance(59.9)
        self.assertEqual(self.h.effects, [])
        self.h.clock.advance(0.1)
        self.assertEnded(["close", ("reset", "no poll for 60 s")])
        self.assertEqual(self.h.logged.reasons()[-1], "no poll for 60 s")
        self.assertIn(
            "agent sync: no poll for 60 s; resetting the board",
            self.h.logged.texts(LogLevel.warn),
        )

    def test_pollsFeedWatchdog(self) -> None:
        """Each poll re-arms the watchdog for another 60 s."""
        self.synchronise()
        for _ in range(5):
            self.h.clock.advance(59)
            self.h.sync.pollArrived()
        self.assertEqual(self.h.effects, [])
        self.assertEqual(self.h.timers(), [5 * 59 + 60.0])
        self.h.clock.advance(59.9)
        self.assertEqual(self.h.effects, [])
        self.h.clock.advance(0.1)
        self.assertEnded(["close", ("reset", "no poll for 60 s")])

    def test_watchdogTiming(self) -> None:
        """The watchdog's delay comes from the timings, and so does the reason."""
        self.h = AgentHarness(SyncTimings(poll_watchdog=2.5))
        self.synchronise()
        self.h.clock.advance(2.5)
        self.assertEnded(["close", ("reset", "no poll for 2.5 s")])

    def test_secondHereBeforeReady(self) -> None:
        """A second i_am_here is refused (True): the link closes and the board resets."""
        self.assertIs(self.h.sync.hereCalled(), False)
        self.assertIs(self.h.sync.hereCalled(), True)
        self.assertEnded(["register", "close", ("reset", SECOND_HERE)])
        self.assertEqual(self.h.logged.reasons(), [SECOND_HERE])

    def test_controllerRestarted(self) -> None:
        """
        A restarted controller calls i_am_here again on a synchronised agent: it
        is refused, the link closes first, then the board resets; the watchdog
        is gone.
        """
        self.synchronise()
        self.assertIs(self.h.sync.hereCalled(), True)
        self.assertEnded(["close", ("reset", SECOND_HERE)])

    def test_hereAfterEnd(self) -> None:
        """Once ended, every i_am_here is refused with no further effects."""
        self.h.sync.exitCalled()
        del self.h.effects[:]
        self.assertIs(self.h.sync.hereCalled(), True)
        self.assertIs(self.h.sync.hereCalled(), True)
        self.assertEnded([])

    def test_portScanner(self) -> None:
        """A connection lost before any i_am_here changes nothing."""
        self.h.sync.linkLost()
        self.h.sync.linkLost()
        self.assertEqual(self.h.effects, [])
        self.assertEqual(self.h.state, "fresh")
        self.synchronise()

    def test_linkLostBeforeReady(self) -> None:
        """Losing the controller after i_am_here resets the board."""
        self.h.sync.hereCalled()
        self.h.sync.linkLost()
        self.assertEnded(["register", ("reset", "link lost")])
        self.assertEqual(self.h.logged.reasons(), ["link lost"])

    def test_linkLostSynced(self) -> None:
        """Losing a synchronised controller resets the board and stops the watchdog."""
        self.synchronise()
        self.h.sync.linkLost()
        self.assertEnded([("reset", "link lost")])

    def test_queueOverflow(self) -> None:
        """An overflowing event queue closes the link and resets, in every live state."""
        for prepare in AGENT_LIVE:
            self.h = AgentHarness()
            self.h.drive(prepare)
            del self.h.effects[:]
            self.h.sync.queueOverflowed()
            self.assertEnded(["close", ("reset", "event queue overflow")])
            self.assertIn("event queue overflow", self.h.logged.reasons())

    def test_exit(self) -> None:
        """exit closes the link and resets the board, in every live state."""
        for prepare in AGENT_LIVE:
            self.h = AgentHarness()
            self.h.drive(prepare)
            del self.h.effects[:]
            self.h.sync.exitCalled()
            self.assertEnded(["close", ("reset", "controller exit")])
            self.assertIn(
                "agent sync: controller exit; resetting the board",
                self.h.logged.texts(LogLevel.info),
            )

    def test_expectedDisconnectSynced(self) -> None:
        """After an expected disconnect, losing the link ends without a reset."""
        self.synchronise()
        self.h.sync.disconnectExpected("firmware update accepted")
        self.assertEqual(self.h.effects, [])
        self.assertEqual(len(self.h.timers()), 1)
        self.h.sync.linkLost()
        self.assertEnded([])
        self.assertEqual(self.h.logged.reasons(), ["firmware update accepted", "link lost"])
        self.assertIn(
            "agent sync: link lost; a disconnect was expected, not resetting the board",
            self.h.logged.texts(LogLevel.info),
        )

    def test_expectedDisconnectBeforeReady(self) -> None:
        """An expected disconnect counts between i_am_here and i_am_ready too."""
        self.h.sync.hereCalled()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.disconnectExpected("reset requested")  # again: harmless
        self.h.sync.linkLost()
        self.assertEnded(["register"])

    def test_expectedDisconnectWatchdog(self) -> None:
        """
        After an expected disconnect, a silent controller closes the link without
        a reset; polls still feed the watchdog. i_am_ready keeps the expectation.
        """
        self.h.sync.hereCalled()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.readyCalled()
        self.assertEqual(self.h.effects, ["register", "synced"])
        self.assertEqual(self.h.state, "syncedExpecting")
        self.h.clock.advance(50)
        self.h.sync.pollArrived()
        self.h.clock.advance(59)
        self.assertEqual(self.h.effects, ["register", "synced"])
        self.h.clock.advance(1)
        self.assertEnded(["register", "synced", "close"])
        self.assertEqual(self.h.logged.reasons()[-1], "no poll for 60 s")

    def test_expectedDisconnectRearmsWatchdog(self) -> None:
        """Expecting the disconnect while synchronised keeps exactly one watchdog."""
        self.synchronise()
        self.h.clock.advance(30)
        self.h.sync.disconnectExpected("reset requested")
        self.assertEqual(self.h.timers(), [90.0])
        self.h.sync.disconnectExpected("firmware update accepted")
        self.assertEqual(self.h.timers(), [90.0])

    def test_expectedDisconnectStillRefusesSecondHere(self) -> None:
        """An expected disconnect excuses a lost link, not a second controller."""
        self.synchronise()
        self.h.sync.disconnectExpected("reset requested")
        self.assertIs(self.h.sync.hereCalled(), True)
        self.assertEnded(["close", ("reset", SECOND_HERE)])

    def test_expectedDisconnectBeforeHere(self) -> None:
        """Before any i_am_here an expected disconnect means nothing (logged)."""
        self.h.sync.disconnectExpected("reset requested")
        self.assertIn("agent sync: disconnectExpected ignored while fresh", self.h.logged.texts())
        self.h.sync.hereCalled()
        self.h.sync.linkLost()
        self.assertEnded(["register", ("reset", "link lost")])

    def test_lateInputs(self) -> None:
        """Every input after the end is absorbed: no effect, no timer, no error."""
        ends: list[Calls] = [
            [("exitCalled", ())],
            [("queueOverflowed", ())],
            [*AGENT_SYNCED, ("linkLost", ())],
            [*AGENT_SYNCED, ("advance", (60,))],
            [*AGENT_EXPECTING, ("linkLost", ())],
        ]
        for end in ends:
            self.h = AgentHarness()
            self.h.drive(end)
            self.assertEqual(self.h.state, "ended")
            del self.h.effects[:]
            self.assertIs(self.h.sync.hereCalled(), True)
            self.h.sync.readyCalled()
            self.h.sync.pollArrived()
            self.h.sync.linkLost()
            self.h.sync.queueOverflowed()
            self.h.sync.disconnectExpected("reset requested")
            self.h.sync.exitCalled()
            self.h.sync.watchdogExpired()
            self.h.clock.advance(1000)
            self.assertEnded([])


class ControllerSyncTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ControllerHarness()

    def assertEnded(self, effects: Sequence[object]) -> None:
        self.assertEqual(self.h.effects, list(effects))
        self.assertEqual(self.h.state, "ended")
        self.assertEqual(self.h.clock.getDelayedCalls(), [])

    def test_handshake(self) -> None:
        """Connect, i_am_here (timed), i_am_ready, synchronised; no timer is left."""
        self.h.sync.start()
        self.assertEqual(self.h.effects, ["connect"])
        self.assertEqual(self.h.timers(), [])
        self.h.sync.connected()
        self.assertEqual(self.h.effects, ["connect", "here"])
        self.assertEqual(self.h.timers(), [5.0])
        self.h.sync.hereAnswered(False)
        self.assertEqual(self.h.effects, ["connect", "here", "ready"])
        self.assertEqual(self.h.timers(), [])
        self.h.sync.readyAnswered()
        self.assertEqual(self.h.effects, ["connect", "here", "ready", "synced"])
        self.assertEqual(self.h.timers(), [])
        self.assertEqual(self.h.state, "synced")

    def test_nothingBeforeStart(self) -> None:
        """Before start() every input but stop is absorbed (logged)."""
        self.h.sync.connected()
        self.h.sync.hereAnswered(False)
        self.h.sync.lost("gone")
        self.assertEqual(self.h.effects, [])
        self.assertEqual(self.h.state, "idle")
        self.assertEqual(
            self.h.logged.texts(LogLevel.info),
            [
                "controller sync: connected ignored while idle",
                "controller sync: hereAnswered ignored while idle",
                "controller sync: lost ignored while idle",
            ],
        )

    def test_connectionRefused(self) -> None:
        """Connection errors are retried every retry_interval, logged with the reason."""
        self.h.sync.start()
        for attempt in range(1, 4):
            self.h.sync.connectFailed("Connection refused")
            self.assertEqual(self.h.effects, ["connect"] * attempt)
            self.h.clock.advance(0.9)
            self.assertEqual(self.h.effects, ["connect"] * attempt)
            self.h.clock.advance(0.1)
            self.assertEqual(self.h.effects, ["connect"] * (attempt + 1))
        self.assertEqual(self.h.timers(), [])
        self.assertEqual(self.h.logged.reasons(), ["connection failed: Connection refused"] * 3)
        self.h.sync.connected()
        self.assertEqual(self.h.effects[-1], "here")

    def test_retryTiming(self) -> None:
        """The retry interval and i_am_here timeout come from the timings."""
        self.h = ControllerHarness(SyncTimings(here_timeout=0.5, retry_interval=3))
        self.h.sync.start()
        self.h.sync.connectFailed("refused")
        self.assertEqual(self.h.timers(), [3.0])
        self.h.clock.advance(3)
        self.h.sync.connected()
        self.assertEqual(self.h.timers(), [3.5])
        self.assertEqual(self.h.logged.reasons(), ["connection failed: refused"])

    def test_lostWhileConnecting(self) -> None:
        self.h.sync.start()
        self.h.sync.lost("reset")
        self.h.clock.advance(1)
        self.assertEqual(self.h.effects, ["connect", "connect"])

    def test_hereTimeout(self) -> None:
        """A timed-out i_am_here is dropped and called again at once, every time."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.clock.advance(4.9)
        self.assertEqual(self.h.effects, ["connect", "here"])
        self.h.clock.advance(0.1)
        self.assertEqual(self.h.effects, ["connect", "here", "cancelHere", "here"])
        self.assertEqual(self.h.timers(), [10.0])
        self.h.clock.advance(5)
        self.assertEqual(self.h.effects, ["connect", "here"] + ["cancelHere", "here"] * 2)
        self.assertEqual(self.h.logged.reasons(), ["no answer to i_am_here within 5 s"] * 2)
        self.h.sync.hereAnswered(False)
        self.h.sync.readyAnswered()
        self.assertEqual(self.h.effects[-2:], ["ready", "synced"])
        self.assertEqual(self.h.timers(), [])

    def test_agentAlreadySeen(self) -> None:
        """
        An agent that answers True resets: drop the connection, connect again
        after retry_interval, until it answers False.
        """
        self.h.sync.start()
        for _ in range(3):
            self.h.sync.connected()
            self.h.sync.hereAnswered(True)
            self.assertEqual(self.h.effects[-2:], ["here", "drop"])
            self.assertEqual(len(self.h.timers()), 1)
            self.h.sync.lost("dropped")  # late news of our own drop
            self.h.clock.advance(1)
            self.assertEqual(self.h.effects[-1], "connect")
        self.h.sync.connected()
        self.h.sync.hereAnswered(False)
        self.h.sync.readyAnswered()
        self.assertEqual(
            self.h.effects, ["connect", "here", "drop"] * 3 + ["connect", "here", "ready", "synced"]
        )
        self.assertEqual(self.h.timers(), [])
        self.assertEqual(
            self.h.logged.reasons(),
            ["the agent had already seen a controller and resets its board"] * 3,
        )

    def test_hereFailed(self) -> None:
        """An error answer to i_am_here drops the connection and retries."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.callFailed("no such method")
        self.assertEqual(self.h.effects, ["connect", "here", "drop"])
        self.assertEqual(self.h.timers(), [1.0])
        self.h.clock.advance(1)
        self.assertEqual(self.h.effects[-1], "connect")
        self.assertEqual(self.h.logged.reasons(), ["start-up call failed: no such method"])

    def test_readyFailed(self) -> None:
        """An error answer to i_am_ready (or its timeout) drops the connection and retries."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.hereAnswered(False)
        self.h.sync.callFailed("timeout")
        self.assertEqual(self.h.effects, ["connect", "here", "ready", "drop"])
        self.h.clock.advance(1)
        self.assertEqual(self.h.effects[-1], "connect")

    def test_lostWhileGreeting(self) -> None:
        """A link cut during i_am_here: no drop needed, retry after retry_interval."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.lost("Connection reset by peer")
        self.assertEqual(self.h.effects, ["connect", "here"])
        self.assertEqual(self.h.timers(), [1.0])  # the here timeout is gone
        self.h.clock.advance(1)
        self.assertEqual(self.h.effects, ["connect", "here", "connect"])
        self.assertEqual(
            self.h.logged.reasons(), ["link lost before sync: Connection reset by peer"]
        )

    def test_lostWhileReadying(self) -> None:
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.hereAnswered(False)
        self.h.sync.lost("Connection reset by peer")
        self.h.clock.advance(1)
        self.assertEqual(self.h.effects, ["connect", "here", "ready", "connect"])

    def test_lateAnswersWhileWaiting(self) -> None:
        """While waiting to retry, late news of the old connection changes nothing."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.callFailed("boom")
        del self.h.effects[:]
        self.h.sync.hereAnswered(False)
        self.h.sync.readyAnswered()
        self.h.sync.callFailed("boom")
        self.h.sync.lost("dropped")
        self.h.sync.connectFailed("refused")
        self.assertEqual(self.h.effects, [])
        self.assertEqual(self.h.timers(), [1.0])
        self.h.clock.advance(1)
        self.assertEqual(self.h.effects, ["connect"])

    def test_outOfPlaceInputs(self) -> None:
        """Inputs that make no sense where the machine is are logged and absorbed."""
        self.h.sync.start()
        self.h.sync.readyAnswered()
        self.h.sync.hereAnswered(True)
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.readyAnswered()
        self.h.sync.connected()
        self.h.sync.hereAnswered(False)
        self.h.sync.hereAnswered(True)
        self.assertEqual(self.h.effects, ["connect", "here", "ready"])
        self.assertEqual(self.h.state, "readying")
        self.assertEqual(
            self.h.logged.texts(LogLevel.info)[:3],
            [
                "controller sync: readyAnswered ignored while connecting",
                "controller sync: hereAnswered ignored while connecting",
                "controller sync: start ignored while connecting",
            ],
        )

    def test_agentRestarted(self) -> None:
        """A synchronised link that drops ends the controller with code 1."""
        self.h.synchronise()
        self.h.sync.lost("Connection reset by peer")
        self.assertEnded([("end", 1, "link lost: Connection reset by peer")])
        self.assertIn(
            "controller sync: link ended: link lost: Connection reset by peer (exit code 1)",
            self.h.logged.texts(LogLevel.warn),
        )

    def test_pollOverdue(self) -> None:
        self.h.synchronise()
        self.h.sync.pollOverdue()
        self.assertEnded([("end", 1, "no answer to a poll within 30 s")])
        self.assertEqual(self.h.logged.reasons(), ["no answer to a poll within 30 s"])

    def test_protocolViolation(self) -> None:
        """An unusable poll answer ends a synchronised link as a loss does (code 1)."""
        self.h.synchronise()
        self.h.sync.protocolViolation("retrieve_vars_and_errors answered nil")
        reason = "protocol violation: retrieve_vars_and_errors answered nil"
        self.assertEnded([("end", 1, reason)])
        self.assertEqual(self.h.logged.reasons(), [reason])
        self.h.sync.lost("closed")
        self.h.sync.protocolViolation("again")
        self.assertEnded([("end", 1, reason)])

    def test_protocolViolationExpecting(self) -> None:
        """Garbage is not the disconnect that was expected: code 1 all the same."""
        self.h.synchronise()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.protocolViolation("retrieve_vars_and_errors answered 5")
        self.assertEnded([("end", 1, "protocol violation: retrieve_vars_and_errors answered 5")])

    def test_protocolViolationBeforeSync(self) -> None:
        """Before sync there is no poll: the input is absorbed."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.protocolViolation("x")
        self.assertEqual(self.h.effects, ["connect", "here"])
        self.assertEqual(self.h.state, "greeting")

    def test_expectedDisconnect(self) -> None:
        """After an expected disconnect, losing the link ends with code 0."""
        self.h.synchronise()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.disconnectExpected("firmware update accepted")
        self.assertEqual(self.h.effects, [])
        self.h.sync.lost("Connection reset by peer")
        reason = (
            "the satellite resets as requested (reset requested): "
            "link lost: Connection reset by peer"
        )
        self.assertEnded([("end", 0, reason)])
        self.assertIn(reason, self.h.logged.reasons())

    def test_expectedDisconnectPollOverdue(self) -> None:
        """A satellite that goes silent after an expected disconnect ends with code 0 too."""
        self.h.synchronise()
        self.h.sync.disconnectExpected("firmware update accepted")
        self.h.sync.pollOverdue()
        self.assertEnded(
            [
                (
                    "end",
                    0,
                    "the satellite resets as requested (firmware update accepted): "
                    "no answer to a poll within 30 s",
                )
            ]
        )

    def test_disconnectExpectedBeforeSync(self) -> None:
        """Before the link is synchronised an expected disconnect means nothing."""
        self.h.sync.start()
        self.h.sync.connected()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.hereAnswered(False)
        self.h.sync.readyAnswered()
        del self.h.effects[:]
        self.h.sync.lost("gone")
        self.assertEnded([("end", 1, "link lost: gone")])

    def test_stopSynced(self) -> None:
        """Stopping a synchronised link says exit; the loss that follows is absorbed."""
        self.h.synchronise()
        self.h.sync.stop()
        self.assertEnded(["exit"])
        self.h.sync.lost("closed")
        self.h.sync.pollOverdue()
        self.assertEnded(["exit"])

    def test_stopSyncedExpecting(self) -> None:
        self.h.synchronise()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.stop()
        self.h.sync.lost("closed")
        self.assertEnded(["exit"])

    def test_stopBeforeSync(self) -> None:
        """Stopping before sync cancels every timer and says no exit."""
        for prepare in CONTROLLER_PATHS.values():
            if ("readyAnswered", ()) in prepare or ("stop", ()) in prepare:
                continue
            self.h = ControllerHarness()
            self.h.drive(prepare)
            del self.h.effects[:]
            self.h.sync.stop()
            self.assertEnded([])
            self.h.clock.advance(100)
            self.assertEnded([])
            self.assertIn("stopping", self.h.logged.reasons())

    def test_connectedAfterStop(self) -> None:
        """A connection that succeeds after stop() is dropped."""
        self.h.sync.start()
        self.h.sync.stop()
        self.h.sync.connected()
        self.assertEnded(["connect", "drop"])

    def test_lateInputs(self) -> None:
        """Every input after the end is absorbed: no effect, no timer, no error."""
        self.h.synchronise()
        self.h.sync.lost("gone")
        del self.h.effects[:]
        self.h.sync.start()
        self.h.sync.connectFailed("refused")
        self.h.sync.hereAnswered(False)
        self.h.sync.hereAnswered(True)
        self.h.sync.readyAnswered()
        self.h.sync.callFailed("boom")
        self.h.sync.lost("gone")
        self.h.sync.pollOverdue()
        self.h.sync.disconnectExpected("reset requested")
        self.h.sync.stop()
        self.h.sync.hereTimedOut()
        self.h.sync.retryDue()
        self.h.sync.agentFresh()
        self.h.sync.agentResetting()
        self.h.clock.advance(1000)
        self.assertEnded([])


# -- both ends over a fake network ------------------------------------------------


class _Connection:
    def __init__(self, agent: AgentSyncInputs) -> None:
        self.agent = agent
        self.open = True


class Station:
    """
    A controller machine and the agent machine of the board it talks to, over a
    fake network: every message takes L{LATENCY}; a board reset takes
    L{RESET_DELAY} plus L{BOOT} and brings a fresh agent machine.
    """

    LATENCY = 0.01
    RESET_DELAY = 0.25
    BOOT = 2.0

    def __init__(self) -> None:
        self.clock = Clock()
        self.timings = SyncTimings()
        self.logged = LogEvents()
        self.resets: list[str] = []
        self.ends: list[tuple[int, str]] = []
        self.answers: list[bool] = []
        self.boots = 0
        self.agent: AgentSyncInputs | None = None
        self.agentSynced = False
        self.conn: _Connection | None = None
        self._hereToken: object | None = None
        self.polls = 0
        self._boot()
        self.controllerSynced = False
        self.controller = self._newController()

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.005)):
            self.clock.advance(0.005)

    def _later(self, f: Callable[..., object], *args: object, delay: float = LATENCY) -> None:
        self.clock.callLater(delay, f, *args)

    # -- the agent's board

    def _boot(self) -> None:
        self.boots += 1
        self.agentSynced = False
        self.agent = AgentSync(
            AgentSyncCore(
                clock=self.clock,
                timings=self.timings,
                registerMethods=lambda: None,
                linkSynced=self._agentLinkSynced,
                closeLink=self._agentClosesLink,
                resetBoard=self._resetBoard,
                log=Logger(namespace="test.station.agent", observer=self.logged),
            )
        )

    def _agentLinkSynced(self) -> None:
        self.agentSynced = True

    def _agentClosesLink(self) -> None:
        conn = self.conn
        if conn is not None and conn.open:
            # after the answer being written now
            self._later(self._close, conn, "closed by the agent", delay=2 * self.LATENCY)

    def _resetBoard(self, reason: str) -> None:
        self.resets.append(reason)
        self.agent = None  # connections are refused from now on
        self._later(self._boot, delay=self.RESET_DELAY + self.BOOT)

    def _close(self, conn: _Connection, reason: str) -> None:
        if not conn.open:
            return
        conn.open = False
        if conn is self.conn:
            self.conn = None
            self.controllerSynced = False
            self.controller.lost(reason)

    def rebootAgent(self) -> None:
        """The satellite board power-cycles."""
        if self.conn is not None:
            self._later(self._close, self.conn, "Connection reset by peer")
        self.agent = None
        self._later(self._boot, delay=self.BOOT)

    # -- the controller

    def _newController(self) -> ControllerSyncInputs:
        return ControllerSync(
            ControllerSyncCore(
                clock=self.clock,
                timings=self.timings,
                connect=self._connect,
                callHere=self._callHere,
                cancelHere=self._cancelHere,
                callReady=self._callReady,
                dropConnection=self._drop,
                linkSynced=self._controllerLinkSynced,
                sayExit=self._sayExit,
                end=lambda code, reason: self.ends.append((code, reason)),
                log=Logger(namespace="test.station.controller", observer=self.logged),
            )
        )

    def restartController(self) -> None:
        """The main board power-cycles: its connection dies without the agent noticing."""
        if self.conn is not None:
            self.conn.open = False
            self.conn = None
        self.controllerSynced = False
        self.controller = self._newController()
        self.controller.start()

    def _connect(self) -> None:
        controller = self.controller

        def attempt() -> None:
            if self.agent is None:
                controller.connectFailed("Connection refused")
            else:
                self.conn = _Connection(self.agent)
                controller.connected()

        self._later(attempt)

    def _callHere(self) -> None:
        conn = self.conn
        assert conn is not None and conn.open
        token = self._hereToken = object()

        def call() -> None:
            if conn.open:
                seen = conn.agent.hereCalled()
                self._later(answer, seen)

        def answer(seen: bool) -> None:
            if token is self._hereToken and conn is self.conn:
                self.answers.append(seen)
                self.controller.hereAnswered(seen)

        self._later(call)

    def _cancelHere(self) -> None:
        self._hereToken = None

    def _callReady(self) -> None:
        conn = self.conn
        assert conn is not None and conn.open

        def call() -> None:
            if conn.open:
                conn.agent.readyCalled()
                self._later(answer)

        def answer() -> None:
            if conn.open and conn is self.conn:
                self.controller.readyAnswered()

        self._later(call)

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and conn.open:
            conn.open = False
            self._later(conn.agent.linkLost)

    def _controllerLinkSynced(self) -> None:
        self.controllerSynced = True
        conn = self.conn
        assert conn is not None

        def poll() -> None:
            if conn.open and conn is self.conn:
                self.polls += 1
                self._later(conn.agent.pollArrived)
                self._later(poll, delay=1.0)

        poll()

    def _sayExit(self) -> None:
        conn = self.conn
        if conn is not None and conn.open:
            self._later(conn.agent.exitCalled)


class StationTests(SynchronousTestCase):
    """Both machines together: the single common start point in practice."""

    def setUp(self) -> None:
        self.s = Station()

    def test_handshake(self) -> None:
        self.s.controller.start()
        self.s.run(0.1)
        self.assertTrue(self.s.controllerSynced)
        self.assertTrue(self.s.agentSynced)
        self.assertEqual(self.s.answers, [False])
        self.s.run(120)  # polls keep the agent's watchdog quiet
        self.assertGreater(self.s.polls, 100)
        self.assertEqual((self.s.resets, self.s.ends, self.s.boots), ([], [], 1))

    def test_agentRestarted(self) -> None:
        """The satellite reboots under a synchronised controller: it ends with code 1."""
        self.s.controller.start()
        self.s.run(0.1)
        self.s.rebootAgent()
        self.s.run(5)
        self.assertEqual(self.s.ends, [(1, "link lost: Connection reset by peer")])
        self.assertEqual(self.s.resets, [])

    def test_controllerRestarted(self) -> None:
        """
        The main board reboots without the agent noticing: the new controller's
        i_am_here is refused, the agent resets, the controller retries through
        refused connections and synchronises with the fresh agent.
        """
        self.s.controller.start()
        self.s.run(0.1)
        self.s.restartController()
        self.s.run(5)
        self.assertEqual(self.s.answers, [False, True, False])
        self.assertEqual(self.s.resets, [SECOND_HERE])
        self.assertEqual(self.s.boots, 2)
        self.assertTrue(self.s.controllerSynced)
        self.assertTrue(self.s.agentSynced)
        self.assertEqual(self.s.ends, [])
        self.assertIn(
            "controller sync: connection failed: Connection refused; connecting again in 1 s",
            self.s.logged.texts(),
        )

    def test_controllerVanishes(self) -> None:
        """A controller that stops polling without closing is caught by the watchdog."""
        self.s.controller.start()
        self.s.run(0.1)
        assert self.s.conn is not None
        self.s.conn.open = False  # the controller hangs
        self.s.run(61)
        self.assertEqual(self.s.resets, ["no poll for 60 s"])

    def test_exit(self) -> None:
        """A controller that stops on purpose says exit; the agent resets, nothing ends."""
        self.s.controller.start()
        self.s.run(0.1)
        self.s.controller.stop()
        self.s.run(1)
        self.assertEqual(self.s.resets, ["controller exit"])
        self.assertEqual(self.s.ends, [])

    def test_expectedReset(self) -> None:
        """A requested reset: both sides expect it; the controller ends with code 0."""
        self.s.controller.start()
        self.s.run(0.1)
        assert self.s.agent is not None
        self.s.agent.disconnectExpected("reset requested")
        self.s.controller.disconnectExpected("reset requested")
        self.s.rebootAgent()
        self.s.run(5)
        self.assertEqual(
            self.s.ends,
            [
                (
                    0,
                    "the satellite resets as requested (reset requested): "
                    "link lost: Connection reset by peer",
                )
            ],
        )


# -- every input in every state -------------------------------------------------------

AGENT_PATHS: dict[str, Calls] = {
    "fresh": [],
    "greeted": [("hereCalled", ())],
    "greetedExpecting": [("hereCalled", ()), ("disconnectExpected", ("reset requested",))],
    "synced": [("hereCalled", ()), ("readyCalled", ())],
    "syncedExpecting": [
        ("hereCalled", ()),
        ("readyCalled", ()),
        ("disconnectExpected", ("reset requested",)),
    ],
    "ended": [("exitCalled", ())],
}
AGENT_INPUTS: Calls = [
    ("hereCalled", ()),
    ("readyCalled", ()),
    ("exitCalled", ()),
    ("pollArrived", ()),
    ("linkLost", ()),
    ("queueOverflowed", ()),
    ("disconnectExpected", ("firmware update accepted",)),
    ("watchdogExpired", ()),
]
AGENT_TIMERS = {"synced": 1, "syncedExpecting": 1}

_SYNCED: Calls = [
    ("start", ()),
    ("connected", ()),
    ("hereAnswered", (False,)),
    ("readyAnswered", ()),
]
CONTROLLER_PATHS: dict[str, Calls] = {
    "idle": [],
    "connecting": [("start", ())],
    "greeting": [("start", ()), ("connected", ())],
    # "answered" lasts only while hereAnswered runs: no input sequence stops there.
    "readying": [("start", ()), ("connected", ()), ("hereAnswered", (False,))],
    "waiting": [("start", ()), ("connectFailed", ("refused",))],
    "synced": _SYNCED,
    "syncedExpecting": [*_SYNCED, ("disconnectExpected", ("reset requested",))],
    "ended": [("stop", ())],
}
CONTROLLER_INPUTS: Calls = [
    ("start", ()),
    ("connected", ()),
    ("connectFailed", ("refused",)),
    ("hereAnswered", (False,)),
    ("hereAnswered", (True,)),
    ("readyAnswered", ()),
    ("callFailed", ("boom",)),
    ("lost", ("gone",)),
    ("pollOverdue", ()),
    ("protocolViolation", ("retrieve_vars_and_errors answered nil",)),
    ("disconnectExpected", ("firmware update accepted",)),
    ("stop", ()),
    ("hereTimedOut", ()),
    ("retryDue", ()),
    ("agentFresh", ()),
    ("agentResetting", ()),
]
CONTROLLER_TIMERS = {"greeting": 1, "waiting": 1}


class TransitionTableTests(SynchronousTestCase):
    """
    Every input in every state: none raises, none leaves a timer behind, and
    together they exercise every transition the machines declare, so every
    state is visited.
    """

    def _checkTimers(
        self, harness: AgentHarness | ControllerHarness, timers: dict[str, int]
    ) -> None:
        self.assertEqual(
            len(harness.clock.getDelayedCalls()), timers.get(harness.state, 0), harness.state
        )

    def test_agent(self) -> None:
        seen: set[Transition] = set()
        for state, path in AGENT_PATHS.items():
            for name, args in AGENT_INPUTS:
                h = AgentHarness()
                h.drive(path)
                self.assertEqual(h.state, state)
                h.drive([(name, args)])
                self._checkTimers(h, AGENT_TIMERS)
                h.clock.advance(1000)  # whatever timer is left may fire
                self._checkTimers(h, AGENT_TIMERS)
                seen.update(h.transitions[1:])
        declared = allTransitions(AgentSync)
        self.assertEqual(seen, declared)
        self.assertEqual({new for _, _, new in declared}, set(AGENT_PATHS))
        self.assertEqual(len(declared), len(AGENT_PATHS) * len(AGENT_INPUTS))

    def test_controller(self) -> None:
        seen: set[Transition] = set()
        for state, path in CONTROLLER_PATHS.items():
            for name, args in CONTROLLER_INPUTS:
                h = ControllerHarness()
                h.drive(path)
                self.assertEqual(h.state, state)
                h.drive([(name, args)])
                self._checkTimers(h, CONTROLLER_TIMERS)
                seen.update(h.transitions[1:])
        seen.update(self._answered())
        declared = allTransitions(ControllerSync)
        self.assertEqual(seen, declared)
        states = {new for _, _, new in declared}
        self.assertEqual(states, {*CONTROLLER_PATHS, "answered"})
        inputs = {name for name, _ in CONTROLLER_INPUTS}
        self.assertEqual(len(declared), len(states) * len(inputs))

    def _answered(self) -> set[Transition]:
        """
        Every input in the transient "answered" state, which only the machine's
        own agentFresh/agentResetting normally leave: start the machine there.
        """
        [answered] = [
            s for s in ControllerSync.__automat_automaton__.states() if s.name == "answered"
        ]
        seen: set[Transition] = set()
        for name, args in CONTROLLER_INPUTS:
            h = ControllerHarness(state=answered)
            h.drive([(name, args)])
            self._checkTimers(h, CONTROLLER_TIMERS)
            expected = {"agentFresh": ["ready"], "agentResetting": ["drop"]}.get(name, [])
            self.assertEqual(h.effects, expected, name)
            seen.update(h.transitions[1:])
        return seen
