"""
What the aggregator's policy needs from outside, as interfaces: the
receivers on the main board (one-time grants for uploads and downloads,
the firmware image store) and the transfers to and from the backend.

The policy only talks to these; the real receivers (L{rcp.receivers}) and
transfers (L{rcp.transfer}) are adapted to them, and tests use fakes.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import Interface


class IUploadGrant(Interface):
    """One board's permission to upload its log files for one request."""

    def urlFor(template: str, myIp: str) -> str:
        """
        The location the board uploads to: C{template} (upstream's
        C{upload_url_template}, C{{my-ip}} or C{<my-ip>} for the address)
        with C{myIp} and this grant's credential filled in.
        """

    def whenDone() -> Deferred[list[str]]:
        """
        Fires once the grant ended (L{revoke} or its deadline) with the
        paths of the files completely received under it; partial files are
        not listed (the receiver removes them).
        """

    def revoke() -> None:
        """End the grant now: later uploads with it are refused."""


class IImageWriter(Interface):
    """A firmware image on the main board while it is fetched from the backend."""

    def append(data: bytes) -> None:
        """Add C{data} to the image (boards already downloading receive it as it comes)."""

    def finish() -> None:
        """The image is complete."""

    def fail(reason: str) -> None:
        """The image cannot be completed: downloads of it fail, the bytes are dropped."""

    def throttles(source: IPushProducer | None) -> None:
        """Pause C{source} (the fetch) while the image's writes fall behind."""


class IDownloadGrant(Interface):
    """One board's permission to download one image for one request."""

    def url(myIp: str) -> str:
        """The location the board downloads the image from (main board at C{myIp})."""

    def revoke() -> None:
        """End the grant now (a download held by L{holdEnd} fails)."""

    def holdEnd(onHeld: Callable[[], None]) -> None:
        """
        Serve this board's downloads of the whole image (a plain GET, or
        an open-ended range as C{curl -C -} sends) up to the image's last
        byte only, until L{release}: the board cannot finish, so it cannot
        install.  C{onHeld()} is called once, when the image is complete
        and the board has received (acknowledged) every byte but the last.
        Called before the URL is handed out.
        """

    def release() -> None:
        """Serve the rest: held downloads finish, later ones are not held."""


class IReceivers(Interface):
    """The main board's FTP and HTTP receivers, as the policy uses them."""

    def grantUpload(
        board: str, peerHost: str, requestId: int, deadline: float, maxBytes: int
    ) -> IUploadGrant:
        """
        A one-time upload grant for C{board} connecting from C{peerHost},
        for C{requestId}, until C{deadline} (the clock's seconds), at most
        C{maxBytes} in all.
        """

    def newImage(name: str) -> IImageWriter:
        """Start a firmware image called C{name} (one safe file name)."""

    def grantDownload(
        board: str, peerHost: str, image: IImageWriter, requestId: int, deadline: float
    ) -> IDownloadGrant:
        """A one-time download grant of C{image} for C{board} at C{peerHost}."""


class ITransfers(Interface):
    """Transfers between the main board and the backend (outside the station)."""

    def fetch(url: str, into: IImageWriter, retries: int, retryInterval: float) -> Deferred[int]:
        """
        Download C{url} into C{into}, trying up to C{retries} times with
        C{retryInterval} seconds between attempts; C{into} is finished on
        success and failed after the last attempt.

        @return: fires with the number of bytes fetched, or fails with the
            last attempt's error.
        """

    def upload(path: str, url: str, retries: int, retryInterval: float) -> Deferred[None]:
        """
        Upload the local file C{path} to C{url} (ftp, ftps, http or https
        PUT, as C{curl -T} does: a URL ending in C{/} gets the file's name),
        trying up to C{retries} times with C{retryInterval} seconds between.
        """
