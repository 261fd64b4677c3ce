"""
A stop is a stop: SIGTERM or SIGINT ends a real ``twistd rcp-agent`` /
``twistd rcp-controller`` process by that signal in every phase (waiting
for the manager's config over MQTT, connecting, synchronising,
synchronised, ending), never with an exit status.  The systemd units of
the README restart the whole EVerest when rcp *exits* (``$EXIT_CODE`` is
``exited``), and not when it is killed by a signal (``killed``), which is
how ``systemctl stop`` must look.  A process that ends by itself for a loss
of sync still exits with status 1.

Each test starts the real processes (as L{tests.test_tap} does), with a
mosquitto and the manager double where the phase needs them, and checks
the wait status: a negative C{returncode} is "killed by that signal".
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any, cast

import msgpack
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.service import exitProcess, stoppedBySignal

from .common import freePort
from .everest_manager import ManagerDouble, moduleConfig
from .mosquitto import Mosquitto, startBroker
from .test_tap import _Process, _twistd, _waitFor, _write

reactor: Any = _reactor

PREFIX = "everest/"
PLAIN = "tls: {mode: plain}\n"


def _mqttYaml(broker: Mosquitto, moduleId: str) -> str:
    return (
        "everest: mqtt\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, prefix: {PREFIX},"
        f" module_ids: [{moduleId}]}}\n" + PLAIN
    )


def _request(msgid: int, method: str, *params: Any) -> bytes:
    data: bytes = msgpack.packb([0, msgid, method, list(params)])
    return data


class RpclibPeer(Protocol):
    """
    One end of a link, as the C++ boards' rpclib writes it: requests out,
    and every message that comes in, decoded.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.lost: Deferred[None] = Deferred()
        self._unpacker = msgpack.Unpacker(raw=False)

    def dataReceived(self, data: bytes) -> None:
        self._unpacker.feed(data)
        self.messages.extend(self._unpacker)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def response(self, msgid: int) -> Any:
        for message in self.messages:
            if message[:2] == [1, msgid]:
                return message
        return None

    def close(self) -> Deferred[None] | None:
        if self.lost.called or self.transport is None:
            return None
        self.transport.abortConnection()  # type: ignore[attr-defined]
        return self.lost


class _StoppingReactor(Clock):
    """
    What L{exitProcess} uses of a reactor: its shutdown triggers, C{stop()}
    (which refuses once stopping) and the signal that stopped it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.afterShutdown: list[Callable[[], object]] = []
        self.stopping = False
        self._exitSignal: int | None = None

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], object]) -> None:
        assert (phase, event) == ("after", "shutdown")
        self.afterShutdown.append(f)

    def stop(self) -> None:
        if self.stopping:
            raise ReactorNotRunning()
        self.stopping = True

    def signal(self, number: int) -> None:
        """What the reactor's SIGTERM and SIGINT handlers do."""
        self._exitSignal = number
        self.stop()

    def shutDown(self) -> None:
        for f in self.afterShutdown:
            f()


class ExitProcessTests(SynchronousTestCase):
    """L{exitProcess}, the end of a process that ends by itself, with a stop racing it."""

    def setUp(self) -> None:
        self.reactor = _StoppingReactor()
        self.exits: list[int] = []
        self.end = exitProcess(self.reactor, self.exits.append)

    def test_endExitsWithTheCode(self) -> None:
        """A loss of sync: the reactor stops, then the process exits 1."""
        self.end(1, "link lost")
        self.reactor.advance(0)
        self.assertTrue(self.reactor.stopping)
        self.assertEqual(self.exits, [])
        self.reactor.shutDown()
        self.assertEqual(self.exits, [1])

    def test_once(self) -> None:
        self.end(1, "link lost")
        self.end(0, "later")
        self.reactor.advance(0)
        self.reactor.shutDown()
        self.assertEqual(self.exits, [1])

    def test_signalAfterTheEnd(self) -> None:
        """
        A stop by signal while the process is ending: it exits by the
        signal (twistd kills it with it), not with the code.
        """
        self.end(1, "link lost")
        self.reactor.advance(0)
        self.reactor._exitSignal = signal.SIGTERM  # the handler, while stopping
        self.reactor.shutDown()
        self.assertEqual(self.exits, [])

    def test_endDuringAStop(self) -> None:
        """Something fails because of the stop and ends: the stop wins."""
        self.reactor.signal(signal.SIGINT)
        self.end(1, "lost the MQTT broker while starting")
        self.reactor.advance(0)  # no ReactorNotRunning
        self.reactor.shutDown()
        self.assertEqual(self.exits, [])
        self.assertEqual(stoppedBySignal(self.reactor), signal.SIGINT)

    def test_noSignalRecord(self) -> None:
        """A reactor that does not record signals: the code stands."""
        self.assertIsNone(stoppedBySignal(object()))


