"""
``everest: mqtt`` on a satellite: the agent is the standalone module
SatelliteAgent of the board's real EVerest.

Start-up, in EVerest's order: connect to the broker, get the module's
configuration, make sure the station is not running already (see
L{rcp.everest.mqtt.standalone}), build the link, listen.  ModuleReady goes
out only when the link is synchronised with the controller (the link
signals ready then).  A reset of the board asks the board's System for a
soft reset (when one is connected) and ends this process; a lost broker
ends it too: systemd starts it again, into a fresh common start.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..everest.mqtt import MqttModule
from ..everest.mqtt.standalone import StandaloneProcess
from ..health.process import ProcessHealth
from ..health.versions import helloFrom
from ..service import ListeningService, guardedServerFactory
from ..settings import DEFAULT_AGENT_PORT, AgentSettings, endpointPort
from ..tls import Credentials
from ..tunnel.table import PUSH_CHANNELS
from .link import AgentLink

#: the implementations of SatelliteAgent (its manifest) and their interfaces
PROVIDES: Final = {push.name: push.interface for push in PUSH_CHANNELS}

#: seconds the board's System may take to answer a reset before rcp ends anyway
RESET_ANSWER_TIMEOUT: Final = 10.0


def listenPort(config: Mapping[str, Any]) -> int:
    """
    The port of the module config C{port}.

    @raise ValueError: it is not a port number.
    """
    port = config.get("port", DEFAULT_AGENT_PORT)
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"the module config port is {port!r}, not a port number")
    return port


class MqttSatellite(StandaloneProcess):
    """
    The SatelliteAgent module and its link, once started.

    @param end: ends the process with an exit code and a reason.
    @param environ: the environment (for the broker address EVerest uses).
    """

    log = Logger()
    role = "rcp-agent"

    def __init__(
        self,
        reactor: Any,
        settings: AgentSettings,
        credentials: Credentials | None,
        end: Callable[[int, str], None],
        environ: Mapping[str, str] = os.environ,
        health: ProcessHealth | None = None,
    ) -> None:
        [self.moduleId] = settings.mqtt.module_ids
        self.linkHealth = health.link("controller") if health is not None else None
        super().__init__(
            reactor,
            settings.mqtt.broker,
            environ,
            f"rcp-{self.moduleId}-{uuid.uuid4().hex[:8]}",
            end,
        )
        self.settings = settings
        self.credentials = credentials
        self.module = MqttModule(
            self.connection, self.moduleId, settings.mqtt.prefix, reactor, provides=PROVIDES
        )
        self.link: AgentLink | None = None
        self.listening: ListeningService | None = None
        self.listen: str | None = None
        self.advert: Service | None = None

    def startService(self) -> None:
        self.log.info(
            "rcp-agent: EVerest module {module} on the broker {host}:{port}, prefix {prefix}",
            module=self.moduleId,
            host=self.connection.host,
            port=self.connection.port,
            prefix=self.module.prefix,
        )
        super().startService()

    async def _start(self) -> None:
        if not await self.startModules([self.module]):
            return
        if self.settings.listen is not None:
            self.listen = self.settings.listen
        else:
            try:
                self.listen = f"tcp:{listenPort(self.module.config())}"
            except ValueError as e:
                self.end(1, str(e))
                return
        self.link = AgentLink(
            self.module,
            self.reactor,
            self._resetBoard,
            self.settings.timings(),
            self.settings.rpc.limits(),
            self.settings.link.queue_limit,
            self.settings.link.hold_time,
            helloFrom(
                self.settings.versions,
                self.settings.link.liveness,
                self.credentials.name if self.credentials is not None else self.module.moduleId,
                self.reactor.seconds(),
            ),
            self.linkHealth,
            summaryInterval=self.settings.link.summary_interval,
        )
        listening = ListeningService(
            "rcp-agent",
            self.listen,
            guardedServerFactory(
                self.link.factory(),
                self.credentials,
                self.settings.guard.limits(),
                self.reactor,
                "rcp-agent",
            ),
            self.reactor,
        )
        try:
            listening.privilegedStartService()
            listening.startService()
        except SystemExit as e:
            self.end(1, str(e.code))
            return
        self.listening = listening
        self.log.info("rcp-agent: listening on {listen}", listen=self.listen)
        if self.settings.discovery.advertise:
            self._advertise()

    def _advertise(self) -> None:
        from ..discovery.agent import SerialError, advertiser

        assert self.listen is not None
        port = endpointPort(self.listen)
        if not port:
            self.log.error(
                "rcp-agent: discovery.advertise needs a fixed TCP port, listen is {listen}:"
                " not advertising",
                listen=self.listen,
            )
            return
        try:
            self.advert = advertiser(self.reactor, self.settings.discovery, port, self.credentials)
        except SerialError as e:
            self.end(1, f"discovery: {e}")
            return
        self.advert.startService()

    def _resetBoard(self, reason: str) -> None:
        if self.module.stopped or not self.module.connections("system"):
            self.end(1, f"board reset ({reason}): no System connected, so rcp restarts alone")
            return
        self.log.warn(
            "rcp-agent: asking this board's System for a soft reset ({reason})", reason=reason
        )
        d = self.module.call("system", "reset", {"type": "Soft", "scheduled": False})
        timer = self.reactor.callLater(RESET_ANSWER_TIMEOUT, d.cancel)

        def failed(failure: Failure) -> None:
            self.log.warn(
                "rcp-agent: the reset was not answered: {problem}",
                problem=failure.getErrorMessage() or repr(failure.value),
            )

        def done(_: object) -> None:
            if timer.active():
                timer.cancel()
            self.end(1, f"board reset ({reason})")

        d.addCallbacks(lambda _: None, failed).addBoth(done)

    def end(self, code: int, reason: str) -> None:
        """End the process (once); the link goes down at once."""
        if self.ended is None and self.link is not None:
            self.link.halt()
        super().end(code, reason)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        waits: list[Deferred[Any]] = []
        if self.listening is not None and self.listening.running:
            stopped = self.listening.stopService()
            if stopped is not None:
                waits.append(stopped)
        if self.advert is not None and self.advert.running:
            withdrawn = self.advert.stopService()
            if withdrawn is not None:
                waits.append(withdrawn)
        if self.link is not None and not self.link.halted:
            self.link.halt()
        self.module.stop("stopping")
        waits.append(self.connection.disconnect())
        if not waits:
            return succeed(None)
        return DeferredList(waits).addCallback(lambda _: None)
