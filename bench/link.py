"""
Loopback benchmark of a whole rcp satellite link against upstream's polling.

Run from the checkout::

    python bench/link.py            # full run, about three minutes
    python bench/link.py --quick    # smoke run, about half a minute

Each scheme runs in two fresh processes, each pinned to a CPU of its own
(with two or more CPUs; ``--no-pin`` leaves placement to the scheduler):

- the satellite (``--serve-satellite``): a L{rcp.station.SatelliteBoard}, the
  agent and a simulated EVerest (EvseManager, System), listening on
  127.0.0.1 with mutual TLS; it takes orders on stdin (publish a burst of
  variables, report its counters) and answers on stdout;
- the main board (``--run-scheme``): a L{rcp.station.MainSide} (auth, a
  station consumer, the controller's module) plus a C{bench} module that
  uses the satellite's EVSE, and the controller's link.  It starts the
  satellite, measures, and prints its results as one JSON object.

This process only makes the certificates, runs the schemes one after the
other and prints the comparison.  The two schemes:

- ``rcp``: the agent holds an empty ``retrieve_vars_and_errors`` for up to
  a second and answers as soon as an event is queued; the controller polls
  again at once;
- ``baseline``, upstream's scheme: the agent answers every poll at once
  (hold time 0.1 ms) and the controller waits
  L{rcp.controller.link.POLL_INTERVAL} (25 ms) after every answer before it
  polls again.

Measured, for each scheme:

- ``var_latency``: from C{publishVar} of an C{evse_manager} C{session_event}
  on the satellite's EVerest to its arrival at a subscriber on the main
  board's EVerest (p50, p99, ms).  The satellite publishes one every 20 ms
  on average (10 to 30 ms apart, at random, so polls and events meet at
  every phase) and puts C{time.monotonic()} in the value: CLOCK_MONOTONIC
  is one clock for every process of the machine.
- ``cmd_rtt``: C{evse_manager.get_evse} called by a main-board module, one
  call at a time, through the link to the satellite's EvseManager and back
  (p50, p99, ms).
- ``idle_calls_per_s``: RPC calls on an idle link (polls plus tunnelled
  calls, counted by the controller) over 60 s (10 s with ``--quick``); the
  simulated EvseManager still publishes C{energy_flow_request} every second,
  as EVerest's does.
- ``idle_cpu_s_satellite``, ``idle_cpu_s_main``: user + system CPU seconds
  of each process over that idle window (C{getrusage}).
- ``rss_mb_satellite``, ``rss_mb_main``: VmRSS of each process at the end.

stdout carries one JSON object per measurement (``name``, ``value``,
``unit``, ``baseline``, ``ratio`` = value / baseline) and nothing else;
progress, details and the goal summary go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, cast

# Run as ``python bench/link.py``: the checkout, not bench/, must be importable.
_ROOT: Final = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.posixbase import PosixReactorBase  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.internet.stdio import StandardIO  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols.basic import LineReceiver  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from rcp.certs import createStation  # noqa: E402
from rcp.controller.link import POLL_INTERVAL, ControllerLink  # noqa: E402
from rcp.everest.sim.bus import SimModule  # noqa: E402
from rcp.everest.sim.evse import EVSE  # noqa: E402
from rcp.service import secureClientEndpoint  # noqa: E402
from rcp.station import MainSide, SatelliteBoard, StationOptions  # noqa: E402
from rcp.tls import Credentials, loadCredentials  # noqa: E402
from rcp.tunnel.events import DEFAULT_HOLD  # noqa: E402

HOST: Final = "127.0.0.1"
SATELLITE: Final = "satellite-1"
MAIN: Final = "main"
EVSE_ID: Final = 1
TOKENS: Final = ["DEADBEEF"]

SCHEMES: Final = ("rcp", "baseline")
#: how long the agent holds an empty poll, by scheme
HOLD: Final = {"rcp": DEFAULT_HOLD, "baseline": 0.0001}

#: the main board's module that uses the satellite's EVSE
PROBE: Final = "bench"

#: goals
GOAL_LATENCY_MS: Final = 1.0
GOAL_IDLE_CALLS: Final = 2.0
GOAL_RSS_MB: Final = 45.0


@dataclass(frozen=True)
class Plan:
    """How much work each scheme's measurement does."""

    warmup: int
    latencySamples: int
    #: mean seconds between two published variables
    publishInterval: float
    commandCalls: int
    idleSeconds: float
    #: quiet time before a measurement starts
    settle: float
    #: seconds after which a scheme's run gives up
    limit: float