class StopTests(TestCase):
    timeout = 60

    def startBroker(self) -> Mosquitto:
        return startBroker(self)

    async def manager(self, broker: Mosquitto, configs: dict[str, dict[str, Any]]) -> ManagerDouble:
        manager = ManagerDouble(reactor, broker.port, PREFIX, configs, moduleNames=True)
        self.addCleanup(manager.stop)
        await manager.start()
        return manager

    async def ended(self, process: _Process, timeout: float = 20.0) -> int:
        """The wait status of C{process}, once it has ended."""
        await _waitFor(lambda: process.process.poll() is not None, timeout)
        return process.process.returncode

    async def assertStopsBy(self, process: _Process, sig: signal.Signals = signal.SIGTERM) -> None:
        """C{sig} ends C{process} by that signal: what systemd calls a stop."""
        self.assertIsNone(process.process.poll(), process.text())
        process.process.send_signal(sig)
        status = await self.ended(process)
        self.assertEqual(status, -sig, f"{sig.name} gave wait status {status}:\n{process.text()}")
        self.assertNotIn("Traceback", process.text())

    async def rpclibPeer(self, port: int) -> RpclibPeer:
        peer = RpclibPeer()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await _retry(lambda: connectProtocol(endpoint, peer))
        self.addCleanup(peer.close)
        return peer

    async def answered(self, peer: RpclibPeer, msgid: int) -> Any:
        await _waitFor(lambda: peer.response(msgid) is not None or peer.lost.called)
        answer = peer.response(msgid)
        self.assertIsNotNone(answer, "the connection was lost")
        return answer

    def silentAgent(self) -> tuple[int, list[RpclibPeer]]:
        """A port that accepts connections and never answers (an agent that hangs)."""
        peers: list[RpclibPeer] = []

        def build(addr: IPv4Address) -> RpclibPeer:
            peer = RpclibPeer()
            peers.append(peer)
            return peer

        factory = Factory.forProtocol(RpclibPeer)
        factory.buildProtocol = build  # type: ignore[assignment, method-assign]
        port = cast(IListeningPort, reactor.listenTCP(0, factory, interface="127.0.0.1"))
        self.addCleanup(port.stopListening)

        def closeAll() -> None:
            for peer in peers:
                peer.close()

        self.addCleanup(closeAll)
        return port.getHost().port, peers  # type: ignore[attr-defined]

    # -- processes ---------------------------------------------------------

    def simAgent(self, port: int) -> _Process:
        return _twistd(self, "rcp-agent", "--plain", "--listen", f"tcp:{port}:interface=127.0.0.1")

    def simController(self, port: int) -> _Process:
        return _twistd(
            self, "rcp-controller", "--plain", "--peer", f"tcp:host=127.0.0.1:port={port}"
        )

    def mqttAgent(self, broker: Mosquitto) -> _Process:
        return _twistd(self, "rcp-agent", "-c", _write(self, _mqttYaml(broker, "agent")))

    def mqttController(self, broker: Mosquitto) -> _Process:
        return _twistd(self, "rcp-controller", "-c", _write(self, _mqttYaml(broker, "satellite_1")))

    # -- waiting for the manager's config over MQTT --------------------------

    async def waitingForConfig(
        self, start: Callable[[Mosquitto], _Process], origin: str
    ) -> _Process:
        broker = self.startBroker()
        manager = await self.manager(broker, {})  # answers nobody
        process = start(broker)
        await _waitFor(lambda: ("config", origin) in manager.events)
        return process

    async def test_agentWaitingForConfig(self) -> None:
        await self.assertStopsBy(await self.waitingForConfig(self.mqttAgent, "agent"))

    async def test_agentWaitingForConfigSigint(self) -> None:
        process = await self.waitingForConfig(self.mqttAgent, "agent")
        await self.assertStopsBy(process, signal.SIGINT)

    async def test_controllerWaitingForConfig(self) -> None:
        process = await self.waitingForConfig(self.mqttController, "satellite_1")
        await self.assertStopsBy(process)

    async def test_controllerWaitingForConfigSigint(self) -> None:
        process = await self.waitingForConfig(self.mqttController, "satellite_1")
        await self.assertStopsBy(process, signal.SIGINT)

    # -- connecting ----------------------------------------------------------

    async def test_controllerConnecting(self) -> None:
        """No agent listens: the controller tries again and again."""
        controller = self.simController(freePort())
        await _waitFor(lambda: "connecting again" in controller.text())
        await self.assertStopsBy(controller)

    async def test_mqttControllerConnecting(self) -> None:
        """The same as a module of EVerest, after it got its config."""
        broker = self.startBroker()
        config = moduleConfig(
            "satellite_1",
            "SatelliteController",
            {"!module": {"hostname": "127.0.0.1", "port": freePort()}},
        )
        manager = await self.manager(broker, {"satellite_1": config})
        controller = self.mqttController(broker)
        await _waitFor(lambda: ("metadata", "satellite_1") in [e[:2] for e in manager.events])
        await _waitFor(lambda: "connecting again" in controller.text())
        await self.assertStopsBy(controller)

    async def test_agentWaitingForAController(self) -> None:
        port = freePort()
        agent = self.simAgent(port)
        await self.rpclibPeer(port)  # it listens
        await self.assertStopsBy(agent)

    # -- synchronising -------------------------------------------------------

    async def test_controllerSynchronising(self) -> None:
        """Connected, the start-up call (``rcp_hello``, then ``i_am_here``) sent, no answer."""
        port, peers = self.silentAgent()
        controller = self.simController(port)
        await _waitFor(lambda: bool(peers) and bool(peers[0].messages))
        self.assertIn(peers[0].messages[0][2], ("rcp_hello", "i_am_here"))
        await self.assertStopsBy(controller)

    async def test_agentSynchronising(self) -> None:
        """``i_am_here`` answered, ``i_am_ready`` not called yet."""
        port = freePort()
        agent = self.simAgent(port)
        peer = await self.rpclibPeer(port)
        peer.write(_request(1, "i_am_here"))
        self.assertEqual(await self.answered(peer, 1), [1, 1, None, False])
        await self.assertStopsBy(agent)

    # -- synchronised --------------------------------------------------------

    async def synchronisedPair(self) -> tuple[_Process, _Process]:
        port = freePort()
        agent = self.simAgent(port)
        controller = self.simController(port)
        await _waitFor(lambda: "link synchronised with the agent" in controller.text())
        await _waitFor(lambda: "link synchronised with the controller" in agent.text())
        return agent, controller

    async def test_synchronisedController(self) -> None:
        """The controller stops (it tells the agent ``exit`` on its way)."""
        agent, controller = await self.synchronisedPair()
        await self.assertStopsBy(controller)
        await self.assertStopsBy(agent)

    async def test_synchronisedControllerSigint(self) -> None:
        _, controller = await self.synchronisedPair()
        await self.assertStopsBy(controller, signal.SIGINT)

    async def test_synchronisedAgentAndLossOfSync(self) -> None:
        """
        The agent stops by signal; its controller, which loses the link, ends
        by itself with exit status 1 (systemd restarts the station).
        """
        agent, controller = await self.synchronisedPair()
        await self.assertStopsBy(agent)
        self.assertEqual(await self.ended(controller), 1, controller.text())

    async def test_synchronisedMqttAgent(self) -> None:
        agent, _, _ = await self.mqttAgentSynchronised()
        await self.assertStopsBy(agent)

    # -- ending --------------------------------------------------------------

    async def mqttAgentSynchronised(self) -> tuple[_Process, RpclibPeer, list[Any]]:
        """
        An agent as the SatelliteAgent of an EVerest whose System never
        answers, linked with a controller that speaks rpclib.

        @return: the process, the controller's end and the commands the
            agent sent to the System.
        """
        broker = self.startBroker()
        port = freePort()
        config = moduleConfig(
            "agent",
            "SatelliteAgent",
            {"!module": {"port": port}},
            connections={"system": [("board_system", "main")]},
        )
        manager = await self.manager(broker, {"agent": config})
        commands: list[Any] = []
        await manager.connection.subscribe(
            f"{PREFIX}modules/board_system/impl/main/cmd/+",
            lambda message: commands.append(json.loads(message.payload)),
        )
        agent = self.mqttAgent(broker)
        peer = await self.rpclibPeer(port)
        peer.write(_request(1, "i_am_here"))
        self.assertEqual(await self.answered(peer, 1), [1, 1, None, False])
        peer.write(_request(2, "i_am_ready"))
        self.assertEqual(await self.answered(peer, 2), [1, 2, None, None])
        await manager.whenGloballyReady()
        return agent, peer, commands

    async def test_agentEnding(self) -> None:
        """
        The link is lost: the agent asks its System for a reset and waits
        for the answer before it ends; a stop meanwhile is a stop.
        """
        agent, peer, commands = await self.mqttAgentSynchronised()
        lost = peer.close()
        assert lost is not None
        await lost
        await _waitFor(lambda: bool(commands))
        self.assertEqual(commands[0]["data"]["args"], {"type": "Soft", "scheduled": False})
        await self.assertStopsBy(agent)


async def _retry(connect: Callable[[], Deferred[Any]], timeout: float = 15.0) -> None:
    """Connect, again and again until the process listens."""
    deadline = reactor.seconds() + timeout
    while True:
        try:
            await connect()
            return
        except Exception:
            if reactor.seconds() > deadline:
                raise
            await deferLater(reactor, 0.05)
