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

import msgpack
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
        self.assertEqual({s.name for s in top} - {None}, {"rpc", "everest", "status"})
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

    async def test_portOutOfRangeEndsWithOneLine(self) -> None:
        """A listen or connect port outside 0-65535: one line naming the key, exit 1."""
        agentPath = _write(self, "listen: tcp:70000\ntls: {mode: plain}\n")
        agent = _twistd(self, "rcp-agent", "--config", agentPath)
        path = _write(self, "peer: tcp:host=127.0.0.1:port=65536\ntls: {mode: plain}\n")
        controller = _twistd(self, "rcp-controller", "--config", path)
        await _waitFor(lambda: agent.process.poll() is not None)
        await _waitFor(lambda: controller.process.poll() is not None)
        self.assertNotEqual(agent.process.returncode, 0)
        self.assertNotEqual(controller.process.returncode, 0)
        self.assertEqual(
            agent.text().splitlines(),
            [
                f"rcp-agent: {agentPath}: listen: port 70000 in 'tcp:70000'"
                " is not a port number (0 to 65535)"
            ],
        )
        self.assertEqual(
            controller.text().splitlines(),
            [
                f"rcp-controller: {path}: peer: port 65536 in"
                " 'tcp:host=127.0.0.1:port=65536' is not a port number (1 to 65535)"
            ],
        )

    async def test_unknownOptionIsTheErrorAndAHint(self) -> None:
        """The error and a hint, not the whole help text first."""
        agent = _twistd(self, "rcp-agent", "--bogus")
        controller = _twistd(self, "rcp-controller", "--peer")
        await _waitFor(lambda: agent.process.poll() is not None)
        await _waitFor(lambda: controller.process.poll() is not None)
        self.assertNotEqual(agent.process.returncode, 0)
        self.assertNotEqual(controller.process.returncode, 0)
        self.assertEqual(
            agent.text().splitlines(),
            ["rcp-agent: option --bogus not recognized", "try: twistd rcp-agent --help"],
        )
        self.assertEqual(
            controller.text().splitlines(),
            [
                "rcp-controller: option --peer requires argument",
                "try: twistd rcp-controller --help",
            ],
        )

    async def test_helpStillWorks(self) -> None:
        agent = _twistd(self, "rcp-agent", "--help")
        await _waitFor(lambda: agent.process.poll() is not None)
        self.assertEqual(agent.process.returncode, 0)
        self.assertIn("--debug", agent.text())
        self.assertIn("link.summary_interval", agent.text())

    async def test_nameMismatchSaysExpectedAndPresented(self) -> None:
        """The controller, which checks the agent's name, says both names."""
        _, controller = self.link("satellite-2")
        await _waitFor(lambda: "TLS name mismatch" in controller.text())
        self.assertIn(
            "TLS name mismatch: expected satellite-2, the peer presented satellite-1",
            controller.text(),
        )

    async def test_clientNameMismatchSaysExpectedAndPresented(self) -> None:
        """The agent, which checks the controller's name, says both names."""
        station = makeStation(self)
        port = freePort()
        agent = _twistd(
            self,
            "rcp-agent",
            "-c",
            _write(self, _tlsYaml(station, "satellite-1") + "  allowed_clients: [main]\n"),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
        _twistd(
            self,
            "rcp-controller",
            "-c",
            _write(self, _tlsYaml(station, "satellite-2")),
            "--peer",
            f"tcp:host=127.0.0.1:port={port}",
            "--peer-name",
            "satellite-1",
        )
        await _waitFor(lambda: "TLS name mismatch" in agent.text())
        self.assertIn(
            "TLS name mismatch: expected main (tls.allowed_clients), the peer presented"
            " satellite-2; refused",
            agent.text(),
        )

    async def test_secondControllerTakingOverIsLoggedOnBothSides(self) -> None:
        """
        A second controller with the main board's certificate: the satellite
        resets (upstream rule) and the first controller ends, and both say why.
        """
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
        controllerYaml = _write(self, _tlsYaml(station, "main"))
        peer = f"tcp:host=127.0.0.1:port={port}"
        argv = ("-c", controllerYaml, "--peer", peer, "--peer-name", "satellite-1")
        first = _twistd(self, "rcp-controller", *argv)
        await _waitFor(lambda: "link synchronised with the agent" in first.text())
        second = _twistd(self, "rcp-controller", *argv)
        await _waitFor(lambda: "a second controller connected" in agent.text())
        await _waitFor(lambda: first.process.poll() is not None)
        self.assertEqual(first.process.returncode, 1)
        self.assertIn("while the controller at 127.0.0.1:", agent.text())
        self.assertIn("resetting the board", agent.text())
        self.assertIn(
            "controller: losing the link to 127.0.0.1:"
            f"{port}: another controller took over this satellite (i_am_here from 127.0.0.1:",
            first.text(),
        )
        self.assertIn(
            "link ended (link lost: another controller took over this satellite", first.text()
        )
        self.assertIn("the agent had already seen a controller", second.text())

    async def test_peerStringsAreCutInTheLog(self) -> None:
        """A peer's 500 KB string reaches the log as one short line."""
        port = freePort()
        agent = _twistd(self, "rcp-agent", "--plain", "--listen", f"tcp:{port}:interface=127.0.0.1")
        await _waitFor(lambda: "UNAUTHENTICATED" in agent.text())
        await _waitFor(lambda: _connects(port))
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(msgpack.packb([2, "x" * 500_000, ["y" * 100_000]]))
            await _waitFor(lambda: "ignored notification" in agent.text())
        [line] = [line for line in agent.text().splitlines() if "ignored notification" in line]
        self.assertLess(len(line), 1500)
        # cut where it is logged, or by the log's own cutting: either says so
        self.assertRegex(line, r"\((499800 more|500000) characters\)")
        self.assertLess(len(agent.text()), 20_000)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


class LoggingProcessTests(TestCase):
    """What a user sees of a running link: summaries, and no debug lines by default."""

    def pair(self, extra: str, *flags: str) -> tuple[_Process, _Process]:
        station = makeStation(self)
        port = freePort()
        agent = _twistd(
            self,
            "rcp-agent",
            "-c",
            _write(self, _tlsYaml(station, "satellite-1") + extra),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            *flags,
        )
        controller = _twistd(
            self,
            "rcp-controller",
            "-c",
            _write(self, _tlsYaml(station, "main") + extra),
            "--peer",
            f"tcp:host=127.0.0.1:port={port}",
            "--peer-name",
            "satellite-1",
            *flags,
        )
        return agent, controller

    async def test_summaryEveryInterval(self) -> None:
        agent, controller = self.pair("link: {summary_interval: 1}\n")
        await _waitFor(lambda: "controller: link to the agent at 127.0.0.1:" in controller.text())
        await _waitFor(lambda: "agent: link to the controller at 127.0.0.1:" in agent.text())
        for process, side in ((controller, "controller"), (agent, "agent")):
            [line, *_] = [
                line for line in process.text().splitlines() if f"{side}: link to the" in line
            ]
            self.assertIn(f"#info] {side}: link to the", line)
            self.assertRegex(line, r"synchronised for \d+ s: RTT [\d.]+ ms, \d+ event\(s\)")
            self.assertTrue(line.endswith("forwarded in the last 1 s"), line)
        # the satellite's start-up variables were forwarded
        self.assertRegex(controller.text(), r"RTT [\d.]+ ms, [1-9]\d* event\(s\) forwarded")

    async def test_noDebugLinesByDefault(self) -> None:
        agent, controller = self.pair("")
        await _waitFor(lambda: "link synchronised with the agent" in controller.text())
        await _waitFor(lambda: "link synchronised with the controller" in agent.text())
        for text in (agent.text(), controller.text()):
            self.assertNotIn("#debug]", text)
        self.assertNotIn("controller sync: connecting", controller.text())

    async def test_debugOption(self) -> None:
        _, controller = self.pair("", "--debug")
        await _waitFor(lambda: "link synchronised with the agent" in controller.text())
        self.assertIn("#debug] controller sync: connecting", controller.text())

    async def test_logLevelSetting(self) -> None:
        """log_level: warn keeps even the summaries and start-up lines out."""
        agent, controller = self.pair("log_level: warn\nlink: {summary_interval: 0.2}\n")
        await deferLater(reactor, 3, lambda: None)  # time to synchronise, then summaries
        self.assertIsNone(controller.process.poll(), controller.text())
        agent.stop()
        await _waitFor(lambda: controller.process.poll() is not None)
        self.assertIn("#warn] controller: link ended", controller.text())
        for text in (agent.text(), controller.text()):
            self.assertNotIn("#info]", text)
            self.assertNotIn("#debug]", text)
