"""
Unauthenticated clients cannot lock the controller out: real
C{twistd rcp-agent} and C{twistd rcp-controller} processes over mutual TLS
on 127.0.0.1, while a client holds 2000 idle sockets to the agent and opens
200 more a second.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from .common import freePort, makeStation
from .test_tap import _tlsYaml, _twistd, _waitFor, _write

HELD = 2000
PER_SECOND = 200


def _rss(pid: int) -> int:
    """Resident memory of a process, in bytes (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class _Flood:
    """Idle sockets to a port: C{HELD} at once, then C{PER_SECOND} more a second."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.held = threading.Event()
        self.stopped = threading.Event()
        self.failures = 0

    def _open(self) -> None:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            self.failures += 1
            s.close()
            return
        self.sockets.append(s)

    def run(self) -> None:
        try:
            for _ in range(HELD):
                if self.stopped.is_set():
                    return
                self._open()
            self.held.set()
            while not self.stopped.is_set():
                started = time.monotonic()
                for _ in range(PER_SECOND // 10):
                    self._open()
                self.stopped.wait(max(0.0, 0.1 - (time.monotonic() - started)))
        finally:
            self.held.set()
            for s in self.sockets:
                s.close()


class FloodTests(TestCase):
    async def test_controllerSynchronisesThroughAFlood(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = HELD + 40 * PER_SECOND
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, hard), max(need, hard)))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        station = makeStation(self)
        port = freePort()
        agent = _twistd(
            self,
            "rcp-agent",
            "-c",
            _write(self, _tlsYaml(station, "satellite-1")),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
        await _waitFor(lambda: "booted" in agent.text())
        await _waitFor(lambda: _accepts(port))
        start = _rss(agent.process.pid)

        flood = _Flood(port)
        thread = threading.Thread(target=flood.run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(flood.stopped.set)
        await deferToThread(flood.held.wait, 60)
        self.assertGreater(len(flood.sockets), HELD // 2)

        peak = start
        launched = time.monotonic()
        controller = _twistd(
            self,
            "rcp-controller",
            "-c",
            _write(self, _tlsYaml(station, "main")),
            "--peer",
            f"tcp:host=127.0.0.1:port={port}",
            "--peer-name",
            "satellite-1",
        )

        def synchronised() -> bool:
            nonlocal peak
            peak = max(peak, _rss(agent.process.pid))
            return "link synchronised with the agent" in controller.text()

        await _waitFor(synchronised, 20)
        took = time.monotonic() - launched
        # the flood goes on for a while with the link up
        until = time.monotonic() + 3
        await _waitFor(lambda: synchronised() and time.monotonic() > until, 10)
        self.assertIn("closed", agent.text())
        self.assertNotIn("Traceback", agent.text())
        self.assertIsNone(agent.process.poll())
        self.assertLess(took, 5.0, f"synchronised after {took:.1f} s")
        self.assertLess(
            peak - start, 20 << 20, f"agent grew from {start >> 20} MB to {peak >> 20} MB"
        )
