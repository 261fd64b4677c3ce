"""
Discovery across a station network: ``twistd rcp-agent`` advertising its
board's serial number in one network namespace, ``twistd rcp-controller``
finding it by that serial number in another, on one bridge, with real
mDNS multicast between them and mutual TLS proving who answers.

Needs root and iproute2; the namespaces, bridge and addresses exist only
for the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from rcp.certs import createStation

from .test_tap import _Process, _waitFor

SERIAL = "SN-7731"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


class DiscoveryAcrossHostsTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            if os.environ.get("CI"):
                raise AssertionError("network namespace tests need root and iproute2")
            raise SkipTest("needs root and iproute2")
        tag = uuid.uuid4().hex[:6]
        self.bridge = f"rb{tag}"
        _ip("link", "add", self.bridge, "type", "bridge")
        self.addCleanup(_ip, "link", "delete", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.hosts: dict[str, str] = {}
        self.links: dict[str, str] = {}
        for role in ("main", "sat", "evil"):
            ns = f"rcp-{role}-{tag}"
            _ip("netns", "add", ns)
            self.addCleanup(_ip, "netns", "delete", ns)
            inside, outside = f"i{role[:2]}{tag}", f"o{role[:2]}{tag}"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("link", "set", inside, "netns", ns)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.hosts[role], self.links[role] = ns, inside
        self.address("main", "10.214.0.1")
        self.station = Path(self.mktemp())
        createStation(
            self.station, ["main", "satellite-1", "satellite-2"], serials={"satellite-1": SERIAL}
        )

    def address(self, role: str, address: str, old: str | None = None) -> None:
        ns, link = self.hosts[role], self.links[role]
        if old is not None:
            _ip("-n", ns, "addr", "del", f"{old}/24", "dev", link)
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)

    def config(self, board: str, extra: str) -> str:
        path = Path(self.mktemp())
        path.write_text(
            f"tls:\n  ca: {self.station / 'ca.pem'}\n"
            f"  certificate: {self.station / (board + '.pem')}\n"
            f"  key: {self.station / (board + '.key')}\n" + extra
        )
        return str(path)

    def agent(self, role: str, board: str, serial: str) -> _Process:
        return _Process(
            self,
            "twistd", "-n", "--pidfile=", "-l", "-", "rcp-agent",
            "--config",
            self.config(
                board,
                f"discovery: {{advertise: true, serial: {serial}}}\n"
                "link: {poll_watchdog: 3, hold_time: 0.5}\n",
            ),
            "--listen", "tcp:4129",
            prefix=("ip", "netns", "exec", self.hosts[role]),
        )  # fmt: skip

    def controller(self) -> _Process:
        return _Process(
            self,
            "twistd", "-n", "--pidfile=", "-l", "-", "rcp-controller",
            "--config",
            self.config(
                "main",
                f"discovery: {{serial: {SERIAL}, timeout: 20}}\n"
                "link: {poll_timeout: 3, hold_time: 0.5, retry_interval: 0.2}\n",
            ),
            prefix=("ip", "netns", "exec", self.hosts["main"]),
        )  # fmt: skip

    async def test_findsFollowsAndChecks(self) -> None:
        self.address("sat", "10.214.0.2")
        agent = self.agent("sat", "satellite-1", SERIAL)
        await _waitFor(lambda: "advertising serial number" in agent.text(), 30)
        controller = self.controller()
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        self.assertIn(f"board {SERIAL} (satellite-1) at 10.214.0.2:4129", controller.text())
        await _waitFor(lambda: "link synchronised with the controller" in agent.text(), 30)
        self.assertIn("connection from 10.214.0.1", agent.text())

        # the satellite boots with another address: a fresh start finds it there
        agent.stop()
        controller.stop()
        self.address("sat", "10.214.0.22", old="10.214.0.2")
        agent = self.agent("sat", "satellite-1", SERIAL)
        await _waitFor(lambda: "advertising serial number" in agent.text(), 30)
        controller = self.controller()
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        self.assertIn(f"board {SERIAL} (satellite-1) at 10.214.0.22:4129", controller.text())
        self.assertNotIn("Traceback", agent.text() + controller.text())

    async def test_impostorGetsNothing(self) -> None:
        """Another board of the station advertising satellite-1's serial number."""
        self.address("evil", "10.214.0.66")
        impostor = self.agent("evil", "satellite-2", SERIAL)
        await _waitFor(lambda: "advertising serial number" in impostor.text(), 30)
        controller = self.controller()
        await _waitFor(lambda: "10.214.0.66" in controller.text(), 30)
        # the certificate, not the advert, says who answers: refused in the handshake
        refused = re.compile(r"TLS[^\n]*(fail|expected)")
        await _waitFor(lambda: refused.search(controller.text()) is not None, 20)
        self.assertNotIn("link synchronised", controller.text())
        self.assertNotIn("link synchronised", impostor.text())
