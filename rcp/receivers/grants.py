"""
One-time grants: every request to a board gets its own unguessable
credential, valid for that board's address, one purpose, a maximum size
and until a deadline on the injected clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..logtext import cut

Purpose = Literal["upload", "download"]

#: how much of a peer's credential a log line shows
_SHOWN = 8


class Refused(Exception):
    """A credential was not accepted; C{reason} says why (already logged)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hostForUrl(host: str) -> str:
    """C{host} as it goes in a URL (IPv6 addresses in brackets)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def normalHost(host: str) -> str:
    """A peer address as the transports report it (IPv4-mapped IPv6 unwrapped)."""
    if host.startswith("::ffff:") and "." in host:
        return host[len("::ffff:") :]
    return host


@dataclass(eq=False)
class Grant:
    """One credential and what it allows."""

    book: GrantBook
    token: str
    board: str
    peerHost: str
    purpose: Purpose
    requestId: int
    maxBytes: int
    deadline: float
    #: the image a download grant is for
    image: str = ""
    #: the name the download URL shows
    imageName: str = ""
    #: "open", then "active" while an upload session runs, then "ended"
    state: str = "open"
    endReason: str = ""
    #: paths of the files completely received under an upload grant
    files: list[str] = field(default_factory=list)
    #: bytes received under an upload grant, complete files and running ones
    received: int = 0
    sessions: int = 0
    #: called when the grant ends (running sessions abort on expiry or revoke)
    onEnd: list[Callable[[], None]] = field(default_factory=list)
    #: a download grant whose downloads stop before the image's last byte
    #: until L{releaseEnd} (L{holdEnd})
    holdsEnd: bool = False
    endReleased: bool = False
    onHeld: Callable[[], None] | None = None
    heldReported: bool = False
    _waiting: list[Deferred[list[str]]] = field(default_factory=list)
    _releaseWaiting: list[Deferred[bool]] = field(default_factory=list)
    _expiry: IDelayedCall | None = None

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    def remaining(self) -> int:
        return max(0, self.maxBytes - self.received)

    def whenDone(self) -> Deferred[list[str]]:
        """Fires with the complete files' paths once the grant ended."""
        d: Deferred[list[str]] = Deferred()
        if self.ended:
            d.callback(list(self.files))
        else:
            self._waiting.append(d)
        return d

    def revoke(self) -> None:
        """End the grant now; later requests with it are refused."""
        self.book.end(self, "revoked")

    # -- a download held before the image's last byte -----------------------

    def holdEnd(self, onHeld: Callable[[], None]) -> None:
        """Hold downloads before the last byte until L{releaseEnd}; C{onHeld()} once held."""
        self.holdsEnd = True
        self.onHeld = onHeld

    @property
    def holding(self) -> bool:
        """Whether this grant's downloads stop before the image's last byte now."""
        return self.holdsEnd and not self.endReleased and not self.ended

    def releaseEnd(self) -> None:
        """Held downloads go on to the end; later ones are not held."""
        if self.endReleased:
            return
        self.endReleased = True
        self._wakeHeld(True)

    def whenReleased(self) -> Deferred[bool]:
        """Fires with True at L{releaseEnd}, with False if the grant ends first."""
        d: Deferred[bool] = Deferred()
        if self.endReleased or self.ended:
            d.callback(self.endReleased)
        else:
            self._releaseWaiting.append(d)
        return d

    def reachedEnd(self) -> None:
        """A download of this grant has every byte but the held one: tell (once)."""
        if self.heldReported or not self.holding:
            return
        self.heldReported = True
        self.book.log.info("{grant}: held before the last byte", grant=self.describe())
        if self.onHeld is not None:
            try:
                self.onHeld()
            except Exception:
                self.book.log.failure("reporting {grant} held", grant=self.describe())

    def _wakeHeld(self, released: bool) -> None:
        waiting, self._releaseWaiting = self._releaseWaiting, []
        for d in waiting:
            d.callback(released)

    def urlFor(self, template: str, myIp: str) -> str:
        """
        C{template} (upstream's C{upload_url_template}: C{{my-ip}} or
        C{<my-ip>} stands for the address) with C{myIp} and this grant's
        credential: FTP gets C{BOARD:TOKEN@} as user and password, HTTP the
        path C{/u/TOKEN/}.
        """
        host = hostForUrl(myIp)
        text = template.replace("{my-ip}", host).replace("<my-ip>", host)
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        netloc = parts.netloc.rpartition("@")[2]
        if scheme in ("ftp", "ftps"):
            user = quote(self.board, safe="")
            path = parts.path or "/"
            return f"{scheme}://{user}:{self.token}@{netloc}{path}"
        if scheme in ("http", "https"):
            return f"{scheme}://{netloc}/u/{self.token}/"
        raise ValueError(f"upload_url_template {cut(template)!r}: not an ftp or http URL")

    def ftpUrl(self, host: str, port: int) -> str:
        return f"ftp://{quote(self.board, safe='')}:{self.token}@{hostForUrl(host)}:{port}/"

    def httpUploadUrl(self, host: str, port: int) -> str:
        return f"http://{hostForUrl(host)}:{port}/u/{self.token}/"

    def url(self, host: str, port: int) -> str:
        """Where a download grant's image is fetched from."""
        name = quote(self.imageName or self.image, safe="")
        return f"http://{hostForUrl(host)}:{port}/fw/{self.token}/{name}"

    def describe(self) -> str:
        return (
            f"{self.purpose} grant {self.token[:_SHOWN]}… of board {cut(self.board)!r}"
            f" request {self.requestId}"
        )


