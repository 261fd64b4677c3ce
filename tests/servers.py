"""
Real servers written by others, started by the tests on loopback: nginx
(HTTP and HTTPS, with PUT from its dav module, and Range on GET) and
pyftpdlib (FTP, passive mode, one user).  Each runs in a folder of its own
and stops in the test's cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from rcp.certs import createStation

from .common import freePort, requireProgram

_FTP_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
port, root, user, password = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elradfmw")
handler = FTPHandler
handler.authorizer = authorizer
handler.passive_ports = range(int(sys.argv[5]), int(sys.argv[5]) + 20)
server = FTPServer(("127.0.0.1", int(port)), handler)
print("ready", flush=True)
server.serve_forever()
"""


def _waitForPort(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} ended at start (status {process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} does not listen on {port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Nginx:
    root: Path
    http: int
    https: int
    ca: Path

    def url(self, path: str, tls: bool = False) -> str:
        if tls:
            return f"https://localhost:{self.https}/{path}"
        return f"http://127.0.0.1:{self.http}/{path}"


def startNginx(case: TestCase) -> Nginx:
    nginx = requireProgram("nginx")
    base = Path(case.mktemp()).resolve()
    root = base / "www"
    root.mkdir(parents=True)
    pki = base / "pki"
    createStation(pki, ["localhost"])
    http, https = freePort(), freePort()
    config = base / "nginx.conf"
    temp = " ".join(
        f"{kind}_temp_path {base / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    location = (
        f"root {root}; location / {{ dav_methods PUT; create_full_put_path on;"
        " client_max_body_size 0; }"
    )
    config.write_text(
        f"daemon off; user root; worker_processes 1; pid {base / 'nginx.pid'};"
        f" error_log {base / 'error.log'} warn; events {{}}\n"
        f"http {{ access_log off; {temp}\n"
        f"  server {{ listen 127.0.0.1:{http}; {location} }}\n"
        f"  server {{ listen 127.0.0.1:{https} ssl; server_name localhost;"
        f" ssl_certificate {pki / 'localhost.pem'}; ssl_certificate_key {pki / 'localhost.key'};"
        f" {location} }}\n}}\n"
    )
    process = subprocess.Popen([nginx, "-c", str(config), "-p", str(base)])
    case.addCleanup(_stop, process)
    _waitForPort(http, process, "nginx")
    _waitForPort(https, process, "nginx")
    return Nginx(root, http, https, pki / "ca.pem")


@dataclass
class Ftpd:
    root: Path
    port: int
    user: str
    password: str

    def url(self, path: str = "") -> str:
        return f"ftp://{self.user}:{self.password}@127.0.0.1:{self.port}/{path}"


def startFtpd(case: TestCase) -> Ftpd:
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise AssertionError("pyftpdlib is not installed (the dev extras have it)") from None
        raise SkipTest("pyftpdlib is not installed") from None
    root = Path(case.mktemp()).resolve()
    root.mkdir(parents=True)
    port, passive = freePort(), freePort()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _FTP_SERVER,
            str(port),
            str(root),
            "backend",
            "s3cret",
            str(passive),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    case.addCleanup(_stop, process)
    _waitForPort(port, process, "pyftpdlib")
    return Ftpd(root, port, "backend", "s3cret")
