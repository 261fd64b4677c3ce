"""
The twistd commands: plugin discovery, options, service trees, and the real
``twistd rcp-agent`` / ``twistd rcp-controller`` processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from rcp.agent import tap as agentTap
from rcp.controller import tap as controllerTap
from rcp.rpc.guard import GuardFactory

from .common import ROOT, freePort, makeStation

reactor: Any = _reactor


def _write(case: SynchronousTestCase, text: str) -> str:
    path: str = case.mktemp()
    Path(path).write_text(text)
    return path


def _tlsYaml(station: Path, board: str) -> str:
    return (
        "tls:\n"
        f"  ca: {station / 'ca.pem'}\n"
        f"  certificate: {station / (board + '.pem')}\n"
        f"  key: {station / (board + '.key')}\n"
    )


class PluginTests(SynchronousTestCase):
    def test_discoverable(self) -> None:
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        for name, module in (("rcp-agent", agentTap), ("rcp-controller", controllerTap)):
            self.assertIn(name, makers)
            verifyObject(IServiceMaker, makers[name])
            self.assertIs(makers[name].options, module.Options)

    def test_dropinImportsNothingFromRcp(self) -> None:
        source = (ROOT / "twisted" / "plugins" / "rcp_plugins.py").read_text()
        self.assertNotIn("import rcp", source)
        self.assertNotIn("from rcp", source)
        self.assertFalse((ROOT / "twisted" / "__init__.py").exists())
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())


class AgentOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> agentTap.Options:
        options = agentTap.Options()
        options.parseOptions(list(argv))
        return options

    def test_helpDescribesEverySetting(self) -> None:
        usage = str(agentTap.Options())
        for key in ("--config", "--listen", "--plain", "rpc.frame_timeout", "tls.key"):
            self.assertIn(key, usage)

    def test_plainNeedsNoFiles(self) -> None:
        options = self.parse("--plain", "--listen", "tcp:5000")
        self.assertEqual(options.settings.listen, "tcp:5000")
        self.assertIsNone(options.credentials)

    def test_listenOverridesTheFile(self) -> None:
        path = _write(self, "listen: tcp:1\ntls: {mode: plain}\n")
        self.assertEqual(self.parse("-c", path, "-l", "tcp:2").settings.listen, "tcp:2")
        self.assertEqual(self.parse("-c", path).settings.listen, "tcp:1")

    def test_badConfigIsOneLine(self) -> None:
        path = _write(self, "tls: {mode: plain}\nrpc: {frame_timeout: -1}\n")
        error = self.assertRaises(SystemExit, self.parse, "--config", path)
        self.assertEqual(
            str(error.code),
            f"rcp-agent: {path}: rpc.frame_timeout: must be greater than 0, got -1.0",
        )

    def test_badOverrideNamesTheOption(self) -> None:
        error = self.assertRaises(SystemExit, self.parse, "--plain", "--listen", "bogus:1")
        self.assertTrue(
            str(error.code).startswith("rcp-agent: --listen: not a server endpoint string"),
            error.code,
        )

    def test_tlsFileProblemNamesTheKey(self) -> None:
        path = _write(self, "tls: {ca: /nonexistent/ca.pem, certificate: a, key: b}\n")
        error = self.assertRaises(SystemExit, self.parse, "--config", path)
        self.assertEqual(
            str(error.code),
            f"rcp-agent: {path}: tls.ca: cannot read /nonexistent/ca.pem: No such file or"
            " directory",
        )


class MakeServiceTests(SynchronousTestCase):
    def test_agentTree(self) -> None:
        reactor = MemoryReactorClock()
        options = agentTap.Options()
        options.parseOptions(["--plain", "--listen", "tcp:4200:interface=127.0.0.1"])
        top = agentTap.makeService(options, reactor)
        self.assertEqual({s.name for s in top} - {None}, {"rpc", "everest"})
        top.privilegedStartService()
        top.startService()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (4200, "127.0.0.1"))
        self.assertIsInstance(factory, GuardFactory)
        self.assertNotIsInstance(factory.wrappedFactory, TLSMemoryBIOFactory)  # type: ignore[attr-defined]
        self.successResultOf(top.stopService())

    def test_agentTlsTree(self) -> None:
        station = makeStation(self)
        reactor = MemoryReactorClock()
        options = agentTap.Options()
        options.parseOptions(["-c", _write(self, _tlsYaml(station, "satellite-1"))])
        top = agentTap.makeService(options, reactor)
        top.privilegedStartService()
        top.startService()
        [(port, factory, _, _)] = reactor.tcpServers
        self.assertEqual(port, 4129)
        self.assertIsInstance(factory, GuardFactory)
        self.assertIsInstance(factory.wrappedFactory, TLSMemoryBIOFactory)  # type: ignore[attr-defined]
        self.successResultOf(top.stopService())

    def test_controllerTree(self) -> None:
        station = makeStation(self)
        reactor = MemoryReactorClock()
        options = controllerTap.Options()
        options.parseOptions(
            [
                "-c",
                _write(self, _tlsYaml(station, "main")),
                "--peer",
                "tcp:host=192.0.2.7:port=4129",
                "--peer-name",
                "satellite-1",
            ]
        )
        top = controllerTap.makeService(options, reactor)
        top.startService()
        [(host, port, _, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("192.0.2.7", 4129))
        self.successResultOf(top.stopService())


class _Process:
    """A twistd process with its log in a file."""

    def __init__(self, case: TestCase, *argv: str, prefix: tuple[str, ...] = ()) -> None:
        """
        @param argv: C{"twistd"} and its arguments, or the arguments of
            C{python -m twisted}.
        @param prefix: a command to run it under (such as C{ip netns exec NS}).
        """
        self.log = Path(case.mktemp())
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if argv[0] == "twistd":
            command = [sys.executable, "-c", _TWISTD, *argv[1:]]
        else:
            command = [sys.executable, "-m", "twisted", *argv]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*prefix, *command], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        case.addCleanup(self.stop)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def _twistd(case: TestCase, *argv: str) -> _Process:
    return _Process(case, "twistd", "-n", "--pidfile=", "-l", "-", *argv)


async def _waitFor(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await deferLater(reactor, 0.05)


class ProcessTests(TestCase):
    """The real commands, as systemd would run them."""

    def link(self, peerName: str) -> tuple[_Process, _Process]:
        """An agent (satellite-1) and a controller that expects C{peerName}."""
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
        controller = _twistd(
            self,
            "rcp-controller",
            "-c",
            _write(self, _tlsYaml(station, "main")),
            "--peer",
            f"tcp:host=127.0.0.1:port={port}",
            "--peer-name",
            peerName,
        )
        return agent, controller

    async def test_agentAndControllerLinkOverMutualTls(self) -> None:
        agent, controller = self.link("satellite-1")
        await _waitFor(lambda: "TLS established with main" in agent.text())
        await _waitFor(lambda: "link synchronised with the agent" in controller.text())
        await _waitFor(lambda: "link synchronised with the controller" in agent.text())
        # the satellite's variables reach the main board's EVerest
        await _waitFor(lambda: "main: <- evse ready: True" in controller.text())
        self.assertIn("TLS established with satellite-1", controller.text())
        self.assertIn(controller.stop(), (0, -signal.SIGTERM))
        self.assertIn(agent.stop(), (0, -signal.SIGTERM))
        for text in (agent.text(), controller.text()):
            self.assertNotIn("Traceback", text)

    async def test_wrongIdentityIsLogged(self) -> None:
        agent, controller = self.link("satellite-2")
        await _waitFor(lambda: "TLS handshake failed" in controller.text())
        self.assertIn("satellite-2", controller.text())
        await _waitFor(lambda: "TLS handshake failed" in agent.text())
        self.assertNotIn("TLS established", agent.text())

    async def test_plainLinkWarns(self) -> None:
        port = freePort()
        agent = _twistd(self, "rcp-agent", "--plain", "--listen", f"tcp:{port}:interface=127.0.0.1")
        await _waitFor(lambda: "UNAUTHENTICATED" in agent.text())
        with socket.create_connection(("127.0.0.1", port)):
            await _waitFor(lambda: "agent: connection from 127.0.0.1" in agent.text())

    async def test_badConfigEndsWithOneLine(self) -> None:
        path = _write(self, "listen: tcp:4129\ntls:\n  mode: mutal\n")
        agent = _twistd(self, "rcp-agent", "--config", path)
        await _waitFor(lambda: agent.process.poll() is not None)
        self.assertNotEqual(agent.process.returncode, 0)
        self.assertEqual(
            agent.text(),
            f"rcp-agent: {path}: tls.mode: expected one of mutual, plain, got a string ('mutal')\n",
        )

    async def test_busyPortEndsWithOneLine(self) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            agent = _twistd(
                self, "rcp-agent", "--plain", "--listen", f"tcp:{port}:interface=127.0.0.1"
            )
            await _waitFor(lambda: agent.process.poll() is not None)
        self.assertNotEqual(agent.process.returncode, 0)
        self.assertIn(f"rcp-agent: cannot listen on tcp:{port}", agent.text())
        self.assertNotIn("Traceback", agent.text())
