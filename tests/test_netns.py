"""
Two hosts: ``twistd rcp-agent`` in one network namespace, ``twistd
rcp-controller`` in another, joined by a veth pair, as a satellite and a
main board on a station's network.  The link is cut by taking the wire
down, which no loopback test can do.

Needs root and iproute2 (``ip netns``); the namespaces and their addresses
exist only for the test.
"""

from __future__ import annotations

from .netns import MAIN_ADDRESS, TwoHosts, ip
from .test_tap import _waitFor


class TwoHostsTests(TwoHosts):
    timeout = 120

    async def test_linkAcrossHostsAndCutWire(self) -> None:
        # rcp on both ends: the liveness limit applies (upstream's 30 and 60 s do not)
        agent = self.agent("link: {liveness: 3, hold_time: 0.5}\n")
        controller = self.controller("link: {liveness: 3, hold_time: 0.5, retry_interval: 0.2}\n")
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        await _waitFor(lambda: "link synchronised with the controller" in agent.text(), 30)
        # the satellite sees the main board at its address on the station network
        self.assertIn(f"connection from {MAIN_ADDRESS}", agent.text())
        await _waitFor(lambda: "main: <- evse ready: True" in controller.text(), 30)

        # the wire is cut: no poll gets through any more
        ip("-n", self.satellite, "link", "set", self.satIf, "down")
        await _waitFor(lambda: controller.process.poll() is not None, 30)
        self.assertEqual(controller.process.returncode, 1)
        self.assertIn("no answer to a poll within 3 s", controller.text())
        # the agent resets its board when no poll comes
        await _waitFor(lambda: "no poll for 3 s" in agent.text(), 30)
        await _waitFor(lambda: "resets: no poll for 3 s" in agent.text(), 30)
        self.assertNotIn("Traceback", agent.text() + controller.text())
