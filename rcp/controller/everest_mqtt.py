"""
``everest: mqtt`` on the main board: each module id is a standalone
SatelliteController module of the board's real EVerest, with a link to
the agent its module config names (C{hostname}, C{port}).

Start-up, in EVerest's order: connect to the broker, get every module's
configuration, make sure the station is not running already (see
L{rcp.everest.mqtt.standalone}), start the links.  Each link signals its
module ready when it is synchronised.  The end of any link, or a lost
broker, ends the whole process: systemd starts it again.

With C{mqtt.aggregator_id} the process also hosts the station's
SystemAggregator module (L{rcp.aggregator}, with the FTP and HTTP receivers
of L{rcp.receivers} and backend transfers with curl): it is started with the others
and signals ready once the station is known not to be running; it has no
link.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from ..aggregator.module import SystemAggregator
from ..discovery.directory import Directory
from ..discovery.records import checkSerial
from ..everest.mqtt import MqttModule
from ..everest.mqtt.standalone import StandaloneProcess
from ..health.process import ProcessHealth
from ..health.versions import helloFrom
from ..service import secureClientEndpoint
from ..settings import DEFAULT_AGENT_PORT, ControllerSettings
from ..tls import Credentials
from ..tunnel.controller import SATELLITE
from ..tunnel.table import CHANNELS
from .link import ControllerLink

#: the implementations of SatelliteController (its manifest) and their interfaces
PROVIDES: Final = {channel.name: channel.interface for channel in CHANNELS} | {
    SATELLITE: "satellite"
}

#: the implementations of SystemAggregator (its manifest) and their interfaces
AGGREGATOR_PROVIDES: Final = {"system": "system"}


def _isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def peerOf(config: Mapping[str, Any]) -> tuple[str, int]:
    """
    The agent a SatelliteController's module config names.

    @raise ValueError: C{hostname} or C{port} is unusable.
    """
    host = config.get("hostname")
    port = config.get("port", DEFAULT_AGENT_PORT)
    if not isinstance(host, str) or not host.strip():
        raise ValueError(f"the module config hostname is {host!r}, not a host")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"the module config port is {port!r}, not a port number")
    return host.strip(), port


def serialOf(config: Mapping[str, Any]) -> str | None:
    """
    The agent's serial number a SatelliteController's module config names
    (rcp's optional key C{serial_number}), or L{None}.

    @raise ValueError: it is not a serial number.
    """
    serial = config.get("serial_number")
    if serial is None or serial == "":
        return None
    if not isinstance(serial, str):
        raise ValueError(f"the module config serial_number is {serial!r}, not text")
    return checkSerial(serial.strip())


class MqttController(StandaloneProcess):
    """
    The SatelliteController modules of this process and their links.

    @param end: ends the process with an exit code and a reason.
    @param environ: the environment (for the broker address EVerest uses).
    """

    log = Logger()
    role = "rcp-controller"

    def __init__(
        self,
        reactor: Any,
        settings: ControllerSettings,
        credentials: Credentials | None,
        end: Callable[[int, str], None],
        environ: Mapping[str, str] = os.environ,
        health: ProcessHealth | None = None,
    ) -> None:
        self.health = health
        super().__init__(
            reactor,
            settings.mqtt.broker,
            environ,
            f"rcp-controller-{uuid.uuid4().hex[:12]}",
            end,
        )
        self.settings = settings
        self.credentials = credentials
        self.modules = [
            MqttModule(self.connection, moduleId, settings.mqtt.prefix, reactor, provides=PROVIDES)
            for moduleId in settings.mqtt.module_ids
        ]
        #: the SystemAggregator module, with C{mqtt.aggregator_id}
        self.aggregatorModule: MqttModule | None = None
        if settings.mqtt.aggregator_id is not None:
            self.aggregatorModule = MqttModule(
                self.connection,
                settings.mqtt.aggregator_id,
                settings.mqtt.prefix,
                reactor,
                provides=AGGREGATOR_PROVIDES,
            )
        self.aggregator: SystemAggregator | None = None
        self.receivers: Any = None
        self.links: dict[str, ControllerLink] = {}
        self.directory: Directory | None = None
        self.browser: Service | None = None

    def startService(self) -> None:
        self.log.info(
            "rcp-controller: EVerest modules {modules} on the broker {host}:{port},"
            " prefix {prefix}",
            modules=", ".join(m.moduleId for m in self._allModules()),
            host=self.connection.host,
            port=self.connection.port,
            prefix=self.modules[0].prefix,
        )
        super().startService()

    def _allModules(self) -> list[MqttModule]:
        """The SatelliteController modules, then the SystemAggregator if hosted."""
        extra = [self.aggregatorModule] if self.aggregatorModule is not None else []
        return self.modules + extra

    async def _start(self) -> None:
        if not await self.startModules(self._allModules()):
            return
        if self.aggregatorModule is not None and not self._startAggregator(self.aggregatorModule):
            return
        for module in self.modules:
            try:
                endpoint = self._endpoint(module)
            except ValueError as e:
                self.end(1, f"{module.moduleId}: {e}")
                return
            self.links[module.moduleId] = ControllerLink(
                module,
                self.reactor,
                endpoint,
                self._linkEnded(module.moduleId),
                self.settings.timings(),
                self.settings.rpc.limits(),
                self.settings.link.hold_time,
                helloFrom(
                    self.settings.versions,
                    self.settings.link.liveness,
                    self.credentials.name if self.credentials is not None else "main",
                    self.reactor.seconds(),
                ),
                self.health.link(module.moduleId) if self.health is not None else None,
                summaryInterval=self.settings.link.summary_interval,
            )
        for link in self.links.values():
            link.start()

    def _startAggregator(self, module: MqttModule) -> bool:
        """The receivers, then the SystemAggregator; a problem ends the process (one line)."""
        from ..receivers.service import ReceiverService
        from ..transfer import CurlTransfers

        if not self.settings.receivers.enabled:
            self.end(1, f"{module.moduleId}: the SystemAggregator needs receivers.enabled: true")
            return False
        try:
            receivers = ReceiverService(self.reactor, self.settings.receivers)
            receivers.startService()
        except Exception as e:  # a port taken, a directory that cannot be made
            self.end(1, f"{module.moduleId}: the receivers cannot start: {e}")
            return False
        self.receivers = receivers
        aggregator = SystemAggregator(
            module, self.reactor, receivers.receivers, CurlTransfers(self.reactor)
        )
        try:
            aggregator.start()
        except ValueError as e:
            self.end(1, str(e))
            return False
        self.aggregator = aggregator
        return True

    def _endpoint(self, module: MqttModule) -> IStreamClientEndpoint:
        if self.settings.peer is not None:
            self.log.info(
                "rcp-controller: {module}: the agent at {peer} (the setting peer)",
                module=module.moduleId,
                peer=self.settings.peer,
            )
            endpoint: IStreamClientEndpoint = clientFromString(self.reactor, self.settings.peer)
            return secureClientEndpoint(endpoint, self.credentials, self.settings.peerName)
        serial = serialOf(module.config()) or (
            self.settings.discovery.serial if len(self.modules) == 1 else None
        )
        if serial is not None:
            return self._discovered(module, serial)
        host, port = peerOf(module.config())
        # one tls.peer_name cannot name several agents
        given = self.settings.tls.peer_name if len(self.modules) == 1 else None
        peerName = given or host
        if self.credentials is not None and _isAddress(peerName):
            raise ValueError(
                f"the agent is given by address ({host}): set tls.peer_name to the name"
                " in its certificate, or give its host name as hostname"
            )
        self.log.info(
            "rcp-controller: {module}: the agent at {host}:{port}",
            module=module.moduleId,
            host=host,
            port=port,
        )
        return secureClientEndpoint(
            HostnameEndpoint(self.reactor, host.encode(), port), self.credentials, peerName
        )

    def _discovered(self, module: MqttModule, serial: str) -> IStreamClientEndpoint:
        from ..discovery.endpoint import DiscoveredEndpoint
        from ..discovery.mdns import Browser

        if self.directory is None:
            self.directory = Directory(self.reactor)
            self.browser = Browser(self.reactor, self.directory, self.settings.discovery.interfaces)
            self.browser.startService()
        # the name in the certificate: the module's hostname (the board name), else the serial
        host = module.config().get("hostname")
        given = self.settings.tls.peer_name if len(self.modules) == 1 else None
        peerName = given or (host.strip() if isinstance(host, str) and host.strip() else serial)
        if self.credentials is not None and _isAddress(peerName):
            peerName = serial
        self.log.info(
            "rcp-controller: {module}: the agent of serial number {serial} (found by mDNS),"
            " certificate name {name}",
            module=module.moduleId,
            serial=serial,
            name=peerName,
        )
        found = DiscoveredEndpoint(
            self.reactor, self.directory, serial, self.settings.discovery.timeout
        )
        return secureClientEndpoint(found, self.credentials, peerName)

    def _linkEnded(self, moduleId: str) -> Callable[[int, str], None]:
        def ended(code: int, reason: str) -> None:
            self.end(code, f"{moduleId}: {reason}")

        return ended

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stops: list[Deferred[Any]] = [link.stop() for link in self.links.values()]
        if self.aggregator is not None:
            self.aggregator.stop()
        if self.receivers is not None and self.receivers.running:
            stopped = self.receivers.stopService()
            if stopped is not None:
                stops.append(stopped)
        if self.browser is not None and self.browser.running:
            stopped = self.browser.stopService()
            if stopped is not None:
                stops.append(stopped)
        for module in self._allModules():
            module.stop("stopping")

        def disconnect(_: object) -> Deferred[None]:
            return self.connection.disconnect()

        return DeferredList(stops).addCallback(disconnect)