class GrantBook:
    """Issues grants and checks the credentials peers present."""

    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._grants: dict[str, Grant] = {}
        self._forget: dict[str, IDelayedCall] = {}

    def _issue(self, grant: Grant) -> Grant:
        self._grants[grant.token] = grant
        delay = max(0.0, grant.deadline - self.clock.seconds())
        grant._expiry = self.clock.callLater(delay, self.end, grant, "expired")
        return grant

    def grantUpload(
        self, board: str, peerHost: str, requestId: int, deadline: float, maxBytes: int
    ) -> Grant:
        return self._issue(
            Grant(
                self,
                secrets.token_urlsafe(24),
                board,
                normalHost(peerHost),
                "upload",
                requestId,
                maxBytes,
                deadline,
            )
        )

    def grantDownload(
        self, board: str, peerHost: str, image: str, requestId: int, deadline: float
    ) -> Grant:
        return self._issue(
            Grant(
                self,
                secrets.token_urlsafe(24),
                board,
                normalHost(peerHost),
                "download",
                requestId,
                0,
                deadline,
                image=image,
            )
        )

    def refuse(self, protocol: str, peerHost: str, reason: str) -> Refused:
        self.log.warn(
            "{protocol} receiver: refused {peer}: {reason}",
            protocol=protocol,
            peer=cut(peerHost),
            reason=cut(reason, 200),
        )
        return Refused(reason)

    def check(
        self, protocol: str, token: str, peerHost: str, purpose: Purpose, board: str | None = None
    ) -> Grant:
        """
        The grant C{token} names, if a peer at C{peerHost} may use it for
        C{purpose} now; otherwise L{Refused} (after one log line).
        """
        peerHost = normalHost(peerHost)
        grant = self._grants.get(token)
        shown = cut(token, _SHOWN)
        if grant is None:
            raise self.refuse(protocol, peerHost, f"unknown credential {shown!r}")
        if grant.ended:
            raise self.refuse(protocol, peerHost, f"{grant.describe()} {grant.endReason}")
        if self.clock.seconds() >= grant.deadline:
            self.end(grant, "expired")
            raise self.refuse(protocol, peerHost, f"{grant.describe()} expired")
        if grant.purpose != purpose:
            raise self.refuse(protocol, peerHost, f"{grant.describe()} is not for {purpose}")
        if board is not None and board != grant.board:
            raise self.refuse(
                protocol, peerHost, f"{grant.describe()} presented as board {cut(board)!r}"
            )
        if peerHost != grant.peerHost:
            raise self.refuse(
                protocol, peerHost, f"{grant.describe()} is for {grant.peerHost}, not this address"
            )
        if grant.purpose == "upload" and grant.state == "active":
            raise self.refuse(
                protocol, peerHost, f"{grant.describe()} is in use by another session"
            )
        return grant

    def begin(self, grant: Grant) -> None:
        """An upload session with C{grant} started."""
        grant.state = "active"
        grant.sessions += 1

    def reopen(self, grant: Grant) -> None:
        """An upload session failed before it completed: the grant may be tried again."""
        if grant.state == "active":
            grant.state = "open"

    def finishSession(self, grant: Grant) -> None:
        """The upload session ended: the grant is used."""
        if grant.state == "active":
            self.end(grant, "used")

    def end(self, grant: Grant, reason: str) -> None:
        if grant.ended:
            return
        grant.state = "ended"
        grant.endReason = reason
        if grant._expiry is not None and grant._expiry.active():
            grant._expiry.cancel()
        grant._expiry = None
        self.log.info("{grant} ended: {reason}", grant=grant.describe(), reason=reason)
        callbacks, grant.onEnd = grant.onEnd, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                self.log.failure("ending a session of {grant}", grant=grant.describe())
        waiting, grant._waiting = grant._waiting, []
        for d in waiting:
            d.callback(list(grant.files))
        grant._wakeHeld(grant.endReleased)
        # Keep ended grants so that a replay is refused as used, not unknown;
        # forget them after a while so the book does not grow forever.
        self._forget[grant.token] = self.clock.callLater(3600, self._dropped, grant.token)

    def _dropped(self, token: str) -> None:
        self._grants.pop(token, None)
        self._forget.pop(token, None)

    def stop(self) -> None:
        """Cancel every timer (the service stops): open grants end as revoked."""
        for grant in list(self._grants.values()):
            self.end(grant, "revoked")
        for call in self._forget.values():
            if call.active():
                call.cancel()
        self._forget.clear()
        self._grants.clear()
