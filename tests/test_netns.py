"""
Two hosts: ``twistd rcp-agent`` in one network namespace, ``twistd
rcp-controller`` in another, joined by a veth pair, as a satellite and a
main board on a station's network.  The link is cut by taking the wire
down, which no loopback test can do.

Needs root and iproute2 (``ip netns``); the namespaces and their addresses
exist only for the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.trial.unittest import SkipTest, TestCase

from .common import makeStation
from .test_tap import _Process, _waitFor

reactor: Any = _reactor

SATELLITE_ADDRESS = "10.213.77.2"
MAIN_ADDRESS = "10.213.77.1"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


class TwoHostsTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            if os.environ.get("CI"):
                raise AssertionError("network namespace tests need root and iproute2")
            raise SkipTest("needs root and iproute2")
        tag = uuid.uuid4().hex[:6]
        self.main, self.satellite = f"rcp-main-{tag}", f"rcp-sat-{tag}"
        for ns in (self.main, self.satellite):
            _ip("netns", "add", ns)
            self.addCleanup(_ip, "netns", "delete", ns)
        self.mainIf, self.satIf = f"vm{tag}", f"vs{tag}"
        _ip("link", "add", self.mainIf, "type", "veth", "peer", "name", self.satIf)
        for ns, link, address in (
            (self.main, self.mainIf, MAIN_ADDRESS),
            (self.satellite, self.satIf, SATELLITE_ADDRESS),
        ):
            _ip("link", "set", link, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def write(self, text: str) -> str:
        path: str = self.mktemp()
        Path(path).write_text(text)
        return path

    def process(self, ns: str, *argv: str) -> _Process:
        return _Process(
            self, "twistd", "-n", "--pidfile=", "-l", "-", *argv, prefix=("ip", "netns", "exec", ns)
        )

    async def test_linkAcrossHostsAndCutWire(self) -> None:
        station = makeStation(self)
        tls = f"tls:\n  ca: {station / 'ca.pem'}\n  certificate: {{cert}}\n  key: {{key}}\n"
        agent = self.process(
            self.satellite,
            "rcp-agent",
            "--config",
            self.write(
                tls.format(cert=station / "satellite-1.pem", key=station / "satellite-1.key")
                + "link: {poll_watchdog: 3, hold_time: 0.5}\n"
            ),
            "--listen",
            f"tcp:4129:interface={SATELLITE_ADDRESS}",
        )
        controller = self.process(
            self.main,
            "rcp-controller",
            "--config",
            self.write(
                tls.format(cert=station / "main.pem", key=station / "main.key")
                + "link: {poll_timeout: 3, hold_time: 0.5, retry_interval: 0.2}\n"
            ),
            "--peer",
            f"tcp:host={SATELLITE_ADDRESS}:port=4129",
            "--peer-name",
            "satellite-1",
        )
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        await _waitFor(lambda: "link synchronised with the controller" in agent.text(), 30)
        # the satellite sees the main board at its address on the station network
        self.assertIn(f"connection from {MAIN_ADDRESS}", agent.text())
        await _waitFor(lambda: "main: <- evse ready: True" in controller.text(), 30)

        # the wire is cut: no poll gets through any more
        _ip("-n", self.satellite, "link", "set", self.satIf, "down")
        await _waitFor(lambda: controller.process.poll() is not None, 30)
        self.assertEqual(controller.process.returncode, 1)
        self.assertIn("no answer to a poll within 3 s", controller.text())
        # the agent resets its board when no poll comes
        await _waitFor(lambda: "no poll for 3 s" in agent.text(), 30)
        await _waitFor(lambda: "resets: no poll for 3 s" in agent.text(), 30)
        self.assertNotIn("Traceback", agent.text() + controller.text())
