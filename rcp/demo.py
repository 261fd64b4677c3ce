"""
``rcp demo``: one main board and several satellites on this machine, linked
by rcp over loopback with mutual TLS, running a scripted scenario.

It prints a timeline of what crossed the links and exits 0 only if every
step was observed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from .everest.interface import makeError
from .everest.sim.station import Record
from .station import Station, StationOptions


def token(index: int) -> str:
    """The RFID card used at satellite C{index}."""
    return f"CAFE{index + 1:04X}"


STEP_TIMEOUT = 15.0


class StepFailed(Exception):
    pass


class Timeline:
    """Prints what happens, with the time since the start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()

    def line(self, where: str, text: str) -> None:
        elapsed = time.monotonic() - self.start
        self.out.write(f"{elapsed:8.3f} s  {where:<12} {text}\n")
        self.out.flush()


def _latency(value: Any, arrival: float) -> str:
    stamp = value.get("timestamp") if isinstance(value, dict) else None
    if not isinstance(stamp, str):
        return ""
    try:
        sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return ""
    return f" ({(arrival - sent) * 1000:.1f} ms after it was published)"


class Demo:
    def __init__(self, reactor: Any, satellites: int, out: TextIO, pki: Path) -> None:
        self.reactor = reactor
        self.timeline = Timeline(out)
        self.station = Station(
            reactor,
            StationOptions(
                satellites=satellites,
                meterInterval=0.5,
                acceptedTokens=tuple(token(i) for i in range(satellites)),
            ),
            pki,
            self.timeline.line,
        )
        self.results: list[tuple[str, bool, str]] = []
        self._seenPower: set[tuple[int, int]] = set()

    # -- helpers --------------------------------------------------------------

    def _record(self, record: Record) -> None:
        main = self.station.main
        if record.source == "evse" and record.index is not None:
            where = f"satellite-{record.index + 1}"
            if record.name == "session_event":
                event = record.value.get("event")
                self.timeline.line(
                    "main",
                    f"<- {where} session_event {event}{_latency(record.value, record.time)}",
                )
            elif record.name == "powermeter":
                key = (main.boots, record.index)
                if key not in self._seenPower:
                    self._seenPower.add(key)
                    self.timeline.line(
                        "main", f"<- {where} powermeter values arriving (first: {_power(record)})"
                    )
        elif record.source == "error":
            self.timeline.line(
                "main",
                f"<- error {record.value.get('type')}/{record.value.get('sub_type')}"
                f" {record.value.get('state')} (origin {record.value['origin']['module_id']})",
            )

    async def until(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                raise StepFailed(f"not observed within {STEP_TIMEOUT:g} s: {what}")
            await deferLater(self.reactor, 0.01)

    async def step(self, name: str, body: Callable[[], Awaitable[str]]) -> None:
        self.timeline.line("demo", f"== {name}")
        started = time.monotonic()
        try:
            detail = await body()
        except Exception as e:
            self.results.append((name, False, str(e)))
            self.timeline.line("demo", f"   FAILED: {e}")
            return
        took = time.monotonic() - started
        self.results.append((name, True, f"{detail} ({took:.2f} s)"))
        self.timeline.line("demo", f"   ok: {detail}")

    def events(self, index: int) -> list[str]:
        return self.station.main.consumer.events(index)

    # -- the scenario -----------------------------------------------------------

    async def run(self) -> bool:
        station = self.station
        n = len(station.satellites)
        await self.step("start the station: every link synchronised", self._start)
        for i in range(n):
            await self.step(f"charging session on satellite-{i + 1}", self._sessionStep(i))
        await self.step("pause and resume satellite-1 from the main board", self._pauseResume)
        if n >= 2:
            await self.step("remote stop of satellite-2 from the main board", self._remoteStop)
        await self.step(f"error on satellite-{n} raised and cleared", lambda: self._error(n - 1))
        await self.step("reset of satellite-1: the station returns to a common start", self._reset)
        station.stop()
        self._summary()
        return all(ok for _, ok, _ in self.results)

    async def _start(self) -> str:
        await self.station.start()
        self.station.main.consumer.observe(self._record)
        return f"{len(self.station.satellites)} satellites linked over mutual TLS"

    def _sessionStep(self, index: int) -> Callable[[], Awaitable[str]]:
        return lambda: self._session(index)

    async def _session(self, index: int) -> str:
        satellite = self.station.satellites[index]
        satellite.evse.plugIn()
        self.timeline.line(satellite.name, "car plugged in")
        await self.until(
            "AuthRequired on the main board", lambda: "AuthRequired" in self.events(index)
        )
        card = token(index)
        satellite.evse.swipeCard(card)
        self.timeline.line(satellite.name, f"card {card} read at the satellite's reader")
        await self.until(
            "TransactionStarted on the main board",
            lambda: "TransactionStarted" in self.events(index),
        )
        consumer = self.station.main.consumer

        def energy() -> list[float]:
            return [_energy(v) for v in consumer.values(index, "powermeter")]

        await self.until("rising meter values", lambda: len(set(energy())) >= 2)
        return f"authorized on the main board, meter at {max(energy()):.1f} Wh"

    async def _pauseResume(self) -> str:
        consumer = self.station.main.consumer
        started = time.monotonic()
        paused = await consumer.pause(0)
        rtt = (time.monotonic() - started) * 1000
        self.timeline.line("main", f"-> satellite-1 pause_charging: {paused} ({rtt:.1f} ms)")
        await self.until("ChargingPausedEVSE", lambda: "ChargingPausedEVSE" in self.events(0))
        resumed = await consumer.resume(0)
        self.timeline.line("main", f"-> satellite-1 resume_charging: {resumed}")
        await self.until(
            "charging again", lambda: self.events(0)[-1] in ("ChargingStarted", "SessionResumed")
        )
        if not (paused and resumed):
            raise StepFailed(f"pause answered {paused}, resume answered {resumed}")
        return "paused and resumed"

    async def _remoteStop(self) -> str:
        stopped = await self.station.main.consumer.remoteStop(1)
        self.timeline.line("main", f"-> satellite-2 stop_transaction: {stopped}")
        await self.until("TransactionFinished", lambda: "TransactionFinished" in self.events(1))
        return "transaction finished on request"

    async def _error(self, index: int) -> str:
        satellite = self.station.satellites[index]
        consumer = self.station.main.consumer
        error = makeError(
            "evse_manager/MREC4OverCurrentFailure", "connector_1", "evse", "over current", "L2"
        )
        satellite.evse.module.raiseError("evse", error)
        self.timeline.line(satellite.name, "raises evse_manager/MREC4OverCurrentFailure (L2)")

        def states() -> list[str]:
            return [
                e["state"]
                for e in consumer.errors()
                if e["type"] == error["type"] and e["sub_type"] == "L2"
            ]

        await self.until("the error on the main board", lambda: "Active" in states())
        satellite.evse.module.clearError("evse", error)
        self.timeline.line(satellite.name, "clears it")
        await self.until("the clear on the main board", lambda: "ClearedByModule" in states())
        return "raised and cleared with its sub_type and origin"

    async def _reset(self) -> str:
        station = self.station
        main = station.main
        boots = [s.boots for s in station.satellites]
        mainBoots = main.boots
        result = await main.engineer.call("system", "reset", {"type": "Soft", "scheduled": False})
        self.timeline.line("main", f"-> satellite-1 reset: {result}")
        await self.until("the main board restarted", lambda: main.boots > mainBoots)
        await self.until(
            "every satellite rebooted",
            lambda: all(s.boots > b for s, b in zip(station.satellites, boots, strict=True)),
        )
        await main.whenReady()
        reasons = ", ".join(f"{s.name}: {s.bootReason}" for s in station.satellites)
        return f"every board restarted and every link synchronised again ({reasons})"

    def _summary(self) -> None:
        line = self.timeline.line
        line("demo", "== summary")
        for name, ok, detail in self.results:
            line("demo", f"   [{'ok' if ok else 'FAILED'}] {name}: {detail}")
        passed = sum(ok for _, ok, _ in self.results)
        line("demo", f"{passed} of {len(self.results)} steps observed")


def _energy(value: Any) -> float:
    try:
        return float(value["energy_Wh_import"]["total"])
    except (KeyError, TypeError, ValueError):
        return 0.0


def _power(record: Record) -> str:
    try:
        return f"{float(record.value['power_W']['total']):.0f} W"
    except (KeyError, TypeError, ValueError):
        return "?"


def run(reactor: Any, satellites: int = 3, out: TextIO = sys.stdout) -> Deferred[bool]:
    """Run the demo; the Deferred fires with whether every step was observed."""

    async def go() -> bool:
        with tempfile.TemporaryDirectory(prefix="rcp-demo-") as pki:
            return await Demo(reactor, satellites, out, Path(pki) / "pki").run()

    return Deferred.fromCoroutine(go())
