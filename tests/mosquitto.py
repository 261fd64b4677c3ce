"""A real mosquitto broker on 127.0.0.1, for tests."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from twisted.trial.unittest import SynchronousTestCase

from .common import freePort, requireProgram

#: seconds a broker may take to accept connections
STARTUP_TIMEOUT = 10.0


class Mosquitto:
    """
    One mosquitto process listening on 127.0.0.1 only: anonymous access,
    no persistence, its log in C{directory}.

    @param port: the port; by default a free one.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.program = requireProgram("mosquitto")
        self.directory = directory
        self.port = port if port is not None else freePort()
        self.host = "127.0.0.1"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            raise RuntimeError("mosquitto runs already")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "log_type information\n"
            "connection_messages true\n"
        )
        self._log = open(self.directory / "mosquitto.log", "ab")
        self._process = subprocess.Popen(
            [self.program, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self._process.poll() is not None:
                log = (self.directory / "mosquitto.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"mosquitto exited at start:\n{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto does not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the broker (no goodbye to its clients) and wait for it."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def startBroker(case: SynchronousTestCase, port: int | None = None) -> Mosquitto:
    """A running broker for C{case}, killed in its cleanup."""
    broker = Mosquitto(Path(case.mktemp()), port)
    broker.start()
    case.addCleanup(broker.stop)
    return broker
