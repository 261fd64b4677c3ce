"""
Station health: each link's figures (clock-driven), the process's report
and its Prometheus form (untrusted peer names escaped), ``rcp status``'s
table; and end to end, a real agent and controller on loopback whose status
sockets ``rcp status`` reads (table, ``--json``, exit status), with the
Prometheus endpoint read by curl.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.health import report
from rcp.health.link import CONNECTING, ENDED, SYNCHRONISED, LinkHealth
from rcp.health.process import ProcessHealth, prometheusText
from rcp.health.versions import Versions

from .common import ROOT, freePort, makeStation, requireProgram
from .test_tap import _tlsYaml, _twistd, _waitFor, _write


class LinkHealthTests(SynchronousTestCase):
    def test_figures(self) -> None:
        clock = Clock()
        link = LinkHealth(clock, "satellite_1")
        self.assertEqual(link.snapshot()["state"], CONNECTING)
        clock.advance(2)
        link.connected("10.0.0.2:4129")
        link.enter(SYNCHRONISED)
        for ms in range(1, 101):
            link.roundTrip(ms / 1000)
        link.polled(3)
        clock.advance(1.5)
        link.polled(0)
        clock.advance(0.5)
        snap = link.snapshot()
        self.assertEqual(snap["state"], SYNCHRONISED)
        self.assertEqual(snap["for_s"], 2.0)
        self.assertEqual((snap["rtt_p50_ms"], snap["rtt_p99_ms"]), (51.0, 100.0))
        self.assertEqual((snap["events"], snap["last_poll_s_ago"], snap["last_event_s_ago"]),
                         (3, 0.5, 2.0))  # fmt: skip
        link.connected("10.0.0.2:4129")
        link.enter(ENDED, "no poll")
        self.assertEqual((link.snapshot()["reconnects"], link.snapshot()["end_reason"]),
                         (1, "no poll"))  # fmt: skip

    def test_prometheusEscapesPeerValues(self) -> None:
        clock = Clock()
        process = ProcessHealth(clock, "rcp-controller", Versions("0.1.0", board="main"))
        link = process.link('sat"1\n')
        link.peerName = 'evil\\"}\nrcp_link_up 1'
        text = prometheusText(process.document())
        for line in text.splitlines():
            self.assertTrue(line.startswith(("#", "rcp_")), line)
        self.assertIn('link="sat\\"1\\n"', text)
        self.assertIn("rcp_link_up{", text)
        self.assertIn(" 0\n", text)  # not synchronised

    def test_table(self) -> None:
        clock = Clock()
        process = ProcessHealth(clock, "rcp-controller", Versions("0.1.0", board="main"))
        link = process.link("satellite_1")
        link.connected("10.0.0.2:4129")
        link.enter(SYNCHRONISED)
        link.peerVersions, link.peerIsRcp, link.peerName = Versions("0.1.0"), True, "satellite-1"
        other = process.link("satellite_2")
        other.peerIsRcp = False
        reports = [process.document(), {"socket": "/run/rcp/x.sock", "error": "refused"}]
        table = report.table(reports)
        self.assertIn("synchronised", table)
        self.assertIn("CONNECTING", table)
        self.assertIn("NOT ANSWERING", table)
        self.assertIn("not rcp (C++)", table)
        self.assertFalse(report.healthy(reports))
        self.assertFalse(report.healthy([process.document()]))
        other.enter(SYNCHRONISED)
        self.assertTrue(report.healthy([process.document()]))

    def test_noProcess(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        missing = str(Path(self.mktemp()) / "none.sock")
        self.assertEqual(report.main([missing], False, out, err), 1)
        self.assertIn("NOT ANSWERING", out.getvalue())


class StatusEndToEndTests(TestCase):
    timeout = 60

    def status(self, *argv: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "rcp.cli", "status", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        return done.returncode, done.stdout + done.stderr

    async def test_rcpStatus(self) -> None:
        curl = requireProgram("curl")
        station = makeStation(self)
        port, metrics = freePort(), freePort()
        run = Path(self.mktemp())
        agentSocket, controllerSocket = str(run / "agent.sock"), str(run / "controller.sock")
        agent = _twistd(
            self,
            "rcp-agent",
            "-c",
            _write(self, _tlsYaml(station, "satellite-1") + f"status: {{socket: {agentSocket}}}\n"),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
        controller = _twistd(
            self,
            "rcp-controller",
            "-c",
            _write(
                self,
                _tlsYaml(station, "main") + f"status: {{socket: {controllerSocket},"
                f" prometheus: 'tcp:{metrics}:interface=127.0.0.1'}}\n",
            ),
            "--peer",
            f"tcp:host=127.0.0.1:port={port}",
            "--peer-name",
            "satellite-1",
        )
        await _waitFor(lambda: "link synchronised with the agent" in controller.text(), 30)
        await _waitFor(lambda: "link synchronised with the controller" in agent.text(), 30)
        await _waitFor(lambda: os.path.exists(agentSocket) and os.path.exists(controllerSocket))

        code, text = self.status(agentSocket, controllerSocket)
        self.assertEqual(code, 0, text)
        self.assertIn("rcp-agent (satellite-1)", text)
        self.assertIn("rcp-controller (main)", text)
        self.assertEqual(text.count("synchronised"), 2, text)
        self.assertIn("rcp 0.1.0 wire 1", text)

        code, text = self.status("--json", agentSocket, controllerSocket)
        reports: list[dict[str, Any]] = json.loads(text)
        self.assertEqual([r["process"]["role"] for r in reports], ["rcp-agent", "rcp-controller"])
        link = reports[1]["links"][0]
        self.assertEqual(link["state"], "synchronised")
        self.assertEqual(link["peer_name"], "satellite-1")
        self.assertTrue(link["peer_is_rcp"])
        self.assertTrue(link["peer_address"].startswith("127.0.0.1"))

        # the pings give the controller its round-trip time soon
        await _waitFor(
            lambda: (
                json.loads(self.status("--json", controllerSocket)[1])[0]["links"][0]["rtt_samples"]
                > 0
            )
        )

        scraped = subprocess.run(
            [curl, "-sf", f"http://127.0.0.1:{metrics}/metrics"], capture_output=True, text=True
        )
        self.assertEqual(scraped.returncode, 0)
        self.assertIn(
            'rcp_link_up{process="rcp-controller",board="main",link="satellite"', scraped.stdout
        )
        self.assertIn("rcp_link_rtt_seconds{", scraped.stdout)

        # the main board dies: the satellite's link is down, and rcp status says so
        controller.process.kill()
        controller.process.wait(10)
        await _waitFor(lambda: "resetting the board" in agent.text(), 20)
        code, text = self.status(agentSocket)
        self.assertEqual(code, 1, text)
        self.assertNotIn("synchronised", text.split("\n", 1)[1])
        # the dead process's socket is left behind: said, not a crash
        code, text = self.status(agentSocket, controllerSocket)
        self.assertEqual(code, 1, text)
        self.assertIn("NOT ANSWERING", text)
