"""
L{Receivers}: the main board's receivers as the aggregator's policy uses
them (C{IReceivers} of C{rcp.aggregator.ports}, duck-typed here until that
module is on main).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..aggregator.ports import IDownloadGrant, IImageWriter, IReceivers, IUploadGrant
from .grants import Grant, GrantBook
from .store import Image, Store


@implementer(IUploadGrant)
class UploadGrant:
    """C{IUploadGrant}: one board's permission to upload its logs for one request."""

    def __init__(self, grant: Grant) -> None:
        self.grant = grant

    def urlFor(self, template: str, myIp: str) -> str:
        return self.grant.urlFor(template, myIp)

    def whenDone(self) -> Deferred[list[str]]:
        return self.grant.whenDone()

    def revoke(self) -> None:
        self.grant.revoke()


@implementer(IDownloadGrant)
class DownloadGrant:
    """C{IDownloadGrant}: one board's permission to download one image."""

    def __init__(self, grant: Grant, httpPort: int) -> None:
        self.grant = grant
        self.httpPort = httpPort

    def url(self, myIp: str) -> str:
        return self.grant.url(myIp, self.httpPort)

    def revoke(self) -> None:
        self.grant.revoke()

    def holdEnd(self, onHeld: Callable[[], None]) -> None:
        self.grant.holdEnd(onHeld)

    def release(self) -> None:
        self.grant.releaseEnd()


@implementer(IReceivers)
class Receivers:
    """C{IReceivers}: grants for uploads and downloads, and the firmware images."""

    def __init__(self, clock: IReactorTime, store: Store, httpPort: int) -> None:
        self.book = GrantBook(clock)
        self.store = store
        self.httpPort = httpPort
        self._images: dict[str, Image] = {}

    def image(self, key: str) -> Image | None:
        return self._images.get(key)

    def grantUpload(
        self, board: str, peerHost: str, requestId: int, deadline: float, maxBytes: int
    ) -> UploadGrant:
        return UploadGrant(self.book.grantUpload(board, peerHost, requestId, deadline, maxBytes))

    def newImage(self, name: str) -> Image:
        """C{IImageWriter}: append, finish, fail (and remove, to drop it from disk)."""
        image = self.store.newImage(name)
        self._images[image.path.name] = image
        return image

    def dropImage(self, image: Image) -> None:
        """Forget C{image} and remove its file (after the update)."""
        self._images.pop(image.path.name, None)
        image.remove()

    def grantDownload(
        self, board: str, peerHost: str, image: IImageWriter, requestId: int, deadline: float
    ) -> DownloadGrant:
        if not isinstance(image, Image):
            raise TypeError("an image of these receivers' own (newImage)")
        grant = self.book.grantDownload(board, peerHost, image.path.name, requestId, deadline)
        grant.imageName = image.name
        return DownloadGrant(grant, self.httpPort)