FULL: Final = Plan(
    warmup=50,
    latencySamples=1000,
    publishInterval=0.020,
    commandCalls=1000,
    idleSeconds=60.0,
    settle=1.0,
    limit=150.0,
)
QUICK: Final = Plan(
    warmup=10,
    latencySamples=100,
    publishInterval=0.020,
    commandCalls=100,
    idleSeconds=10.0,
    settle=0.5,
    limit=60.0,
)
PLANS: Final = {"full": FULL, "quick": QUICK}


def progress(text: str) -> None:
    print(f"[bench-link] {text}", file=sys.stderr, flush=True)


def pin(cpu: int | None) -> None:
    """Run this process on one CPU only, if asked and possible."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def reactorNow() -> PosixReactorBase:
    from twisted.internet import reactor

    return cast(PosixReactorBase, reactor)


def logWarnings() -> None:
    """rcp's warnings and errors to stderr; stdout stays ours."""
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def boardCredentials(certs: Path, board: str) -> Credentials:
    return loadCredentials(
        str(certs / "ca.pem"), str(certs / f"{board}.pem"), str(certs / f"{board}.key")
    )


def cpuSeconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory(pid: int | str = "self") -> dict[str, float]:
    """
    A process's resident memory, MB (2**20 bytes): VmRSS and its RssAnon /
    RssFile parts (/proc/<pid>/status), and Pss and Uss (private pages),
    which do not count library pages shared with other processes
    (/proc/<pid>/smaps_rollup, where the kernel has it).
    """
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for text in status:
            key, _, rest = text.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(rest.split()[0]) / 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            rows = dict(text.split(":", 1) for text in rollup if ":" in text and "-" not in text)
    except OSError:
        return fields
    kB = {key: int(value.split()[0]) for key, value in rows.items()}
    fields["Pss"] = kB.get("Pss", 0) / 1024
    fields["Uss"] = (kB.get("Private_Clean", 0) + kB.get("Private_Dirty", 0)) / 1024
    return fields


def percentile(sortedSamples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(fraction * len(sortedSamples)))
    return sortedSamples[rank - 1]


# -- the satellite process ------------------------------------------------------


class SatelliteControl(LineReceiver):
    """
    Orders on stdin, one a line, each answered by one line on stdout:

    - ``publish <count> <interval> <seed>``: publish C{count} session events
      about C{interval} seconds apart; answered once all are published;
    - ``stats``: this process's counters, as JSON.

    The end of stdin stops the process.
    """

    delimiter = b"\n"

    def __init__(
        self, reactor: PosixReactorBase, board: SatelliteBoard, stages: dict[str, Any]
    ) -> None:
        self.reactor = reactor
        self.board = board
        #: memory at the stages before the link (imports done, board booted)
        self.stages = stages

    def lineReceived(self, line: bytes) -> None:
        words = line.decode("ascii").split()
        if words[:1] == ["publish"]:
            count, interval, seed = int(words[1]), float(words[2]), int(words[3])
            self._publish(0, count, interval, random.Random(seed))
        elif words == ["stats"]:
            self._answer("stats " + json.dumps(self.stats()))
        else:
            self._answer(f"error unknown order {line!r}")

    def _answer(self, text: str) -> None:
        self.sendLine(text.encode("ascii"))

    def _publish(self, sequence: int, count: int, interval: float, rng: random.Random) -> None:
        if sequence == count:
            self._answer(f"published {count}")
            return
        value = {
            "uuid": "bench",
            "timestamp": "",
            "event": "Enabled",
            "connector_id": 1,
            "bench_sequence": sequence,
            "bench_sent": time.monotonic(),
        }
        self.board.evse.module.publishVar(EVSE, "session_event", value)
        delay = interval * rng.uniform(0.5, 1.5)
        self.reactor.callLater(delay, self._publish, sequence + 1, count, interval, rng)

    def stats(self) -> dict[str, Any]:
        queue = self.board.link.queue
        return {
            "cpu": cpuSeconds(),
            "boots": self.board.boots,
            "delivered": queue.delivered,
            "coalesced": queue.coalesced,
            "memory": {**self.stages, "now": memory()},
        }

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.reactor.running:
            self.reactor.stop()


