"""Helpers shared by the tests."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rcp.certs import createStation

ROOT = Path(__file__).resolve().parent.parent
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


def freePort() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
