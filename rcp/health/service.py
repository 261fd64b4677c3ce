"""
The local status endpoint of an rcp process: HTTP on a Unix socket (no
network exposure), and optionally the same on a TCP endpoint for
Prometheus.

  - C{GET /status}: the process's report as JSON (what C{rcp status} reads);
  - C{GET /metrics}: the same figures in Prometheus' text format.

A socket that cannot be made (no permission for its directory, say) is one
error line: the process runs on without its status endpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from .process import ProcessHealth, prometheusText


class _Status(Resource):
    isLeaf = True

    def __init__(self, health: ProcessHealth) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self.health.document(), indent=1).encode() + b"\n"


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, health: ProcessHealth) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return prometheusText(self.health.document()).encode()


def statusSite(health: ProcessHealth) -> Site:
    root = Resource()
    root.putChild(b"status", _Status(health))
    root.putChild(b"metrics", _Metrics(health))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


class StatusService(Service):
    """
    @param socket: the Unix socket's path; L{None}: none.
    @param prometheus: a server endpoint string for C{/metrics} (and
        C{/status}) over TCP; L{None}: off.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, health: ProcessHealth, socket: str | None, prometheus: str | None
    ) -> None:
        self.reactor = reactor
        self.health = health
        self.socket = socket
        self.prometheus = prometheus
        self.ports: list[IListeningPort] = []

    def startService(self) -> None:
        super().startService()
        site = statusSite(self.health)
        if self.socket is not None:
            try:
                Path(self.socket).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            except OSError as e:
                self.log.error(
                    "status: no status socket {path}: {problem}",
                    path=self.socket,
                    problem=e.strerror,
                )
            else:
                escaped = self.socket.replace("\\", "\\\\").replace(":", "\\:")
                self._listen(f"unix:{escaped}:mode=660:lockfile=1", site, self.socket)
        if self.prometheus is not None:
            self._listen(self.prometheus, site, self.prometheus)

    def _listen(self, description: str, site: Site, shown: str) -> None:
        d = serverFromString(self.reactor, description).listen(site)

        def listening(port: IListeningPort) -> None:
            self.ports.append(port)
            self.log.info("status: serving /status and /metrics on {where}", where=shown)

        def failed(failure: Failure) -> None:
            self.log.error(
                "status: cannot listen on {where}: {problem}",
                where=shown,
                problem=failure.getErrorMessage(),
            )

        d.addCallbacks(listening, failed)

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        ports, self.ports = self.ports, []
        stops = [d for d in (port.stopListening() for port in ports) if d is not None]
        if self.socket is not None and os.path.exists(self.socket):
            try:
                os.unlink(self.socket)
            except OSError:
                pass
        return DeferredList(stops) if stops else None


def processStatus(
    reactor: Any, role: str, board: str, settings: Any, configFile: str | None
) -> tuple[ProcessHealth, StatusService]:
    """
    A process's figures and the service that serves them.

    @param settings: the process's settings (their C{versions} and C{status}).
    """
    from .versions import localVersions

    versions = localVersions(board, settings.versions.firmware, settings.versions.everest, 0.0)
    health = ProcessHealth(reactor, role, versions)
    status = StatusService(
        reactor, health, settings.status.socketPath(configFile, role), settings.status.prometheus
    )
    status.setName("status")
    return health, status
