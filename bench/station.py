"""
Loopback benchmark of a whole station: one main board process serving 1, 4
and 16 satellites, against upstream's poll-and-sleep scheme.

Run from the checkout::

    python bench/station.py            # full run: 1, 4 and 16 satellites, a few minutes
    python bench/station.py --quick    # smoke run: 1 and 4 satellites, short windows

For each scheme and station size two fresh processes run:

- the satellites (``--serve-satellites N``): N L{rcp.station.SatelliteBoard}s
  (agent and simulated EVerest each), listening on 127.0.0.1 with mutual
  TLS; on the order ``stream RATE SECONDS`` every satellite publishes
  C{evse_manager.telemetry} and C{evse_manager.powermeter} RATE times a
  second (10 Hz), each value carrying C{time.monotonic()} (one clock for
  every process of the machine);
- the main board (``--run-main N``): one process, one simulated EVerest
  with N SatelliteController modules and their links, and a C{bench} module
  subscribed to every satellite's variables.  It measures and prints its
  results as one JSON object.

The schemes are those of C{bench/link.py}: ``rcp`` (long poll: the agent
holds an empty poll until an event is queued) and ``baseline``, upstream's
(the agent answers every poll at once, the controller sleeps 25 ms after
every answer).

Measured, for each scheme and size N:

- ``var_latency_p50_N``, ``var_latency_p99_N``: from a satellite's publish to
  the arrival on the main board's EVerest (ms);
- ``main_cpu_per_satellite_N``: user + system CPU time of the main board's
  process during the streaming window, per satellite per second, in percent
  of one core;
- ``main_rss_N``: the main board process's resident memory at the end (MB);
- ``main_rss_per_added_satellite``: (main_rss at the largest N - at the
  smallest) / (difference in satellites) (MB).

stdout carries one JSON object per measurement (``name``, ``value``,
``unit``, ``baseline``, ``ratio`` = value / baseline) and nothing else;
progress and the goals go to stderr.  Goals: p99 under 5 ms at 16
satellites, main-board CPU under 2 % of one core per satellite and growing
linearly, under 2 MB per added satellite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final, cast

# Run as ``python bench/station.py``: the checkout, not bench/, must be importable.
_ROOT: Final = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from twisted.internet.defer import Deferred, DeferredList  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.posixbase import PosixReactorBase  # noqa: E402
from twisted.internet.protocol import connectionDone  # noqa: E402
from twisted.internet.stdio import StandardIO  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from bench.link import (  # noqa: E402
    HOLD,
    SCHEMES,
    BenchControllerLink,
    SatelliteProcess,
    boardCredentials,
    cpuSeconds,
    logWarnings,
    memory,
    percentile,
    reactorNow,
)
from rcp.certs import createStation  # noqa: E402
from rcp.everest.sim.bus import SimBus  # noqa: E402
from rcp.everest.sim.evse import EVSE  # noqa: E402
from rcp.service import secureClientEndpoint  # noqa: E402
from rcp.station import SatelliteBoard, StationOptions  # noqa: E402

HOST: Final = "127.0.0.1"
MAIN: Final = "main"
#: the variables each satellite streams, as EVerest's EvseManager publishes them
STREAMED: Final = ("telemetry", "powermeter")
RATE_HZ: Final = 10.0

#: the main board's module that subscribes to every satellite's variables
PROBE: Final = "bench"

GOAL_P99_MS: Final = 5.0
GOAL_CPU_PERCENT: Final = 2.0
GOAL_RSS_PER_SATELLITE_MB: Final = 2.0

#: (sizes, seconds of streaming, seconds to settle first)
PLANS: Final = {"full": ((1, 4, 16), 20.0, 2.0), "quick": ((1, 4), 3.0, 0.5)}


def progress(text: str) -> None:
    print(f"[bench-station] {text}", file=sys.stderr, flush=True)


def satelliteName(index: int) -> str:
    return f"satellite-{index + 1}"


# -- the satellites process -----------------------------------------------------------


class SatellitesControl(LineReceiver):
    """
    Orders on stdin, each answered by one line on stdout:

    - ``stream <rate> <seconds> <seed>``: every satellite publishes each of
      L{STREAMED} C{rate} times a second for C{seconds}; answered when done;
    - ``stats``: the boards' counters, as JSON.
    """

    delimiter = b"\n"

    def __init__(self, reactor: PosixReactorBase, boards: list[SatelliteBoard]) -> None:
        self.reactor = reactor
        self.boards = boards
        self.sent = 0

    def lineReceived(self, line: bytes) -> None:
        words = line.decode("ascii").split()
        if words[:1] == ["stream"]:
            rate, seconds, seed = float(words[1]), float(words[2]), int(words[3])
            Deferred.fromCoroutine(self._stream(rate, seconds, random.Random(seed)))
        elif words == ["stats"]:
            self.sendLine(("stats " + json.dumps(self.stats())).encode("ascii"))
        else:
            self.sendLine(f"error unknown order {line!r}".encode("ascii"))

    async def _stream(self, rate: float, seconds: float, rng: random.Random) -> None:
        # each board starts at a random phase of the period, as real boards would
        period = 1.0 / rate
        self.sent = 0
        ends = time.monotonic() + seconds
        done: list[Deferred[None]] = []
        for index, board in enumerate(self.boards):
            done.append(
                Deferred.fromCoroutine(self._board(index, board, period, ends, rng.random()))
            )
        await DeferredList(done)
        self.sendLine(f"streamed {self.sent}".encode("ascii"))

    async def _board(
        self, index: int, board: SatelliteBoard, period: float, ends: float, phase: float
    ) -> None:
        await deferLater(self.reactor, phase * period, lambda: None)
        sequence = 0
        while time.monotonic() < ends:
            for var in STREAMED:
                value = {
                    "timestamp": "",
                    "bench_board": index,
                    "bench_sequence": sequence,
                    "bench_sent": time.monotonic(),
                }
                board.evse.module.publishVar(EVSE, var, value)
                self.sent += 1
            sequence += 1
            await deferLater(self.reactor, period, lambda: None)

    def stats(self) -> dict[str, Any]:
        return {
            "cpu": cpuSeconds(),
            "boots": [board.boots for board in self.boards],
            "delivered": sum(board.link.queue.delivered for board in self.boards),
            "coalesced": sum(board.link.queue.coalesced for board in self.boards),
            "memory": memory(),
        }

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.reactor.running:
            self.reactor.stop()


def serveSatellites(count: int, scheme: str, certs: Path) -> None:
    """Boot C{count} satellites, say their ports, take orders until stdin ends."""
    logWarnings()
    reactor = reactorNow()
    options = StationOptions(satellites=count, holdTime=HOLD[scheme])
    boards = [
        SatelliteBoard(
            reactor,
            satelliteName(i),
            1,
            boardCredentials(certs, satelliteName(i)),
            options,
            lambda name, text: None,
            listen=True,
        )
        for i in range(count)
    ]

    async def boot() -> None:
        for board in boards:
            await board.boot()
        StandardIO(SatellitesControl(reactor, boards), reactor=reactor)
        sys.stdout.write("ports " + " ".join(str(b.port) for b in boards) + "\n")
        sys.stdout.flush()

    def failed(failure: Failure) -> None:
        progress(f"the satellites did not boot: {failure.getErrorMessage()}")
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(boot()).addErrback(failed))
    reactor.run()


# -- the main board process -----------------------------------------------------------


class MainRun:
    """One scheme and size, on the main board: N links in this one process."""

    def __init__(
        self, reactor: PosixReactorBase, scheme: str, count: int, certs: Path, plan: str
    ) -> None:
        self.reactor = reactor
        self.scheme = scheme
        self.count = count
        self.certs = certs
        self.sizes, self.seconds, self.settle = PLANS[plan]
        self.satellites = SatelliteProcess()
        self.latencies: list[float] = []
        self.measuring = False
        self.links: list[BenchControllerLink] = []
        self.ended: Deferred[None] = Deferred()

    async def startSatellites(self) -> list[int]:
        command = [sys.executable, str(Path(__file__).resolve())]
        command += ["--serve-satellites", str(self.count), "--scheme", self.scheme]
        command += ["--certs", str(self.certs)]
        self.reactor.spawnProcess(
            self.satellites,
            sys.executable,
            command,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: 2},
        )
        line = await self.satellites.nextLine()
        if not line.startswith("ports "):
            raise RuntimeError(f"the satellites said {line!r}")
        return [int(p) for p in line.split()[1:]]

    def startMain(self, ports: list[int]) -> Deferred[None]:
        bus = SimBus(self.reactor, "main")
        controllers = [f"satellite_{i + 1}" for i in range(self.count)]
        bus.module(
            "auth",
            {
                "token_provider": [(c, "rfid_token_provider") for c in controllers],
                "evse_manager": [(c, "evse_manager") for c in controllers],
            },
        ).signalReady()
        probe = bus.module(PROBE, {"evse_manager": [(c, "evse_manager") for c in controllers]})
        for index in range(self.count):
            for var in STREAMED:
                probe.subscribeVar("evse_manager", var, self._arrived, index)
        credentials = boardCredentials(self.certs, MAIN)
        for index, (controllerId, port) in enumerate(zip(controllers, ports, strict=True)):
            module = bus.module(
                controllerId, {"auth": [("auth", "main")]}, mapping={"evse": index + 1}
            )
            endpoint = secureClientEndpoint(
                TCP4ClientEndpoint(self.reactor, HOST, port), credentials, satelliteName(index)
            )
            link = BenchControllerLink(
                module, self.reactor, endpoint, self._ended, holdTime=HOLD["rcp"]
            )
            link.paced = self.scheme == "baseline"
            self.links.append(link)
        ready = probe.signalReady()
        for link in self.links:
            link.start()
        return ready

    def _ended(self, code: int, reason: str) -> None:
        if not self.ended.called:
            self.ended.errback(RuntimeError(f"a link ended with code {code}: {reason}"))

    def _arrived(self, value: Any) -> None:
        if self.measuring and isinstance(value, dict) and "bench_sent" in value:
            self.latencies.append(time.monotonic() - value["bench_sent"])

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        ports = await self.startSatellites()
        await self.startMain(ports)
        progress(f"{self.scheme} x{self.count}: linked in {time.monotonic() - started:.2f} s")
        await deferLater(self.reactor, self.settle, lambda: None)
        # warm-up: a short stream not measured
        await self.satellites.order(f"stream {RATE_HZ} 1 1", "streamed")
        await deferLater(self.reactor, self.settle, lambda: None)
        self.measuring = True
        cpu, wall = cpuSeconds(), time.monotonic()
        sent = int(await self.satellites.order(f"stream {RATE_HZ} {self.seconds} 2", "streamed"))
        await deferLater(self.reactor, 0.2, lambda: None)  # the last ones on their way
        cpuMain, elapsed = cpuSeconds() - cpu, time.monotonic() - wall
        self.measuring = False
        stats = json.loads(await self.satellites.order("stats", "stats"))
        if any(boots != 1 for boots in stats["boots"]):
            raise RuntimeError("a satellite board reset during the run")
        latency = sorted(self.latencies)
        if not latency:
            raise RuntimeError("no variable arrived")
        return {
            "satellites": self.count,
            "sent": sent,
            "arrived": len(latency),
            "var_latency_p50": percentile(latency, 0.50) * 1000,
            "var_latency_p99": percentile(latency, 0.99) * 1000,
            "main_cpu_per_satellite": cpuMain / elapsed / self.count * 100,
            "coalesced": stats["coalesced"],
            "main_rss": memory()["VmRSS"],
            "satellites_rss": stats["memory"]["VmRSS"],
        }

    async def runAndStop(self) -> dict[str, Any]:
        measuring = Deferred.fromCoroutine(self.run())
        measuring.addTimeout(60 + 3 * self.seconds, self.reactor)
        self.ended.addErrback(lambda f: measuring.cancel() if not measuring.called else None)
        try:
            return await measuring
        finally:
            for link in self.links:
                link.halt()
            if self.satellites.transport is not None:
                self.satellites.transport.closeStdin()
            exited = self.satellites.exited
            exited.addTimeout(10.0, self.reactor)
            await exited


def runMain(scheme: str, count: int, certs: Path, plan: str) -> None:
    logWarnings()

    async def main(reactor: PosixReactorBase) -> None:
        results = await MainRun(reactor, scheme, count, certs, plan).runAndStop()
        print(json.dumps(results), flush=True)

    react(main)


# -- this process: every scheme and size, and the comparison --------------------------


def mainProcess(scheme: str, count: int, certs: Path, plan: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--run-main", str(count)]
    command += ["--scheme", scheme, "--certs", str(certs), "--plan", plan]
    done = subprocess.run(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"the {scheme} run with {count} satellites failed ({done.returncode})")
    lines = done.stdout.decode("utf-8").splitlines()
    if not lines:
        raise SystemExit(f"the {scheme} run with {count} satellites printed no results")
    return cast(dict[str, Any], json.loads(lines[-1]))


def record(name: str, unit: str, value: float, baseline: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "ratio": round(value / baseline, 4) if baseline else None,
    }


def records(results: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    sizes = sorted(results["rcp"])
    for n in sizes:
        rcp, base = results["rcp"][n], results["baseline"][n]
        out.append(
            record(f"var_latency_p50_{n}", "ms", rcp["var_latency_p50"], base["var_latency_p50"])
        )
        out.append(
            record(f"var_latency_p99_{n}", "ms", rcp["var_latency_p99"], base["var_latency_p99"])
        )
        out.append(
            record(
                f"main_cpu_per_satellite_{n}",
                "% of a core",
                rcp["main_cpu_per_satellite"],
                base["main_cpu_per_satellite"],
            )
        )
        out.append(record(f"main_rss_{n}", "MB", rcp["main_rss"], base["main_rss"]))
    low, high = sizes[0], sizes[-1]

    def perAdded(scheme: str) -> float:
        r = results[scheme]
        return float((r[high]["main_rss"] - r[low]["main_rss"]) / (high - low))

    out.append(record("main_rss_per_added_satellite", "MB", perAdded("rcp"), perAdded("baseline")))
    return out


def summarize(results: dict[str, dict[int, dict[str, Any]]]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    r = results["rcp"]
    sizes = sorted(r)
    for scheme in SCHEMES:
        for n in sizes:
            x = results[scheme][n]
            progress(
                f"{scheme} x{n}: {x['arrived']} of {x['sent']} values arrived"
                f" ({x['coalesced']} superseded in the queue),"
                f" p50 {x['var_latency_p50']:.2f} ms, p99 {x['var_latency_p99']:.2f} ms,"
                f" main CPU {x['main_cpu_per_satellite']:.2f} %/satellite,"
                f" main RSS {x['main_rss']:.1f} MB"
            )
    top = sizes[-1]
    p99 = r[top]["var_latency_p99"]
    progress(
        f"goal: p99 under {GOAL_P99_MS} ms at {top} satellites: {p99:.2f} ms"
        f" {verdict(p99 < GOAL_P99_MS)}"
    )
    worst = max(r[n]["main_cpu_per_satellite"] for n in sizes)
    progress(
        f"goal: main CPU under {GOAL_CPU_PERCENT} % of a core per satellite:"
        f" at most {worst:.2f} % {verdict(worst < GOAL_CPU_PERCENT)}"
    )
    growth = r[top]["main_cpu_per_satellite"] / r[sizes[0]]["main_cpu_per_satellite"]
    progress(
        f"goal: main CPU linear in the satellites: per-satellite CPU at {top} is"
        f" {growth:.2f}x that at {sizes[0]} {verdict(growth < 1.5)}"
    )
    rss = (r[top]["main_rss"] - r[sizes[0]]["main_rss"]) / (top - sizes[0])
    progress(
        f"goal: under {GOAL_RSS_PER_SATELLITE_MB} MB per added satellite: {rss:.2f} MB"
        f" {verdict(rss < GOAL_RSS_PER_SATELLITE_MB)}"
    )


def runBenchmark(plan: str) -> None:
    sizes = PLANS[plan][0]
    started = time.monotonic()
    results: dict[str, dict[int, dict[str, Any]]] = {scheme: {} for scheme in SCHEMES}
    with tempfile.TemporaryDirectory(prefix="rcp-bench-station-") as tmp:
        certs = Path(tmp)
        createStation(certs, [MAIN] + [satelliteName(i) for i in range(max(sizes))], "bench")
        for n in sizes:
            for scheme in SCHEMES:
                results[scheme][n] = mainProcess(scheme, n, certs, plan)
    for line in records(results):
        print(json.dumps(line), flush=True)
    summarize(results)
    progress(f"done in {time.monotonic() - started:.1f} s")


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 4 satellites")
    child = parser.add_argument_group("child processes (started by the benchmark itself)")
    child.add_argument("--serve-satellites", type=int, help="run this many satellite boards")
    child.add_argument("--run-main", type=int, help="run the main board for this many satellites")
    child.add_argument("--scheme", choices=SCHEMES, default="rcp")
    child.add_argument("--plan", choices=sorted(PLANS), default="full")
    child.add_argument("--certs", type=Path, help="directory made by rcp.certs.createStation")
    args = parser.parse_args(argv)
    if (args.serve_satellites or args.run_main) and args.certs is None:
        parser.error("child processes need --certs")
    return args


def main(argv: list[str]) -> None:
    args = parseArguments(argv)
    if args.serve_satellites:
        serveSatellites(args.serve_satellites, args.scheme, args.certs)
    elif args.run_main:
        runMain(args.scheme, args.run_main, args.certs, args.plan)
    else:
        runBenchmark("quick" if args.quick else "full")


if __name__ == "__main__":
    main(sys.argv[1:])