def serveSatellite(scheme: str, certs: Path, cpu: int | None) -> None:
    """Boot the satellite, say its port, take orders until stdin ends."""
    pin(cpu)
    logWarnings()
    stages = {"imported": memory()}
    reactor = reactorNow()
    options = StationOptions(satellites=1, holdTime=HOLD[scheme])
    board = SatelliteBoard(
        reactor,
        SATELLITE,
        EVSE_ID,
        boardCredentials(certs, SATELLITE),
        options,
        lambda name, text: progress(f"{scheme}: {name} {text}"),
        listen=True,
    )

    def booted(_: None) -> None:
        stages["booted"] = memory()
        StandardIO(SatelliteControl(reactor, board, stages), reactor=reactor)
        sys.stdout.write(f"port {board.port}\n")
        sys.stdout.flush()

    def failed(failure: Failure) -> None:
        progress(f"the satellite did not boot: {failure.getErrorMessage()}")
        reactor.stop()

    reactor.callWhenRunning(
        lambda: Deferred.fromCoroutine(board.boot()).addCallbacks(booted, failed)
    )
    reactor.run()


# -- the main board process -------------------------------------------------------


class SatelliteProcess(ProcessProtocol):
    """The satellite child, seen from the main board: orders out, answers in."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: deque[str] = deque()
        self._waiting: deque[Deferred[str]] = deque()
        self._gone: Failure | None = None
        self.exited: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            text = line.decode("ascii")
            if self._waiting:
                self._waiting.popleft().callback(text)
            else:
                self._lines.append(text)

    def nextLine(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        if self._lines:
            d.callback(self._lines.popleft())
        elif self._gone is not None:
            d.errback(self._gone)
        else:
            self._waiting.append(d)
        return d

    async def order(self, text: str, answer: str) -> str:
        """Send one order; its answer, which must start with C{answer}."""
        assert self.transport is not None
        self.transport.write(f"{text}\n".encode("ascii"))
        line = await self.nextLine()
        if not line.startswith(answer + " "):
            raise RuntimeError(f"the satellite answered {line!r} to {text!r}")
        return line[len(answer) + 1 :]

    async def stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(await self.order("stats", "stats")))

    def processEnded(self, reason: Failure) -> None:
        self._gone = reason
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
        self.exited.callback(None)


class BenchControllerLink(ControllerLink):
    """
    The controller's link, counting the calls it makes; with C{paced}, it
    polls as upstream's controller does: C{POLL_INTERVAL} after every answer.
    """

    paced = False
    #: tunnelled calls (commands, push_var); polls are counted by C{polls}
    calls = 0

    def _call(self, method: str, *params: Any) -> Deferred[Any]:
        self.calls += 1
        return super()._call(method, *params)

    def _polled(self, batch: Any, started: float) -> None:
        if not self.paced:
            super()._polled(batch, started)
            return
        self.polls += 1
        try:
            self.tunnel.deliver(batch)
        except ValueError as e:
            self.log.error("controller: bad answer to a poll: {error}", error=str(e))
        self.clock.callLater(POLL_INTERVAL, self._poll)


class LinkEnded(Exception):
    pass


class MainBoardRun:
    """One scheme's run, on the main board."""

    def __init__(
        self,
        reactor: PosixReactorBase,
        scheme: str,
        certs: Path,
        plan: Plan,
        satelliteCpu: int | None,
    ) -> None:
        self.reactor = reactor
        self.scheme = scheme
        self.certs = certs
        self.plan = plan
        self.satelliteCpu = satelliteCpu
        self.satellite = SatelliteProcess()
        self.arrivals: dict[int, float] = {}
        self._arrivalWaiter: tuple[int, Deferred[None]] | None = None
        self.ended: Deferred[None] = Deferred()
        #: this process's memory at each stage
        self.stages = {"imported": memory()}
        self.link: BenchControllerLink | None = None
        self.main: MainSide
        self.probe: SimModule
        self.ready: Deferred[None]

    def note(self, text: str) -> None:
        progress(f"{self.scheme}: {text}")

    # -- set-up -----------------------------------------------------------------

    async def startSatellite(self) -> int:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-satellite"]
        command += ["--scheme", self.scheme, "--certs", str(self.certs)]
        if self.satelliteCpu is not None:
            command += ["--cpu", str(self.satelliteCpu)]
        self.reactor.spawnProcess(
            self.satellite,
            sys.executable,
            command,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: 2},
        )
        line = await self.satellite.nextLine()
        if not line.startswith("port "):
            raise RuntimeError(f"the satellite said {line!r}")
        return int(line.split()[1])

    def startMain(self, port: int) -> None:
        self.main = MainSide(self.reactor, EVSE_ID, TOKENS)
        self.probe = self.main.bus.module(
            PROBE, {"evse_manager": [("satellite_controller", "evse_manager")]}
        )
        self.probe.subscribeVar("evse_manager", "session_event", self._arrived)
        endpoint = secureClientEndpoint(
            TCP4ClientEndpoint(self.reactor, HOST, port),
            boardCredentials(self.certs, MAIN),
            SATELLITE,
        )
        link = self.link = BenchControllerLink(
            self.main.controller, self.reactor, endpoint, self._ended, holdTime=HOLD["rcp"]
        )
        link.paced = self.scheme == "baseline"
        self.main.start()
        self.ready = self.probe.signalReady()
        link.start()

    def _ended(self, code: int, reason: str) -> None:
        if not self.ended.called:
            self.ended.errback(LinkEnded(f"the link ended with code {code}: {reason}"))

    def _arrived(self, value: Any) -> None:
        if not isinstance(value, dict) or "bench_sequence" not in value:
            return
        self.arrivals[value["bench_sequence"]] = time.monotonic() - value["bench_sent"]
        waiter = self._arrivalWaiter
        if waiter is not None and len(self.arrivals) >= waiter[0]:
            self._arrivalWaiter = None
            waiter[1].callback(None)

    async def sleep(self, seconds: float) -> None:
        await deferLater(self.reactor, seconds, lambda: None)

    # -- measurements -------------------------------------------------------------

    async def publishBurst(self, count: int, seed: int) -> list[float]:
        """Latencies, seconds, of C{count} events published on the satellite."""
        self.arrivals = {}
        arrived: Deferred[None] = Deferred()
        self._arrivalWaiter = (count, arrived)
        await self.satellite.order(
            f"publish {count} {self.plan.publishInterval} {seed}", "published"
        )
        # the last one may still be on its way
        arrived.addTimeout(5.0, self.reactor)
        try:
            await arrived
        except Exception:
            lost = count - len(self.arrivals)
            raise RuntimeError(f"{lost} of {count} variables never arrived") from None
        if sorted(self.arrivals) != list(range(count)):
            raise RuntimeError("variables arrived out of their sequence numbers")
        return [self.arrivals[i] for i in range(count)]

    async def commands(self, count: int) -> list[float]:
        """Round-trip times, seconds, of C{count} get_evse calls, one at a time."""
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            evse = await self.probe.call("evse_manager", "get_evse", {})
            samples.append(time.perf_counter() - started)
            if not isinstance(evse, dict) or evse.get("id") != EVSE_ID:
                raise RuntimeError(f"get_evse answered {evse!r}")
        return samples

    async def idle(self) -> dict[str, float]:
        seconds = self.plan.idleSeconds
        link = self.link
        assert link is not None
        await self.sleep(self.plan.settle)
        before = await self.satellite.stats()
        polls, calls, cpu = link.polls, link.calls, cpuSeconds()
        started = time.monotonic()
        await self.sleep(seconds)
        elapsed = time.monotonic() - started
        cpuMain = cpuSeconds() - cpu
        after = await self.satellite.stats()
        return {
            "seconds": elapsed,
            "polls_per_s": (link.polls - polls) / elapsed,
            "tunnel_calls_per_s": (link.calls - calls) / elapsed,
            "events_per_s": (after["delivered"] - before["delivered"]) / elapsed,
            "cpu_main": cpuMain,
            "cpu_satellite": after["cpu"] - before["cpu"],
        }

    # -- the run ------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        port = await self.startSatellite()
        self.startMain(port)
        await self.ready
        self.note(f"link synchronised in {time.monotonic() - started:.2f} s")
        await self.sleep(self.plan.settle)
        self.stages["linked"] = memory()
        satelliteLinked = (await self.satellite.stats())["memory"]["now"]

        await self.publishBurst(self.plan.warmup, seed=1)
        await self.commands(self.plan.warmup)

        self.note(
            f"publishing {self.plan.latencySamples} variables,"
            f" one per {self.plan.publishInterval * 1000:.0f} ms on average"
        )
        latency = sorted(await self.publishBurst(self.plan.latencySamples, seed=2))
        self.note(f"calling get_evse {self.plan.commandCalls} times")
        rtt = sorted(await self.commands(self.plan.commandCalls))
        self.note(f"idle for {self.plan.idleSeconds:.0f} s")
        idle = await self.idle()

        satellite = await self.satellite.stats()
        self.stages["end"] = main = memory()
        if satellite["boots"] != 1:
            raise RuntimeError("the satellite board reset during the run")
        satelliteStages = satellite["memory"]
        satelliteStages["linked"] = satelliteLinked
        satelliteStages["end"] = satelliteStages.pop("now")
        return {
            "var_latency_p50": percentile(latency, 0.50) * 1000,
            "var_latency_p99": percentile(latency, 0.99) * 1000,
            "var_latency_max": latency[-1] * 1000,
            "cmd_rtt_p50": percentile(rtt, 0.50) * 1000,
            "cmd_rtt_p99": percentile(rtt, 0.99) * 1000,
            "idle_calls_per_s": idle["polls_per_s"] + idle["tunnel_calls_per_s"],
            "idle_polls_per_s": idle["polls_per_s"],
            "idle_events_per_s": idle["events_per_s"],
            "idle_cpu_s_satellite": idle["cpu_satellite"],
            "idle_cpu_s_main": idle["cpu_main"],
            "idle_seconds": idle["seconds"],
            "rss_mb_satellite": satelliteStages["end"]["VmRSS"],
            "rss_mb_main": main["VmRSS"],
            "memory": {"main": self.stages, "satellite": satelliteStages},
        }

    async def runAndStop(self) -> dict[str, Any]:
        measuring = Deferred.fromCoroutine(self.run())
        measuring.addTimeout(self.plan.limit, self.reactor)
        try:
            # whichever comes first: the results, or the end of the link
            results = await _first(measuring, self.ended)
            # The clean way out: the controller says exit, the agent ends the
            # link (and resets its board, as upstream's does).
            assert self.link is not None
            stopping = self.link.stop()
            stopping.addTimeout(10.0, self.reactor)
            await stopping
            return results
        finally:
            if self.link is not None:
                self.link.halt()
            if self.satellite.transport is not None:
                self.satellite.transport.closeStdin()
            exited = self.satellite.exited
            exited.addTimeout(10.0, self.reactor)
            await exited


