"""Service-tree pieces shared by the agent and the controller."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger

from . import tls
from .rpc.guard import GuardFactory, GuardLimits
from .tls import Credentials
from .trim import Trimmer

#: file descriptors kept free of unauthenticated connections: the listening
#: socket, the controller's link, the broker, logs, Twisted's EMFILE reserve
FILE_HEADROOM = 32

log = Logger()


def secureServerFactory(
    factory: IProtocolFactory, credentials: Credentials | None
) -> IProtocolFactory:
    """C{factory} behind mutual TLS, or as it is for a plain link."""
    if credentials is None:
        return factory
    return tls.serverFactory(credentials, factory)


def guardedServerFactory(
    factory: IProtocolFactory,
    credentials: Credentials | None,
    limits: GuardLimits,
    clock: Any,
    role: str,
) -> GuardFactory:
    """
    C{factory} behind TLS (unless plain), with the limits for connections
    before their first request outside it (see L{rcp.rpc.guard}).  The cap
    on unauthenticated connections is fitted to the open-file limit.
    """
    trimmer = Trimmer(clock)
    return GuardFactory(
        clock,
        secureServerFactory(factory, credentials),
        fitToFileLimit(limits, role),
        tls=credentials is not None,
        role=role,
        released=trimmer.released,
        stopped=trimmer.stop,
    )


def fitToFileLimit(limits: GuardLimits, role: str) -> GuardLimits:
    """
    Raise the soft limit on open files to the hard one, and keep the cap on
    unauthenticated connections below it: at the limit, accept() fails and
    the controller could not get in.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError):
        return limits
    if soft == resource.RLIM_INFINITY:
        return limits
    room = max(1, soft - FILE_HEADROOM)
    if limits.maxUnauthenticated <= room:
        return limits
    log.warn(
        "{role}: guard.max_unauthenticated lowered from {cap} to {room}: the open-file limit"
        " is {limit} (LimitNOFILE= in the unit)",
        role=role,
        cap=limits.maxUnauthenticated,
        room=room,
        limit=soft,
    )
    return replace(limits, maxUnauthenticated=room)


def secureClientEndpoint(
    endpoint: IStreamClientEndpoint, credentials: Credentials | None, peerName: str | None
) -> IStreamClientEndpoint:
    """C{endpoint} behind mutual TLS, or as it is for a plain link."""
    if credentials is None:
        return endpoint
    assert peerName is not None
    return tls.clientEndpoint(credentials, peerName, endpoint)


def stoppedBySignal(reactor: Any) -> int | None:
    """
    The signal (SIGTERM, SIGINT) that is stopping C{reactor}, if one is.

    twistd ends the process by that same signal once the reactor has
    stopped, which systemd reads as a stop, not as the process ending by
    itself.
    """
    # The reactor's own record, the one twistd itself reads.
    number = getattr(reactor, "_exitSignal", None)
    return number if isinstance(number, int) else None


def exitProcess(
    reactor: Any, exit: Callable[[int], object] = os._exit
) -> Callable[[int, str], None]:
    """
    End the process with C{code} after a clean shutdown of the service tree:
    systemd restarts the station into a fresh common start.

    A stop by signal wins, in every phase: when SIGTERM or SIGINT stops the
    reactor before the process exits, it exits by that signal (twistd sees
    to it), whatever code it was about to end with.
    """
    codes: list[int] = []

    def exitUnlessStopped() -> None:
        if stoppedBySignal(reactor) is None:
            exit(codes[0])

    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # stopping already

    def end(code: int, reason: str) -> None:
        if codes:
            return  # ending already: the first code stands
        codes.append(code)
        reactor.addSystemEventTrigger("after", "shutdown", exitUnlessStopped)
        reactor.callLater(0, stop)

    return end


class ListeningService(StreamServerEndpointService):
    """
    Listens on an endpoint string; a port that cannot be bound ends the
    start-up with one line instead of a traceback (like
    C{strports.service}, which also refuses to run without its port).
    """

    _raiseSynchronously = True

    def __init__(self, role: str, description: str, factory: IProtocolFactory, reactor: Any):
        super().__init__(serverFromString(reactor, description), factory)
        self.role = role
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"{self.role}: cannot listen on {self.description}: {e.socketError}"
            ) from None


class SecurityNotice(Service):
    """Says at start-up how the link is protected, loudly when it is not."""

    log = Logger()

    def __init__(
        self, role: str, credentials: Credentials | None, peerName: str | None = None
    ) -> None:
        self.role = role
        self.credentials = credentials
        self.peerName = peerName

    def startService(self) -> None:
        super().startService()
        if self.credentials is None:
            self.log.warn(
                "{role}: link is plain TCP: UNAUTHENTICATED and UNENCRYPTED; anyone who"
                " can reach the port can control this board (tls.mode: plain)",
                role=self.role,
            )
            return
        if self.peerName is None:
            self.log.info(
                "{role}: mutual TLS as {name}; clients must present a certificate"
                " of the station CA",
                role=self.role,
                name=self.credentials.name,
            )
        else:
            self.log.info(
                "{role}: mutual TLS as {name}; the agent must present the station"
                " CA's certificate for {peer}",
                role=self.role,
                name=self.credentials.name,
                peer=self.peerName,
            )
        if not self.credentials.keyIsPrivate:
            self.log.warn(
                "{role}: the private key file can be read by other users; chmod 600 it",
                role=self.role,
            )
