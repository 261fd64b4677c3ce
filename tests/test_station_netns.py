"""
A whole station of 16 satellites as separate processes: 16 network
namespaces on one bridge, each a satellite with its own ``twistd
rcp-agent`` (simulated EVerest side) advertising its board's serial number
by mDNS; the main board (the test's own namespace, on the bridge) runs a
real EVerest manager with 16 SatelliteController modules, all served by one
``twistd rcp-controller`` process that finds every satellite by its serial
number, and a test module that sees every satellite's link and variables.

Needs root and iproute2, and the real manager of ``../shared/everest``.
mDNS stays on the bridge: the controller browses only on its bridge address.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from rcp.certs import createStation

from . import everest_real as real
from .common import ROOT
from .everest_modules import samples
from .netns import ip, requireNamespaces
from .test_tap import _Process, _twistd, _waitFor

SATELLITES = 16
MAIN_ADDRESS = "10.216.0.1"


def serial(i: int) -> str:
    return f"SN-{i:04d}"


def address(i: int) -> str:
    return f"10.216.0.{10 + i}"


class SixteenSatellitesTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        requireNamespaces()
        real.tarball()  # skips, saying where it looked, without the manager
        tag = uuid.uuid4().hex[:5]
        self.bridge = f"rb{tag}"
        ip("link", "add", self.bridge, "type", "bridge")
        self.addCleanup(ip, "link", "delete", self.bridge)
        ip("addr", "add", f"{MAIN_ADDRESS}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        self.namespaces: list[str] = []
        for i in range(1, SATELLITES + 1):
            ns, inside, outside = f"rcp-s{i}-{tag}", f"i{i}{tag}", f"o{i}{tag}"
            ip("netns", "add", ns)
            self.addCleanup(ip, "netns", "delete", ns)
            ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            ip("link", "set", outside, "master", self.bridge, "up")
            ip("link", "set", inside, "netns", ns)
            ip("-n", ns, "addr", "add", f"{address(i)}/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            self.namespaces.append(ns)
        self.station = Path(self.mktemp())
        boards = [f"satellite-{i}" for i in range(1, SATELLITES + 1)]
        serials = {board: serial(i + 1) for i, board in enumerate(boards)}
        createStation(self.station, ["main", *boards], serials=serials)
        self.reports = Path(self.mktemp())
        self.reports.mkdir(parents=True)

    def config(self, board: str, text: str) -> str:
        path = Path(self.mktemp())
        path.write_text(
            f"tls:\n  ca: {self.station / 'ca.pem'}\n"
            f"  certificate: {self.station / (board + '.pem')}\n"
            f"  key: {self.station / (board + '.key')}\n" + text
        )
        return str(path)

    def agent(self, i: int) -> _Process:
        return _Process(
            self,
            "twistd", "-n", "--pidfile=", "-l", "-", "rcp-agent",
            "--config",
            self.config(
                f"satellite-{i}",
                f"discovery: {{advertise: true, serial: {serial(i)}, addresses: [{address(i)}]}}\n"
                f"sim: {{evse_id: {i}}}\nlink: {{hold_time: 0.5}}\n",
            ),
            "--listen", f"tcp:4129:interface={address(i)}",
            prefix=("ip", "netns", "exec", self.namespaces[i - 1]),
        )  # fmt: skip

    def mainBoard(self) -> real.Board:
        controllers = {
            f"sat_{i}": {
                "module": "SatelliteController",
                "standalone": True,
                "mapping": {"module": {"evse": i}},
                "config_module": {
                    "hostname": f"satellite-{i}",
                    "port": 4129,
                    "serial_number": serial(i),
                },
                "connections": {"auth": [{"module_id": "station", "implementation_id": "auth"}]},
            }
            for i in range(1, SATELLITES + 1)
        }
        station = {
            "module": "RcpTestStation",
            "connections": {
                requirement: [
                    {"module_id": f"sat_{i}", "implementation_id": requirement}
                    for i in range(1, SATELLITES + 1)
                ]
                for requirement in ("satellite", "evse_manager")
            },
        }
        return real.startBoard(
            self,
            {**controllers, "station": station},
            {"RcpTestStation": real.testModules("main")["RcpTestStation"]},
            env={"RCP_TEST_REPORT_DIR": str(self.reports)},
        )

    async def test_sixteenSatellitesOneController(self) -> None:
        agents = [self.agent(i) for i in range(1, SATELLITES + 1)]
        board = self.mainBoard()
        await board.manager.whenStatus("WAITING_FOR_STANDALONE_MODULES")
        # a short path: a Unix socket's name is at most 107 bytes
        run = tempfile.mkdtemp(prefix="rcp-")
        self.addCleanup(shutil.rmtree, run, True)
        socket = f"{run}/controller.sock"
        ids = ", ".join(f"sat_{i}" for i in range(1, SATELLITES + 1))
        controller = _twistd(
            self,
            "rcp-controller",
            "--config",
            self.config(
                "main",
                "everest: mqtt\n"
                f"mqtt: {{port: {board.broker.port}, prefix: everest, module_ids: [{ids}]}}\n"
                f"discovery: {{interfaces: [{MAIN_ADDRESS}], timeout: 60}}\n"
                f"link: {{hold_time: 0.5, retry_interval: 0.5}}\nstatus: {{socket: {socket}}}\n",
            ),
        )
        await board.manager.whenStatus("ALL_MODULES_STARTED")
        report = self.reports / "station.jsonl"
        await _waitFor(
            lambda: any(e["event"] == "done" for e in samples.readReport(str(report))), 60
        )
        events = samples.readReport(str(report))
        linked = {e["index"]: e for e in events if e["event"] == "satellite"}
        self.assertEqual(sorted(linked), list(range(SATELLITES)), events)
        for index, seen in linked.items():
            self.assertTrue(seen["connected"], seen)
            self.assertEqual(seen["remote"], address(index + 1))
        await _waitFor(
            lambda: (
                {e["index"] for e in samples.readReport(str(report)) if e["event"] == "var"}
                == set(range(SATELLITES))
            ),
            30,
        )
        # every satellite found by its serial number, all in this one process
        text = controller.text()
        for i in range(1, SATELLITES + 1):
            self.assertIn(f"board {serial(i)} (satellite-{i}) at {address(i)}:4129", text)
        self.assertEqual(text.count("link synchronised with the agent"), SATELLITES)
        # rcp status sees the whole station
        done = subprocess.run(
            [sys.executable, "-m", "rcp.cli", "status", "--json", socket],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        reports: list[dict[str, Any]] = json.loads(done.stdout)
        [status] = reports
        self.assertEqual(len(status["links"]), SATELLITES)
        self.assertTrue(all(link["state"] == "synchronised" for link in status["links"]))
        self.assertEqual(real.schemaProblems(board.manager.text()), [])
        for agent in agents:
            self.assertNotIn("Traceback", agent.text())