async def _first(results: Deferred[dict[str, Any]], ended: Deferred[None]) -> dict[str, Any]:
    """The results, unless the link ends before them."""
    outcome: Deferred[dict[str, Any]] = Deferred()

    def fail(failure: Failure) -> None:
        if not outcome.called:
            outcome.errback(failure)
        if not results.called:
            results.cancel()

    def done(value: dict[str, Any]) -> None:
        if not outcome.called:
            outcome.callback(value)

    results.addCallbacks(done, fail)
    ended.addErrback(fail)
    return await outcome


def runScheme(
    scheme: str, certs: Path, plan: Plan, cpu: int | None, satelliteCpu: int | None
) -> None:
    """The main board of one scheme: measure, print the results as one JSON line."""
    pin(cpu)
    logWarnings()

    async def main(reactor: PosixReactorBase) -> None:
        results = await MainBoardRun(reactor, scheme, certs, plan, satelliteCpu).runAndStop()
        print(json.dumps(results), flush=True)

    react(main)


# -- this process: both schemes and the comparison ---------------------------------


#: what goes to stdout: (name, unit)
MEASUREMENTS: Final = (
    ("var_latency_p50", "ms"),
    ("var_latency_p99", "ms"),
    ("cmd_rtt_p50", "ms"),
    ("cmd_rtt_p99", "ms"),
    ("idle_calls_per_s", "calls/s"),
    ("idle_cpu_s_satellite", "s"),
    ("idle_cpu_s_main", "s"),
    ("rss_mb_satellite", "MB"),
    ("rss_mb_main", "MB"),
)


