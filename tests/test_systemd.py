"""
rcp's systemd units (etc/*.service, etc/rcp-unit-helper) under a real
systemd, as shipped and with their full hardening: only twistd is a
stand-in (a shell script that ends as told), and EVerest is a stand-in
everest.service.

The rule under test (README.rst, "systemd"): rcp ending by itself (exit 1,
exit 0, SIGKILL as from the OOM killer) restarts EVerest once, which starts
rcp again; a stop of rcp or of EVerest restarts nothing; a restart of
EVerest restarts rcp once; nothing loops.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from .common import ETC, ROOT
from .nspawn import Container, rootfs

#: /usr/bin/twistd in the container.  Records each start in
#: /var/lib/rcp/PLUGIN.starts (its StateDirectory=, the one place the
#: sandbox lets it write), then waits for PLUGIN.exit (the exit code to end
#: with).  PLUGIN.always makes every start end at once with that code;
#: PLUGIN.trap makes SIGTERM end it with exit 0, as twistd does without
#: rcp's own signal handling.
_TWISTD = r"""#!/bin/sh
plugin=$4
state=/var/lib/rcp
echo "$*" >> "$state/$plugin.starts"
if [ -e "$state/$plugin.always" ]; then exit "$(cat "$state/$plugin.always")"; fi
if [ -e "$state/$plugin.trap" ]; then trap 'exit 0' TERM; fi
while :; do
    if [ -e "$state/$plugin.exit" ]; then
        code=$(cat "$state/$plugin.exit"); rm -f "$state/$plugin.exit"; exit "$code"
    fi
    sleep 0.1
done
"""

_EVEREST_UNIT = """\
[Unit]
Description=stand-in EVerest manager
# no start limit of its own: the test counts rcp's
StartLimitIntervalSec=0
[Service]
ExecStartPre=/bin/sh -c 'echo start >> /var/log/everest.starts'
ExecStart=/bin/sleep infinity
"""

_EVEREST_CONFIG = """\
active_modules:
  agent:
    module: SatelliteAgent
  satellite_1:
    module: SatelliteController
