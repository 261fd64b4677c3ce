"""
Faults on the wire between a satellite and the main board in two network
namespaces (``tc netem``, or its user-space stand-in: see L{tests.netns}),
with the real
``twistd rcp-agent`` and ``twistd rcp-controller`` processes:

  - 50 ms delay with 10 ms jitter, and 5 % packet loss: the link
    synchronises, every variable the satellite publishes at its start
    arrives, and the link stays synchronised (a poll answered at least
    every liveness limit, or the controller would end);
  - a partition shorter than the liveness limit: nothing ends, the link
    goes on;
  - a longer one: both sides detect it within the limit (the controller
    ends with exit code 1, the agent resets its board), so the station
    restarts into a common start;
  - the satellite powered off (the agent killed with SIGKILL while the
    wire drops everything, so no FIN or RST reaches the main board), and
    the agent restarted while the controller runs.

Both ends are rcp, so the link's liveness limit is rcp's default
(``link.liveness``, 5 s), not upstream's 30 s poll timeout and 60 s watchdog.
"""

from __future__ import annotations

import re
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from .netns import TwoHosts
from .test_tap import _Process, _waitFor

#: seconds: the default liveness limit of an rcp-rcp link (link.liveness)
LIVENESS = 5

AGENT = "link: {hold_time: 0.5}\n"
CONTROLLER = "link: {hold_time: 0.5, retry_interval: 0.2}\n"

#: what the satellite's EvseManager publishes once the station is ready
STARTING_VARS = (
    "evse_id",
    "hw_capabilities",
    "supported_energy_transfer_modes",
    "waiting_for_external_ready",
    "limits",
    "ready",
)


def _arrived(process: _Process) -> set[str]:
    return set(re.findall(r"main: <- evse (\w+):", process.text()))


class FaultTests(TwoHosts):
    timeout = 120

    async def linked(self) -> tuple[_Process, _Process]:
        agent = self.agent(AGENT)
        controller = self.controller(CONTROLLER)
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        await _waitFor(lambda: "link synchronised with the controller" in agent.text(), 30)
        await _waitFor(lambda: set(STARTING_VARS) <= _arrived(controller), 30)
        return agent, controller

    async def stillLinked(self, agent: _Process, controller: _Process, seconds: float) -> None:
        """For C{seconds}, longer than the liveness limit, both processes run on."""
        await deferLater(reactor, seconds)
        self.assertIsNone(agent.process.poll(), agent.text()[-2000:])
        self.assertIsNone(controller.process.poll(), controller.text()[-2000:])
        # a start-up retried on a lossy wire is allowed; once synchronised, nothing ends
        text = agent.text()
        since = text[text.rindex("link synchronised with the controller") :]
        self.assertNotIn("resetting the board", since)
        self.assertNotIn("Traceback", agent.text() + controller.text())

    async def test_delayAndJitter(self) -> None:
        self.impair(delay=0.050, jitter=0.010)
        agent, controller = await self.linked()
        await self.stillLinked(agent, controller, 6)

    async def test_packetLoss(self) -> None:
        self.impair(loss=0.05)
        agent, controller = await self.linked()
        await self.stillLinked(agent, controller, 6)

    async def test_shortPartition(self) -> None:
        agent, controller = await self.linked()
        self.partition(True)
        await deferLater(reactor, LIVENESS / 3)
        self.partition(False)
        await self.stillLinked(agent, controller, 4)

    async def test_longPartition(self) -> None:
        agent, controller = await self.linked()
        cut = time.monotonic()
        self.partition(True)
        await _waitFor(lambda: controller.process.poll() is not None, LIVENESS + 3)
        self.assertEqual(controller.process.returncode, 1)
        self.assertIn(f"no answer to a poll within {LIVENESS} s", controller.text())
        await _waitFor(lambda: f"resets: no poll for {LIVENESS} s" in agent.text(), LIVENESS + 3)
        self.assertLess(time.monotonic() - cut, 2 * LIVENESS + 3)

    async def test_satellitePoweredOff(self) -> None:
        agent, controller = await self.linked()
        # nothing more crosses the wire, not even the kernel's FIN or RST
        self.partition(True)
        agent.process.send_signal(signal.SIGKILL)
        await _waitFor(lambda: controller.process.poll() is not None, LIVENESS + 3)
        self.assertEqual(controller.process.returncode, 1)
        self.assertIn(f"no answer to a poll within {LIVENESS} s", controller.text())

    async def test_agentRestarted(self) -> None:
        agent, controller = await self.linked()
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait(10)
        again = self.agent(AGENT)
        # the controller sees its link lost at once and ends: the station restarts
        await _waitFor(lambda: controller.process.poll() is not None, LIVENESS + 3)
        self.assertEqual(controller.process.returncode, 1)
        # the new agent is fresh: a new controller brings the station to a common start
        controller = self.controller(CONTROLLER)
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        await _waitFor(lambda: "link synchronised with the controller" in again.text(), 30)
