"""
A real systemd for the tests: a minimal Debian 12 booted with
C{systemd-nspawn -b} as PID 1 of a container.

This machine's own PID 1 is not systemd, so nspawn runs with
C{--keep-unit --register=no} (without them it fails with "Failed to open
system bus"), and commands go in with C{nsenter -t <container PID 1> -a}.
The root file system is made once with mmdebstrap (about 20 s) and kept
under L{CACHE}, keyed by a hash of what goes into it; every boot runs on a
throw-away overlay (C{--volatile=overlay}), so the cached tree stays clean.

Everything here blocks: call it from a thread (deferToThread).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest

from .common import requireProgram

CACHE = Path("/var/cache/rcp-test")
SUITE = "bookworm"
#: python3: Debian 12's, the interpreter of this suite's virtual
#: environment, so that the real rcp can run in the container too
PACKAGES = ("systemd-sysv", "dbus", "python3")
#: the unit's user, as meta-rcp's recipe makes it
HOOKS = (
    'chroot "$1" useradd --system --user-group --no-create-home'
    " --home-dir /nonexistent --shell /usr/sbin/nologin rcp",
)
#: the host's own apt sources, if it has them (mmdebstrap's default otherwise)
_HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def rootfs() -> Path:
    """The cached Debian 12 root file system, made first if missing."""
    if os.geteuid() != 0:
        raise SkipTest("systemd-nspawn needs root")
    requireProgram("mmdebstrap")
    key = hashlib.sha256(repr((SUITE, PACKAGES, HOOKS)).encode()).hexdigest()[:16]
    target = CACHE / f"rootfs-{key}"
    if (target / "sbin" / "init").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f"building-{key}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    argv = [
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        *(f"--customize-hook={hook}" for hook in HOOKS),
        SUITE,
        str(building),
    ]
    if _HOST_SOURCES.exists():
        argv.append(str(_HOST_SOURCES))
    result = _run(argv, timeout=600)
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise AssertionError(
            f"mmdebstrap failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    try:
        building.rename(target)
    except OSError:  # made meanwhile by another run
        shutil.rmtree(building, ignore_errors=True)
    return target


class Container:
    """One booted container; L{stop} it (addCleanup) when done."""

    def __init__(self, root: Path, bind: Path, log: Path, bindSame: tuple[Path, ...] = ()) -> None:
        requireProgram("systemd-nspawn")
        requireProgram("nsenter")
        self._log = log.open("w")
        self._cgroups = _ownCgroups(f"rcp-test-{os.getpid()}-{id(self) % 100000}")
        self._nspawn = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                "--boot",
                "--keep-unit",
                "--register=no",
                "--volatile=overlay",
                "--private-network",
                f"--machine=rcp-test-{os.getpid()}-{id(self) % 100000}",
                f"--directory={root}",
                f"--bind-ro={bind}:/srv/rcp",
                *(f"--bind-ro={p}" for p in bindSame),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _enter(self._cgroups),
        )
        self.logPath = log
        self.pid = self._findInit()
        self._waitBooted()

    def _findInit(self) -> int:
        """The container's PID 1: the systemd below nspawn."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn ended:\n{self.logPath.read_text()[-3000:]}")
            for pid in _descendants(self._nspawn.pid):
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                if comm == "systemd":
                    return pid
            time.sleep(0.1)
        raise AssertionError("the container's systemd did not start")

    def _waitBooted(self) -> None:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise AssertionError(f"the container did not finish booting ({state!r})")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run C{argv} inside the container (all its namespaces)."""
        result = _run(["nsenter", "-t", str(self.pid), "-a", *argv], timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def stop(self) -> None:
        if self._nspawn.poll() is None:
            self.run("systemctl", "poweroff", check=False)
            try:
                self._nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait()
        self._log.close()
        for cgroup in self._cgroups:
            _removeTree(cgroup)


#: the cgroup hierarchies nspawn and the container's systemd use here
_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def _ownCgroups(name: str) -> list[Path]:
    """
    A cgroup of its own for each container.  With --keep-unit, nspawn boots
    the container in the cgroup it was started in; when that is the root
    (no systemd on this machine), two containers would share one tree and
    kill each other's services.
    """
    made = []
    for hierarchy in _HIERARCHIES:
        if (hierarchy / "cgroup.procs").exists():
            (hierarchy / name).mkdir(exist_ok=True)
            made.append(hierarchy / name)
    return made


def _enter(cgroups: list[Path]) -> None:
    # in the child, between fork and exec
    for cgroup in cgroups:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))


def _removeTree(cgroup: Path) -> None:
    for sub in sorted((p for p in cgroup.rglob("*") if p.is_dir()), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        cgroup.rmdir()
    except OSError:
        pass


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                todo.append(child)
    return found
