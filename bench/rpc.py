"""
Loopback benchmark of rcp's msgpack-rpc against a bare Twisted msgpack echo.

Run from the checkout::

    python bench/rpc.py            # full run, well under two minutes
    python bench/rpc.py --quick    # smoke run, a few seconds

The client runs here, on the Twisted reactor; the servers run in one child
process (``--serve``), so that each side has a core of its own: with two or
more CPUs each process is pinned to one.  (``--no-pin`` leaves placement to
the scheduler, which now and then puts both on one core, where a sequential
echo is faster: floor and rcp rounds would no longer be measured alike.)
The child listens on 127.0.0.1 four times:

- ``rcp/plain``, ``rcp/tls``: an L{rcp.rpc.RpcFactory} offering ``echo``,
  the TLS one wrapped by L{rcp.tls.serverFactory} (mutual TLS with throwaway
  certificates from L{rcp.certs.createStation});
- ``floor/plain``, ``floor/tls``: the floor, a bare Twisted protocol that
  feeds a C{msgpack.Unpacker} and writes back C{msgpack.packb} of the
  response, with no RPC layer; the same TLS wrapping.

The client measures, for a small integer and for a 1 KiB JSON string:

- ``sequential``: one call at a time, the round-trip time of each (p50 and
  p99, microseconds);
- ``pipelined``: 64 calls in flight, a new one sent as each answer arrives
  (calls per second, the median of the rounds).

The floor client is as bare as its server (a msgid -> callback dict, no
Deferreds); both clients are driven by the same code.  rcp and the floor are
measured in alternating rounds (ten in a full run) over connections opened
at the start, so both see the same machine.  stdout carries one JSON object
per measurement (``name``, ``p50_us``, ``p99_us``, ``calls_per_s``,
``ratio_to_floor``) and nothing else; progress and the goal summary go to
stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

# Run as ``python bench/rpc.py``: the checkout, not bench/, must be importable.
_ROOT: Final = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import msgpack  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.interfaces import (  # noqa: E402
    IAddress,
    IHandshakeListener,
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.posixbase import PosixReactorBase  # noqa: E402
from twisted.internet.protocol import Factory, Protocol, connectionDone  # noqa: E402
from twisted.internet.stdio import StandardIO  # noqa: E402
from twisted.internet.task import react  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from zope.interface import implementer  # noqa: E402

from rcp.certs import createStation  # noqa: E402
from rcp.rpc import MethodRegistry, RpcFactory, RpcLimits, RpcProtocol  # noqa: E402
from rcp.tls import Credentials, clientEndpoint, loadCredentials, serverFactory  # noqa: E402

HOST: Final = "127.0.0.1"
SERVER_BOARD: Final = "satellite-1"
CLIENT_BOARD: Final = "main"
PIPELINE_DEPTH: Final = 64
TRANSPORTS: Final = ("plain", "tls")
IMPLEMENTATIONS: Final = ("floor", "rcp")

# msgpack-rpc message types (rcp.rpc.wire has them too; the floor is written
# without any rcp code on purpose).
_REQUEST: Final = 0
_RESPONSE: Final = 1


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    warmupCalls: int
    sequentialCalls: int
    pipelinedCalls: int
    rounds: int
    #: seconds after which the client gives up (a lost connection, a hang)
    limit: float


FULL: Final = Plan(
    warmupCalls=3000, sequentialCalls=20_000, pipelinedCalls=100_000, rounds=10, limit=600
)
QUICK: Final = Plan(warmupCalls=100, sequentialCalls=400, pipelinedCalls=2_000, rounds=2, limit=90)


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def jsonArgument(size: int = 1024) -> str:
    """A JSON document of exactly C{size} characters, as json.dumps makes it."""
    doc: dict[str, Any] = {
        "board": SERVER_BOARD,
        "connector": 1,
        "state": "Charging",
        "samples": [
            {"t": 1_700_000_000 + i, "kW": round(7.4 + i * 0.013, 3), "A": 32, "V": 230}
            for i in range(12)
        ],
        "pad": "",
    }
    missing = size - len(json.dumps(doc))
    if missing < 0:
        raise ValueError(f"the JSON document is already longer than {size}")
    doc["pad"] = "x" * missing
    text = json.dumps(doc)
    assert len(text) == size
    return text


ARGUMENTS: Final[dict[str, object]] = {"int": 42, "json1k": jsonArgument()}


def pin(cpu: int | None) -> None:
    """Run this process on one CPU only, if asked and possible."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def reactorNow() -> PosixReactorBase:
    from twisted.internet import reactor

    return cast(PosixReactorBase, reactor)


# -- the floor: bare Twisted msgpack echo ------------------------------------