"""

_SETUP = """\
set -e
install -D -m 0755 /srv/rcp/rcp-unit-helper /usr/libexec/rcp/rcp-unit-helper
install -D -m 0755 /srv/rcp/twistd /usr/bin/twistd
install -m 0644 /srv/rcp/units/* /etc/systemd/system/
mkdir -p /etc/rcp /etc/everest
cp /srv/rcp/config.yaml /etc/everest/config.yaml
touch /etc/rcp/rcp-agent.yaml /etc/rcp/rcp-controller-satellite-1.yaml
systemctl daemon-reload
"""

#: seconds the counts must stay put after a scenario settled: no loop
_QUIET = 3.0


class UnitTests(TestCase):
    timeout = 600

    def setUp(self) -> None:
        self.bind = Path(self.mktemp()).resolve()
        (self.bind / "units").mkdir(parents=True)
        for unit in ("rcp-agent.service", "rcp-controller@.service"):
            (self.bind / "units" / unit).write_text((ETC / unit).read_text())
        (self.bind / "units" / "everest.service").write_text(_EVEREST_UNIT)
        (self.bind / "rcp-unit-helper").write_text((ETC / "rcp-unit-helper").read_text())
        (self.bind / "twistd").write_text(_TWISTD)
        (self.bind / "config.yaml").write_text(_EVEREST_CONFIG)
        (self.bind / "setup.sh").write_text(_SETUP)

    def _boot(self, bindSame: tuple[Path, ...] = ()) -> Container:
        container = Container(rootfs(), self.bind, self.bind.parent / "console.log", bindSame)
        self.addCleanup(container.stop)
        container.run("sh", "/srv/rcp/setup.sh")
        return container

    def test_agent(self) -> object:
        return deferToThread(self._scenarios, "rcp-agent.service", "rcp-agent")

    def test_controller(self) -> object:
        unit = "rcp-controller@satellite-1.service"
        return deferToThread(self._scenarios, unit, "rcp-controller")

    def test_realRcp(self) -> object:
        """
        The real rcp agent (this checkout, this virtual environment) under
        the unit's full sandbox: it runs, a SIGKILL restarts EVerest and rcp,
        a stop restarts nothing.
        """
        return deferToThread(self._realRcp)

    def _realRcp(self) -> None:
        venv, base = Path(sys.prefix), Path(sys.base_prefix)
        if venv == base:
            raise SkipTest("needs a virtual environment")
        (self.bind / "twistd").unlink()
        (self.bind / "twistd").symlink_to(venv / "bin" / "twistd")
        # the container sees them at the same paths; its Debian 12 has the
        # libraries the interpreter links with
        c = self._boot(bindSame=tuple({venv, base, ROOT}))
        c.run(
            "sh", "-c", "printf 'everest: sim\\ntls:\\n  mode: plain\\n' > /etc/rcp/rcp-agent.yaml"
        )
        # rcp lives in /usr on a board; here in this checkout, maybe in a home
        # or under /tmp, which the sandbox hides: open just those for the test
        paths = (venv, base, ROOT)
        opened = []
        if any(p.is_relative_to(h) for p in paths for h in (Path("/root"), Path("/home"))):
            opened.append("ProtectHome=no")
        if any(p.is_relative_to(Path("/tmp")) or p.is_relative_to(Path("/var/tmp")) for p in paths):
            opened.append("PrivateTmp=no")
        if opened:
            c.run("mkdir", "-p", "/etc/systemd/system/rcp-agent.service.d")
            text = "\\n".join(["[Service]", *opened])
            c.run("sh", "-c", f"printf '{text}\\n'"
                  " > /etc/systemd/system/rcp-agent.service.d/checkout.conf")  # fmt: skip
            c.run("systemctl", "daemon-reload")
            # and the user rcp may pass /root and the checkout's folders
            c.run("chmod", "o+x", "/root")
            for p in paths:
                for parent in [p, *p.parents]:
                    if parent != Path("/"):
                        c.run("chmod", "o+x", str(parent), check=False)
        unit = "rcp-agent.service"
        checker = _Checker(self, c, unit, "rcp-agent")
        c.run("systemctl", "enable", unit)
        c.run("systemctl", "start", "everest.service")

        def journal() -> str:
            return c.run("journalctl", "--no-pager", "-u", unit).stdout

        try:
            checker.waitFor(lambda: "satellite: booted" in journal() or "Traceback" in journal())
        except AssertionError as e:
            raise AssertionError(f"{e}\n{journal()[-3000:]}") from None
        checker.expectQuiet("the real rcp runs", active=True)
        # its status socket, in the unit's runtime directory, answers rcp status
        checker.waitFor(
            lambda: c.run("test", "-S", "/run/rcp/rcp-agent.sock", check=False).returncode == 0
        )
        self.assertNotIn("Traceback", journal())
        self.assertNotIn("Unable to write to plugin cache", journal())
        pid = checker.mainPid()
        c.run("sh", "-c", f"kill -KILL {pid}")
        checker.waitFor(lambda: checker.show("MainPID") not in ("0", pid))
        everest = c.run("sh", "-c", "wc -l < /var/log/everest.starts").stdout.strip()
        self.assertEqual(everest, "2")
        checker.expectQuiet("the real rcp after SIGKILL", active=True)
        c.run("systemctl", "stop", unit)
        checker.expectQuiet("the real rcp stopped", active=False)
        everest = c.run("sh", "-c", "wc -l < /var/log/everest.starts").stdout.strip()
        self.assertEqual(everest, "2")
        self.assertNotIn("Traceback", journal())

    def _scenarios(self, unit: str, plugin: str) -> None:
        c = self._boot()
        verify = c.run("systemd-analyze", "verify", "--man=no", unit, check=False)
        self.assertEqual((verify.returncode, verify.stdout + verify.stderr), (0, ""))

        checker = _Checker(self, c, unit, plugin)
        c.run("systemctl", "enable", unit)
        c.run("systemctl", "start", "everest.service")
        checker.expect("first start", everest=1, rcp=1, active=True)

        for why, fileName, content in (
            ("exit 1", "exit", "1"),
            ("exit 0", "exit", "0"),
        ):
            checker.reset()
            c.run("sh", "-c", f"echo {content} > /var/lib/rcp/{plugin}.{fileName}")
            checker.expect(why, everest=1, rcp=1, active=True)

        checker.reset()
        c.run("sh", "-c", f"kill -KILL {checker.mainPid()}")
        checker.expect("SIGKILL", everest=1, rcp=1, active=True)

        checker.reset()
        c.run("systemctl", "stop", unit)
        checker.expect("systemctl stop rcp", everest=0, rcp=0, active=False)
        c.run("systemctl", "start", unit)
        checker.expect("systemctl start rcp", everest=0, rcp=1, active=True)

        # twistd without rcp's own SIGTERM handling exits 0 on a stop
        c.run("touch", f"/var/lib/rcp/{plugin}.trap")
        checker.reset()
        c.run("sh", "-c", f"kill -KILL {checker.mainPid()}")
        checker.expect("SIGKILL (trapping stand-in)", everest=1, rcp=1, active=True)
        checker.reset()
        c.run("systemctl", "stop", unit)
        checker.expect("systemctl stop rcp, which exits 0", everest=0, rcp=0, active=False)
        c.run("rm", f"/var/lib/rcp/{plugin}.trap")
        c.run("systemctl", "start", unit)
        checker.expect("systemctl start rcp", everest=0, rcp=1, active=True)

        checker.reset()
        c.run("sh", "-c", f"kill -TERM {checker.mainPid()}")
        checker.expect("SIGTERM by hand", everest=0, rcp=0, active=False)
        c.run("systemctl", "start", unit)
        checker.expect("systemctl start rcp", everest=0, rcp=1, active=True)

        checker.reset()
        c.run("systemctl", "stop", "everest.service")
        checker.expect("systemctl stop everest", everest=0, rcp=0, active=False)
        self.assertEqual(checker.state("everest.service"), "inactive")
        c.run("systemctl", "start", "everest.service")
        checker.expect("systemctl start everest", everest=1, rcp=1, active=True)

        checker.reset()
        c.run("systemctl", "restart", "everest.service")
        checker.expect("systemctl restart everest", everest=1, rcp=1, active=True)

        # rcp that ends at every start: at most 5 starts (StartLimitBurst=;
        # systemd may merge some), then it stays down and EVerest runs on
        checker.reset()
        c.run("sh", "-c", f"echo 1 > /var/lib/rcp/{plugin}.always")
        c.run("sh", "-c", f"echo 1 > /var/lib/rcp/{plugin}.exit")
        limit = "Start request repeated too quickly"
        checker.waitFor(lambda: limit in c.run("journalctl", "--no-pager", "-u", unit).stdout)
        everest, rcp = checker.expectQuiet("rcp ending at every start", active=False)
        self.assertEqual(everest, rcp + 1)
        self.assertIn(rcp, range(1, 6))
        self.assertEqual(checker.state("everest.service"), "active")
        c.run("rm", f"/var/lib/rcp/{plugin}.always")

        # a board whose EVerest config does not have the module
        checker.reset()
        module = "SatelliteAgent" if plugin == "rcp-agent" else "SatelliteController"
        c.run("sed", "-i", f"/module: {module}/d", "/etc/everest/config.yaml")
        c.run("systemctl", "restart", "everest.service")
        checker.expect("EVerest config without the module", everest=1, rcp=0, active=False)
        self.assertEqual(checker.show("Result"), "exec-condition")

        security = c.run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
        print(security.strip().splitlines()[-1])


class _Checker:
    """Counts starts of EVerest and rcp from the stand-ins' records."""

    def __init__(self, case: TestCase, c: Container, unit: str, plugin: str) -> None:
        self.case, self.c, self.unit, self.plugin = case, c, unit, plugin
        self.base = (0, 0)

    def counts(self) -> tuple[int, int]:
        out = self.c.run(
            "sh",
            "-c",
            "cat /var/log/everest.starts 2>/dev/null | wc -l;"
            f" cat /var/lib/rcp/{self.plugin}.starts 2>/dev/null | wc -l",
        ).stdout.split()
        return int(out[0]), int(out[1])

    def show(self, prop: str) -> str:
        return self.c.run("systemctl", "show", "-P", prop, self.unit).stdout.strip()

    def state(self, unit: str) -> str:
        return self.c.run("systemctl", "is-active", unit, check=False).stdout.strip()

    def mainPid(self) -> str:
        pid = self.show("MainPID")
        self.case.assertNotEqual(pid, "0")
        return pid

    def reset(self) -> None:
        # the start rate limits count per scenario; a unit left failed starts again
        self.c.run("systemctl", "reset-failed", self.unit, "everest.service", check=False)
        self.base = self.counts()

    def _settled(self) -> bool:
        jobs = self.c.run("systemctl", "list-jobs", "--no-legend", check=False).stdout.strip()
        state = self.state(self.unit)
        return not jobs and state not in ("activating", "deactivating", "reloading")

    def waitFor(self, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if condition() and self._settled():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.unit}: timed out")

    def expectQuiet(self, why: str, active: bool) -> tuple[int, int]:
        """After it settled: the counts stay put and rcp is (not) active."""
        before = self.counts()
        time.sleep(_QUIET)
        got = self.counts()
        state = self.state(self.unit)
        if got != before or (state == "active") != active:
            journal = self.c.run(
                "journalctl", "--no-pager", "-n", "60", "-u", self.unit, "-u", "everest.service",
                check=False,
            ).stdout  # fmt: skip
            raise AssertionError(f"{why}: {before} then {got}; {self.unit} is {state}\n{journal}")
        delta = (got[0] - self.base[0], got[1] - self.base[1])
        self.base = got
        return delta

    def expect(self, why: str, everest: int, rcp: int, active: bool) -> None:
        want = (self.base[0] + everest, self.base[1] + rcp)
        try:
            self.waitFor(lambda: self.counts() == want)
        except AssertionError:
            pass  # the assertion below says what went wrong
        self.case.assertEqual((*self.expectQuiet(why, active), active), (everest, rcp, active), why)
