"""
The simulated station's backend file server: what the CSMS names in OCPP's
UpdateFirmware (a firmware image to fetch) and GetDiagnostics/GetLog (a
location to upload to).  HTTP on loopback, with the bytes it served and the
files it received counted, so ``rcp demo`` can show that the image crossed
the backend link once and that one archive arrived.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request, Site

from .transfer import checkFileName


class _Image(Resource):
    isLeaf = True

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    def render_GET(self, request: Request) -> bytes:
        self.backend.fetches += 1
        self.backend.bytesServed += len(self.backend.image)
        request.setHeader(b"content-type", b"application/octet-stream")
        return self.backend.image


class _Upload(Resource):
    isLeaf = True

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    def render_PUT(self, request: Request) -> bytes:
        try:
            name = checkFileName(os.path.basename(request.path.decode("utf-8", "replace")))
        except ValueError:
            request.setResponseCode(400)
            return b"bad file name\n"
        target = self.backend.directory / name
        assert request.content is not None
        request.content.seek(0)
        with open(target, "wb") as out:
            while chunk := request.content.read(65536):
                out.write(chunk)
        self.backend.received.append(target)
        request.setResponseCode(201)
        return b""


class Backend:
    """
    @ivar image: the firmware image at L{imageUrl}.
    @ivar received: the files uploaded to L{uploadUrl}, in order.
    """

    def __init__(self, reactor: Any, directory: Path, image: bytes) -> None:
        self.reactor = reactor
        self.directory = directory
        self.image = image
        self.fetches = 0
        self.bytesServed = 0
        self.received: list[Path] = []
        self.port: IListeningPort | None = None
        root = Resource()
        root.putChild(b"firmware", _Image(self))
        root.putChild(b"upload", _Upload(self))
        root.putChild(b"", NoResource())
        self.site = Site(root)
        self.site.noisy = False

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")
        self.port = await endpoint.listen(self.site)

    def stop(self) -> Deferred[None] | None:
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    @property
    def base(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]

    @property
    def imageUrl(self) -> str:
        return f"{self.base}/firmware/station-firmware.bin"

    @property
    def uploadUrl(self) -> str:
        return f"{self.base}/upload/"