class FloorServer(Protocol):
    """Answer each [0, msgid, method, [arg]] with [1, msgid, None, arg]."""

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker()

    def dataReceived(self, data: bytes) -> None:
        self._unpacker.feed(data)
        write = self.transport.write  # type: ignore[union-attr]
        for message in self._unpacker:
            write(msgpack.packb([_RESPONSE, message[1], None, message[3][0]]))


class FloorServerFactory(Factory):
    protocol = FloorServer
    noisy = False


Done = Callable[[Any], None]
#: told why the measurement cannot go on (a call failed, a connection was lost)
Failed = Callable[[Failure], None]


@implementer(IHandshakeListener)
class FloorClient(Protocol):
    """Send echo requests, call each one's callback with its result."""

    def __init__(self, failed: Failed) -> None:
        self._unpacker = msgpack.Unpacker()
        self._waiting: dict[int, Done] = {}
        self._nextMsgid = 0
        self._failed = failed
        self._closing = False
        self.ready: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        # Through TLS, wait for the handshake (IHandshakeListener), as
        # RpcProtocol does.
        if not ISSLTransport.providedBy(self.transport):
            self.ready.callback(None)

    def handshakeCompleted(self) -> None:
        self.ready.callback(None)

    def request(self, arg: object, done: Done) -> None:
        msgid = self._nextMsgid
        self._nextMsgid = msgid + 1
        self._waiting[msgid] = done
        self.transport.write(msgpack.packb([_REQUEST, msgid, "echo", [arg]]))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for message in self._unpacker:
            self._waiting.pop(message[1])(message[3])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._closing:
            self._failed(reason)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()


class FloorClientFactory(Factory):
    noisy = False

    def __init__(self, failed: Failed) -> None:
        self._failed = failed

    def buildProtocol(self, addr: IAddress | None) -> FloorClient:
        proto = FloorClient(self._failed)
        proto.factory = self
        return proto


# -- rcp ---------------------------------------------------------------------


def echo(value: Any) -> Any:
    return value


class RcpLink:
    """rcp's client side, seen through the same two methods as L{FloorClient}."""

    def __init__(self, proto: RpcProtocol, failed: Failed) -> None:
        self._proto = proto
        self._failed = failed

    def request(self, arg: object, done: Done) -> None:
        self._proto.call("echo", arg).addCallbacks(done, self._failed)

    def close(self) -> None:
        self._proto.disconnect()


class Link(typing.Protocol):
    def request(self, arg: object, done: Done) -> None: ...

    def close(self) -> None: ...


# -- server process ----------------------------------------------------------


class _StopOnEof(Protocol):
    """The parent closes our stdin (or dies): stop serving."""

    def __init__(self, reactor: PosixReactorBase) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._reactor.running:
            self._reactor.stop()


def serverFactories(credentials: Credentials) -> dict[str, IProtocolFactory]:
    reactor = reactorNow()
    methods = MethodRegistry({"echo": echo})

    def rcpFactory() -> RpcFactory:
        return RpcFactory(reactor, methods, RpcLimits())

    return {
        "rcp/plain": rcpFactory(),
        "rcp/tls": serverFactory(credentials, rcpFactory()),
        "floor/plain": FloorServerFactory(),
        "floor/tls": serverFactory(credentials, FloorServerFactory()),
    }


def boardCredentials(certs: Path, board: str) -> Credentials:
    return loadCredentials(
        str(certs / "ca.pem"), str(certs / f"{board}.pem"), str(certs / f"{board}.key")
    )


def serve(certs: Path, portFile: Path, cpu: int | None) -> None:
    """Listen on loopback for every variant; write their ports; serve until EOF on stdin."""
    pin(cpu)
    reactor = reactorNow()
    ports: dict[str, int] = {}
    for name, factory in serverFactories(boardCredentials(certs, SERVER_BOARD)).items():
        port = reactor.listenTCP(0, factory, interface=HOST)
        ports[name] = port.getHost().port
    temporary = portFile.with_suffix(".tmp")
    temporary.write_text(json.dumps(ports))
    temporary.rename(portFile)
    StandardIO(_StopOnEof(reactor), reactor=reactor)
    reactor.run()


