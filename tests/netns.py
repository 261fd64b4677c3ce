"""
Test hosts in network namespaces: a satellite and a main board joined by a
wire, made for one test and deleted after it, with faults on the wire
(delay, jitter, loss, partitions).

The wire is a veth pair with ``tc netem`` on both ends where the kernel has
``sch_netem``; where it has not (``tc`` answers "Specified qdisc kind is
unknown", as on this project's CI machines), it is a pair of TAP devices
joined by ``tests/wire.py``, which applies the same faults in user space.
Either way both namespaces' kernels run real TCP across it.

Needs root and iproute2; under CI (CI=true) their absence fails the test
instead of skipping it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from .common import makeStation
from .test_tap import _Process

SATELLITE_ADDRESS = "10.213.77.2"
MAIN_ADDRESS = "10.213.77.1"


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


WIRE = Path(__file__).with_name("wire.py")


@functools.cache
def hasNetem() -> bool:
    """Whether this kernel has tc's netem qdisc (tried in a scratch namespace)."""
    ns = f"rcp-probe-{uuid.uuid4().hex[:6]}"
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        probe = subprocess.run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"],
            capture_output=True,
            timeout=30,
        )
        return probe.returncode == 0
    finally:
        ip("netns", "delete", ns)


def requireNamespaces() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        if os.environ.get("CI"):
            raise AssertionError("network namespace tests need root, iproute2 and tc")
        raise SkipTest("needs root, iproute2 and tc")


class TwoHosts(TestCase):
    """A satellite host and a main-board host on one wire."""

    def setUp(self) -> None:
        requireNamespaces()
        tag = uuid.uuid4().hex[:6]
        self.main, self.satellite = f"rcp-main-{tag}", f"rcp-sat-{tag}"
        for ns in (self.main, self.satellite):
            ip("netns", "add", ns)
            self.addCleanup(ip, "netns", "delete", ns)
        self.mainIf, self.satIf = f"vm{tag}", f"vs{tag}"
        self.wire: subprocess.Popen[str] | None = None
        if hasNetem():
            ip("link", "add", self.mainIf, "type", "veth", "peer", "name", self.satIf)
            for ns, link, address in (
                (self.main, self.mainIf, MAIN_ADDRESS),
                (self.satellite, self.satIf, SATELLITE_ADDRESS),
            ):
                ip("link", "set", link, "netns", ns)
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
                ip("-n", ns, "link", "set", link, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        else:
            command = [sys.executable, str(WIRE), self.main, self.mainIf, f"{MAIN_ADDRESS}/24"]
            command += [self.satellite, self.satIf, f"{SATELLITE_ADDRESS}/24"]
            self.wire = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.addCleanup(self._endWire)
            assert self.wire.stdout is not None
            ready = self.wire.stdout.readline().strip()
            if ready != "ready":
                raise AssertionError(f"tests/wire.py did not start: {ready!r}")
        self.station = makeStation(self)

    def write(self, text: str) -> str:
        path: str = self.mktemp()
        Path(path).write_text(text)
        return path

    def tls(self, board: str) -> str:
        return (
            f"tls:\n  ca: {self.station / 'ca.pem'}\n"
            f"  certificate: {self.station / (board + '.pem')}\n"
            f"  key: {self.station / (board + '.key')}\n"
        )

    def process(self, ns: str, *argv: str) -> _Process:
        return _Process(
            self, "twistd", "-n", "--pidfile=", "-l", "-", *argv, prefix=("ip", "netns", "exec", ns)
        )

    def agent(self, config: str = "") -> _Process:
        return self.process(
            self.satellite,
            "rcp-agent",
            "--config",
            self.write(self.tls("satellite-1") + config),
            "--listen",
            f"tcp:4129:interface={SATELLITE_ADDRESS}",
        )

    def controller(self, config: str = "") -> _Process:
        return self.process(
            self.main,
            "rcp-controller",
            "--config",
            self.write(self.tls("main") + config),
            "--peer",
            f"tcp:host={SATELLITE_ADDRESS}:port=4129",
            "--peer-name",
            "satellite-1",
        )

    def _endWire(self) -> None:
        assert self.wire is not None and self.wire.stdin is not None
        self.wire.stdin.close()
        try:
            self.wire.wait(10)
        except subprocess.TimeoutExpired:
            self.wire.kill()
            self.wire.wait()

    def _order(self, text: str) -> None:
        assert self.wire is not None and self.wire.stdin is not None
        assert self.wire.stdout is not None
        self.wire.stdin.write(text + "\n")
        self.wire.stdin.flush()
        if self.wire.stdout.readline().strip() != "ok":
            raise AssertionError(f"tests/wire.py refused {text!r}")

    def impair(self, delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0) -> None:
        """Delay (s), jitter (s) and loss (0 to 1) on both directions; all 0: none."""
        if self.wire is not None:
            self._order(f"set {delay} {jitter} {loss}")
            return
        spec: list[str] = []
        if delay or jitter:
            spec += ["delay", f"{delay * 1000:g}ms", f"{jitter * 1000:g}ms"]
        if loss:
            spec += ["loss", f"{loss * 100:g}%"]
        self._netem(*spec)

    def partition(self, cut: bool) -> None:
        """Drop every frame in both directions (C{True}), or none (C{False})."""
        if self.wire is not None:
            self._order(f"partition {'on' if cut else 'off'}")
        else:
            self._netem(*(["loss", "100%"] if cut else []))

    def _netem(self, *spec: str) -> None:
        """The same netem on both ends of the wire (C{()}: none)."""
        for ns, link in ((self.main, self.mainIf), (self.satellite, self.satIf)):
            subprocess.run(
                ["tc", "-n", ns, "qdisc", "del", "dev", link, "root"],
                capture_output=True,
                timeout=30,
            )
            if spec:
                subprocess.run(
                    ["tc", "-n", ns, "qdisc", "add", "dev", link, "root", "netem", *spec],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