def schemeProcess(
    scheme: str, certs: Path, planName: str, cpus: tuple[int, int] | None
) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--run-scheme", scheme]
    command += ["--certs", str(certs), "--plan", planName]
    if cpus is not None:
        command += ["--cpu", str(cpus[0]), "--satellite-cpu", str(cpus[1])]
    plan = PLANS[planName]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=plan.limit + 30
    )
    if done.returncode != 0:
        raise SystemExit(f"the {scheme} run failed with status {done.returncode}")
    lines = done.stdout.decode("utf-8").splitlines()
    if not lines:
        raise SystemExit(f"the {scheme} run printed no results")
    return cast(dict[str, Any], json.loads(lines[-1]))


def records(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, unit in MEASUREMENTS:
        value = float(results["rcp"][name])
        baseline = float(results["baseline"][name])
        out.append(
            {
                "name": name,
                "value": round(value, 4),
                "unit": unit,
                "baseline": round(baseline, 4),
                "ratio": round(value / baseline, 4) if baseline else None,
            }
        )
    return out


def summarize(results: dict[str, dict[str, Any]]) -> None:
    """Details and the goals, met or not, to stderr."""
    for scheme in SCHEMES:
        r = results[scheme]
        progress(
            f"{scheme}: latency max {r['var_latency_max']:.3f} ms;"
            f" idle: {r['idle_polls_per_s']:.2f} polls/s,"
            f" {r['idle_events_per_s']:.2f} events/s over {r['idle_seconds']:.1f} s"
        )
        for side in ("satellite", "main"):
            for stage, m in r["memory"][side].items():
                progress(
                    f"  {side} memory {stage:>8}: VmRSS {m['VmRSS']:5.1f} MB"
                    f" (anon {m['RssAnon']:5.1f}, file {m['RssFile']:5.1f});"
                    f" Pss {m.get('Pss', 0):5.1f}, Uss {m.get('Uss', 0):5.1f}"
                )
    r = results["rcp"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    latency = r["var_latency_p50"]
    progress(f"goal: variable latency p50 < {GOAL_LATENCY_MS} ms")
    progress(f"  {latency:.3f} ms {verdict(latency < GOAL_LATENCY_MS)}")
    calls = r["idle_calls_per_s"]
    progress(f"goal: idle link at most {GOAL_IDLE_CALLS} calls/s")
    progress(f"  {calls:.2f} calls/s {verdict(calls <= GOAL_IDLE_CALLS)}")
    progress(f"goal: each process under {GOAL_RSS_MB} MB resident")
    for side in ("satellite", "main"):
        rss = r[f"rss_mb_{side}"]
        progress(f"  {side}: {rss:.1f} MB {verdict(rss < GOAL_RSS_MB)}")


def runBenchmark(planName: str, pinCpus: bool) -> None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    placement = (cpus[0], cpus[1]) if pinCpus and len(cpus) >= 2 else None
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rcp-bench-link-") as tmp:
        certs = Path(tmp)
        createStation(certs, [MAIN, SATELLITE], station="bench")
        progress(f"plan {planName}: {asdict(PLANS[planName])}; cpus (main, satellite) {placement}")
        for scheme in SCHEMES:
            progress(f"running {scheme}")
            results[scheme] = schemeProcess(scheme, certs, planName, placement)
    for record in records(results):
        print(json.dumps(record), flush=True)
    summarize(results)
    progress(f"done in {time.monotonic() - started:.1f} s")


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: a short idle window")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place the processes (by default each is pinned to a CPU)",
    )
    child = parser.add_argument_group("child processes (started by the benchmark itself)")
    child.add_argument("--serve-satellite", action="store_true", help="run a satellite board")
    child.add_argument("--run-scheme", choices=SCHEMES, help="run one scheme's main board")
    child.add_argument("--scheme", choices=SCHEMES, help="the satellite's scheme")
    child.add_argument("--plan", choices=sorted(PLANS), default="full")
    child.add_argument("--certs", type=Path, help="directory made by rcp.certs.createStation")
    child.add_argument("--cpu", type=int, help="CPU to pin this process to")
    child.add_argument("--satellite-cpu", type=int, help="CPU to pin the satellite to")
    args = parser.parse_args(argv)
    if args.serve_satellite and (args.scheme is None or args.certs is None):
        parser.error("--serve-satellite needs --scheme and --certs")
    if args.run_scheme is not None and args.certs is None:
        parser.error("--run-scheme needs --certs")
    return args


def main(argv: list[str]) -> None:
    args = parseArguments(argv)
    if args.serve_satellite:
        serveSatellite(args.scheme, args.certs, args.cpu)
    elif args.run_scheme is not None:
        runScheme(args.run_scheme, args.certs, PLANS[args.plan], args.cpu, args.satellite_cpu)
    else:
        runBenchmark("quick" if args.quick else "full", pinCpus=not args.no_pin)


if __name__ == "__main__":
    main(sys.argv[1:])