@contextmanager
def serverProcess(certs: Path, cpu: int | None) -> Iterator[dict[str, int]]:
    portFile = certs / "ports.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    command += ["--certs", str(certs), "--port-file", str(portFile)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not portFile.exists():
            if proc.poll() is not None:
                raise SystemExit(f"bench server exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("bench server did not start within 30 s")
            time.sleep(0.02)
        yield json.loads(portFile.read_text())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- measuring ---------------------------------------------------------------


class Sequential:
    """C{count} calls one after the other; the round-trip time of each, in ns."""

    def __init__(self, link: Link, arg: object, count: int, samples: list[int]) -> None:
        self._link = link
        self._arg = arg
        self._left = count
        self._samples = samples
        self._started = 0
        self.finished: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        self._started = time.perf_counter_ns()
        self._link.request(self._arg, self._answered)
        return self.finished

    def _answered(self, result: object) -> None:
        now = time.perf_counter_ns()
        self._samples.append(now - self._started)
        self._left -= 1
        if self._left == 0:
            self.finished.callback(None)
            return
        self._started = time.perf_counter_ns()
        self._link.request(self._arg, self._answered)


class Pipelined:
    """C{count} calls, C{depth} of them in flight; the elapsed time in ns."""

    def __init__(self, link: Link, arg: object, count: int, depth: int = PIPELINE_DEPTH) -> None:
        self._link = link
        self._arg = arg
        self._count = count
        self._depth = depth
        self._sent = 0
        self._received = 0
        self._started = 0
        self.finished: Deferred[int] = Deferred()

    def start(self) -> Deferred[int]:
        self._started = time.perf_counter_ns()
        for _ in range(min(self._depth, self._count)):
            self._sent += 1
            self._link.request(self._arg, self._answered)
        return self.finished

    def _answered(self, result: object) -> None:
        self._received += 1
        if self._sent < self._count:
            self._sent += 1
            self._link.request(self._arg, self._answered)
        elif self._received == self._count:
            self.finished.callback(time.perf_counter_ns() - self._started)


def percentile(sortedSamples: list[int], fraction: float) -> int:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(fraction * len(sortedSamples)))
    return sortedSamples[rank - 1]


def line(
    name: str,
    p50: float | None = None,
    p99: float | None = None,
    callsPerSecond: float | None = None,
    ratio: float | None = None,
) -> dict[str, object]:
    return {
        "name": name,
        "p50_us": None if p50 is None else round(p50, 1),
        "p99_us": None if p99 is None else round(p99, 1),
        "calls_per_s": None if callsPerSecond is None else round(callsPerSecond),
        "ratio_to_floor": None if ratio is None else round(ratio, 3),
    }


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def roundOrder(index: int) -> tuple[str, ...]:
    # Alternate which one goes first, so neither always follows the other.
    return IMPLEMENTATIONS if index % 2 == 0 else IMPLEMENTATIONS[::-1]


async def checkEcho(link: Link, arg: object) -> None:
    answer: Deferred[object] = Deferred()
    link.request(arg, answer.callback)
    result = await answer
    if result != arg:
        raise SystemExit(f"echo returned {result!r:.80} instead of {arg!r:.80}")


async def measureSequential(
    links: dict[str, Link], transport: str, argName: str, plan: Plan
) -> list[dict[str, object]]:
    arg = ARGUMENTS[argName]
    samples: dict[str, list[int]] = {impl: [] for impl in IMPLEMENTATIONS}
    perRound = math.ceil(plan.sequentialCalls / plan.rounds)
    for index in range(plan.rounds):
        for impl in roundOrder(index):
            gc.collect()
            link = links[f"{impl}/{transport}"]
            await Sequential(link, arg, perRound, samples[impl]).start()
    p50 = {}
    records = []
    for impl in IMPLEMENTATIONS:
        ordered = sorted(samples[impl])
        p50[impl] = percentile(ordered, 0.50) / 1000
        p99 = percentile(ordered, 0.99) / 1000
        ratio = None if impl == "floor" else p50[impl] / p50["floor"]
        name = f"{impl}/{transport}/{argName}/sequential"
        records.append(line(name, p50=p50[impl], p99=p99, ratio=ratio))
    return records


async def measurePipelined(
    links: dict[str, Link], transport: str, argName: str, plan: Plan
) -> list[dict[str, object]]:
    arg = ARGUMENTS[argName]
    rates: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    perRound = math.ceil(plan.pipelinedCalls / plan.rounds)
    for index in range(plan.rounds):
        for impl in roundOrder(index):
            gc.collect()
            link = links[f"{impl}/{transport}"]
            elapsed = await Pipelined(link, arg, perRound).start()
            rates[impl].append(perRound / (elapsed / 1e9))
    # The median round: a round slowed down by some other process on the
    # machine counts no more than one that was not.
    rate = {impl: statistics.median(rates[impl]) for impl in IMPLEMENTATIONS}
    records = []
    for impl in IMPLEMENTATIONS:
        ratio = None if impl == "floor" else rate[impl] / rate["floor"]
        name = f"{impl}/{transport}/{argName}/pipelined"
        records.append(line(name, callsPerSecond=rate[impl], ratio=ratio))
    return records


# -- client ------------------------------------------------------------------


