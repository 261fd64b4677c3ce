"""Helpers shared by the tests."""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rcp.certs import createStation

ROOT = Path(__file__).resolve().parent.parent

#: the session events of a charging session with a pause, a resume and a
#: remote stop, then an unplug, in order
FULL_SESSION = [
    "SessionStarted",
    "AuthRequired",
    "Authorized",
    "TransactionStarted",
    "PrepareCharging",
    "ChargingStarted",
    "ChargingPausedEVSE",
    "ChargingStarted",
    "StoppingCharging",
    "TransactionFinished",
    "SessionFinished",
]
ETC = ROOT / "etc"


def makeStation(
    case: SynchronousTestCase, boards: tuple[str, ...] = ("main", "satellite-1", "satellite-2")
) -> Path:
    """A fresh station CA with certificates for C{boards}, in a temporary directory."""
    directory = Path(case.mktemp())
    createStation(directory, boards)
    return directory


def requireProgram(name: str) -> str:
    """
    The path of a program the test needs; skip without it, except under CI
    (CI=true), where a missing program is an installation bug and fails.
    """
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError(f"{name} is not installed (tools/run-tests installs it)")
        raise SkipTest(f"{name} is not installed")
    return path


def _ephemeralRange() -> range:
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago, for a server that is
    started later (a broker, a twistd process).

    It is drawn from outside the kernel's ephemeral range: a port from that
    range can be taken in the meantime as the local end of any outgoing
    connection of a test running in parallel.
    """
    ephemeral = _ephemeralRange()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral]
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found outside the ephemeral range")