async def connect(ports: dict[str, int], certs: Path, failed: Failed) -> dict[str, Link]:
    reactor = reactorNow()
    credentials = boardCredentials(certs, CLIENT_BOARD)

    def endpoint(name: str, transport: str) -> IStreamClientEndpoint:
        tcp = TCP4ClientEndpoint(reactor, HOST, ports[f"{name}/{transport}"])
        if transport == "tls":
            return clientEndpoint(credentials, SERVER_BOARD, tcp)
        return tcp

    links: dict[str, Link] = {}
    for transport in TRANSPORTS:
        ready: Deferred[RpcProtocol] = Deferred()
        factory = RpcFactory(reactor, MethodRegistry(), RpcLimits(), ready.callback)
        await endpoint("rcp", transport).connect(factory)
        links[f"rcp/{transport}"] = RcpLink(await ready, failed)

        floor = await endpoint("floor", transport).connect(FloorClientFactory(failed))
        assert isinstance(floor, FloorClient)
        await floor.ready
        links[f"floor/{transport}"] = floor
    return links


async def warmUp(links: dict[str, Link], plan: Plan) -> None:
    for name, link in links.items():
        for arg in ARGUMENTS.values():
            await checkEcho(link, arg)
            await Sequential(link, arg, plan.warmupCalls, []).start()
            await Pipelined(link, arg, plan.warmupCalls).start()
        progress(f"warmed up {name}")


async def runClient(
    ports: dict[str, int], certs: Path, plan: Plan, failed: Failed
) -> list[dict[str, object]]:
    links = await connect(ports, certs, failed)
    await warmUp(links, plan)
    results: list[dict[str, object]] = []
    for transport in TRANSPORTS:
        for argName in ARGUMENTS:
            for kind, measure in (
                ("sequential", measureSequential),
                ("pipelined", measurePipelined),
            ):
                progress(f"measuring {transport}/{argName}/{kind}")
                records = await measure(links, transport, argName, plan)
                for record in records:
                    emit(record)
                results += records
    for link in links.values():
        link.close()
    return results


def summarize(results: list[dict[str, object]]) -> None:
    """Print the goals and whether they are met to stderr."""
    byName = {str(r["name"]): r for r in results}
    progress("goal: rcp sequential p50 within 1.2x of the floor")
    for name, r in byName.items():
        if name.startswith("rcp/") and name.endswith("/sequential"):
            ratio = cast(float, r["ratio_to_floor"])
            verdict = "met" if ratio <= 1.2 else "MISSED"
            progress(f"  {name}: {ratio:.2f}x ({r['p50_us']} us) {verdict}")
    progress("goal: rcp pipelined over plain TCP at least 50,000 calls/s")
    for name, r in byName.items():
        if name.startswith("rcp/plain/") and name.endswith("/pipelined"):
            rate = cast(int, r["calls_per_s"])
            verdict = "met" if rate >= 50_000 else "MISSED"
            progress(f"  {name}: {rate} calls/s {verdict}")


def runBenchmark(plan: Plan, pinCpus: bool) -> None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    clientCpu, serverCpu = (cpus[0], cpus[1]) if pinCpus and len(cpus) >= 2 else (None, None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rcp-bench-") as tmp:
        certs = Path(tmp)
        createStation(certs, [CLIENT_BOARD, SERVER_BOARD], station="bench")
        with serverProcess(certs, serverCpu) as ports:
            pin(clientCpu)
            progress(f"server ports {ports}; client cpu {clientCpu}, server cpu {serverCpu}")
            results: list[dict[str, object]] = []

            async def main(reactor: PosixReactorBase) -> None:
                run: Deferred[list[dict[str, object]]]

                def failed(reason: Failure) -> None:
                    if not run.called:
                        progress(f"giving up: {reason.getErrorMessage()}")
                        run.cancel()

                run = Deferred.fromCoroutine(runClient(ports, certs, plan, failed))
                run.addTimeout(plan.limit, reactor)
                results.extend(await run)

            try:
                react(main)
            except SystemExit as e:
                if e.code not in (None, 0):
                    raise
    summarize(results)
    progress(f"done in {time.monotonic() - started:.1f} s")


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place client and server (by default each is pinned to a"
        " CPU of its own)",
    )
    server = parser.add_argument_group("server process (started by the benchmark itself)")
    server.add_argument("--serve", action="store_true", help="run the echo servers")
    server.add_argument("--certs", type=Path, help="directory made by rcp.certs.createStation")
    server.add_argument("--port-file", type=Path, help="where to write the ports, as JSON")
    server.add_argument("--cpu", type=int, help="CPU to pin the server to")
    args = parser.parse_args(argv)
    if args.serve and (args.certs is None or args.port_file is None):
        parser.error("--serve needs --certs and --port-file")
    return args


def main(argv: list[str]) -> None:
    args = parseArguments(argv)
    if args.serve:
        serve(args.certs, args.port_file, args.cpu)
    else:
        runBenchmark(QUICK if args.quick else FULL, pinCpus=not args.no_pin)


if __name__ == "__main__":
    main(sys.argv[1:])
