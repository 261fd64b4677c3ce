"""
A whole charging station on one machine: one main board and several
satellites, each with a simulated EVerest, linked by real rcp links over
loopback (mutual TLS by default).

A satellite board that resets really goes away: its agent's port closes,
its EVerest stops, and it boots again a moment later, as hardware would.
When the main board loses a synchronised link its controller "process"
ends; here the whole main board restarts, as systemd restarts the station,
and every satellite it reaches again sees a second ``i_am_here`` and resets:
the station goes back to a common start point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from .agent.link import AgentLink
from .aggregator.module import SystemAggregator
from .certs import createStation
from .controller.link import ControllerLink
from .everest.sim.auth import AuthSim
from .everest.sim.bus import SimBus, SimModule
from .everest.sim.evse import EvseManagerSim
from .everest.sim.station import StationConsumer
from .everest.sim.system import SystemSim
from .health.link import LinkHealth
from .health.versions import Hello
from .rpc import RpcLimits
from .service import secureClientEndpoint, secureServerFactory
from .sync import SyncTimings
from .tls import Credentials, loadCredentials

#: seconds a simulated board takes to boot again after a reset
BOOT_TIME = 0.5

Note = Callable[[str, str], None]


def _quiet(board: str, text: str) -> None:
    pass


@dataclass
class StationOptions:
    satellites: int = 3
    secure: bool = True
    timings: SyncTimings = field(default_factory=SyncTimings)
    limits: RpcLimits = field(default_factory=RpcLimits)
    holdTime: float = 1.0
    #: seconds between the links' one-line summaries (0: none)
    summaryInterval: float = 0.0
    meterInterval: float = 1.0
    bootTime: float = BOOT_TIME
    acceptedTokens: tuple[str, ...] = ("DEADBEEF", "CAFEBABE", "0A0B0C0D")
    #: the agents' part in the version exchange (L{None}: none, as a C++ agent)
    agentHello: Hello | None = None
    #: the agent's figures for rcp status (one for the process, across board resets)
    agentHealth: LinkHealth | None = None


class SatelliteBoard:
    """One satellite: EvseManager, System and the agent, on its own bus."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        name: str,
        evseId: int,
        credentials: Credentials | None,
        options: StationOptions,
        note: Note = _quiet,
        listen: bool = True,
    ) -> None:
        """
        @param listen: the board listens on 127.0.0.1 itself; otherwise the
            caller listens with L{factory}.
        """
        self.reactor = reactor
        self.name = name
        self.listen = listen
        # The satellite's EvseManager is configured with the EVSE number the
        # station has for it, as in a real station's satellite config.
        self.evseId = evseId
        self.credentials = credentials
        self.options = options
        self.note = note
        self.port = 0
        self.queueLimit = 1000
        self.boots = 0
        self.bootReason = "PowerUp"
        self.resetting = False
        self._listening: IListeningPort | None = None
        self._rebootCall: IDelayedCall | None = None
        self.bus: SimBus
        self.evse: EvseManagerSim
        self.system: SystemSim
        self.link: AgentLink

    async def boot(self) -> None:
        """Power on: the simulated EVerest comes up and the agent listens."""
        if self.boots:
            self.bootReason = self.bootReason if self.resetting else "PowerUp"
        self.boots += 1
        self.resetting = False
        bus = self.bus = SimBus(self.reactor, self.name)
        evseModule = bus.module("connector_1", mapping={"evse": self.evseId})
        systemModule = bus.module("system")
        agentModule = bus.module(
            "satellite_agent",
            {
                "evse_manager": [("connector_1", "evse")],
                "energy": [("connector_1", "energy_grid")],
                "rfid_token_provider": [("connector_1", "token_provider")],
                "system": [("system", "main")],
            },
        )
        self.evse = EvseManagerSim(
            evseModule,
            self.reactor,
            evseIdText=f"DE*RCP*E{self.name.upper()}",
            meterInterval=self.options.meterInterval,
        )
        self.system = SystemSim(
            systemModule, self.reactor, onReset=self._systemReset, bootReason=self.bootReason
        )
        self.link = AgentLink(
            agentModule,
            self.reactor,
            self.reset,
            self.options.timings,
            self.options.limits,
            queueLimit=self.queueLimit,
            holdTime=self.options.holdTime,
            hello=self.options.agentHello,
            health=self.options.agentHealth,
            summaryInterval=self.options.summaryInterval,
        )
        self.evse.start()
        self.system.start()
        if not self.listen:
            self.note(self.name, f"booted ({self.bootReason})")
            return
        endpoint = TCP4ServerEndpoint(self.reactor, self.port, interface="127.0.0.1")
        self._listening = await endpoint.listen(
            secureServerFactory(self.factory(), self.credentials)
        )
        self.port = self._listening.getHost().port  # type: ignore[union-attr]
        self.note(self.name, f"booted ({self.bootReason}), agent listening on port {self.port}")

    def factory(self) -> Factory:
        """Connections for whichever agent runs now; refused while the board is down."""
        return _BoardFactory(self)

    def _systemReset(self, type: str) -> None:
        self.bootReason = self.system.nextBootReason or "RemoteReset"
        self.reset(f"{type} reset requested")

    def reset(self, reason: str) -> None:
        """The board resets: everything stops, and it boots again shortly."""
        if self.resetting:
            return
        if not reason.endswith("reset requested"):
            self.bootReason = "ApplicationReset"  # the agent restarted the board
        self.resetting = True
        self.note(self.name, f"resets: {reason}")
        self.powerOff()
        self._rebootCall = self.reactor.callLater(self.options.bootTime, self._reboot)

    def _reboot(self) -> None:
        self._rebootCall = None
        Deferred.fromCoroutine(self.boot()).addErrback(
            lambda f: self.log.failure("{board}: boot failed", f, board=self.name)
        )

    def stop(self) -> None:
        """Switched off for good: down now, and no reboot to come."""
        if self._rebootCall is not None and self._rebootCall.active():
            self._rebootCall.cancel()
        self._rebootCall = None
        if not self.resetting and hasattr(self, "link"):
            self.powerOff()

    def powerOff(self) -> None:
        self.link.halt()
        self.evse.stop()
        self.system.stop()
        self.bus.shutdown()
        if self._listening is not None:
            self._listening.stopListening()
            self._listening = None


class _BoardFactory(Factory):
    noisy = False

    def __init__(self, board: SatelliteBoard) -> None:
        self.board = board

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        board = self.board
        if board.resetting or not hasattr(board, "link"):
            return None
        return board.link.buildProtocol()


class MainSide:
    """
    A simulated main board around one controller, for ``twistd
    rcp-controller --everest sim``: authorization, and a consumer that logs
    what arrives from the satellite.
    """

    def __init__(
        self, reactor: Any, evseId: int, acceptedTokens: list[str], note: Note = _quiet
    ) -> None:
        bus = self.bus = SimBus(reactor, "main")
        self.controller = bus.module(
            "satellite_controller", {"auth": [("auth", "main")]}, mapping={"evse": evseId}
        )
        auth = bus.module(
            "auth",
            {
                "token_provider": [
                    ("satellite_controller", "rfid_token_provider"),
                    ("satellite_controller", "auth_token_provider"),
                ],
                "evse_manager": [("satellite_controller", "evse_manager")],
            },
        )
        api = bus.module("api", {"evse_manager": [("satellite_controller", "evse_manager")]})
        self.auth = AuthSim(auth, reactor, acceptedTokens=acceptedTokens)
        self.consumer = StationConsumer(api, reactor)
        self.consumer.observe(
            lambda r: note("main", f"<- {r.source} {r.name}: {str(r.value)[:160]}")
        )

    def start(self) -> None:
        self.auth.start()
        self.consumer.start()


@dataclass
class StationSystem:
    """
    What the main board needs to host the SystemAggregator: the receivers
    and the backend transfers (they outlive the main board's reboots), and
    the aggregator's module config.
    """

    receivers: Any
    transfers: Any
    config: dict[str, Any] = field(default_factory=dict)


class MainBoard:
    """
    The main board: auth, a station consumer (OCPP/API) and one controller
    per satellite; with a L{StationSystem}, also its own System and the
    SystemAggregator over every board's, used by an C{ocpp} module.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        satellites: list[SatelliteBoard],
        credentials: Credentials | None,
        options: StationOptions,
        note: Note = _quiet,
        system: StationSystem | None = None,
    ) -> None:
        self.reactor = reactor
        self.system = system
        self.aggregator: SystemAggregator | None = None
        self.mainSystem: SystemSim | None = None
        self.ocpp: SimModule | None = None
        self.bootReason = "PowerUp"
        self.satellites = satellites
        self.credentials = credentials
        self.options = options
        self.note = note
        self.boots = 0
        self.restarting = False
        self.links: list[ControllerLink] = []
        self.bus: SimBus
        self.consumer: StationConsumer
        self.auth: AuthSim
        self.engineer: SimModule
        self._syncWaiters: list[Deferred[None]] = []
        self._bootCall: IDelayedCall | None = None

    def boot(self) -> None:
        self._bootCall = None
        self.boots += 1
        self.restarting = False
        bus = self.bus = SimBus(self.reactor, "main")
        controllers = [f"satellite_{i + 1}" for i in range(len(self.satellites))]
        auth = bus.module(
            "auth",
            {
                "token_provider": [(c, "rfid_token_provider") for c in controllers]
                + [(c, "auth_token_provider") for c in controllers],
                "evse_manager": [(c, "evse_manager") for c in controllers],
            },
        )
        api = bus.module(
            "api",
            {"evse_manager": [(c, "evse_manager") for c in controllers]},
        )
        # what a service technician or the backend reaches: each board's system
        self.engineer = bus.module("engineer", {"system": [(c, "system") for c in controllers]})
        self.auth = AuthSim(auth, self.reactor, acceptedTokens=self.options.acceptedTokens)
        self.consumer = StationConsumer(api, self.reactor)
        self.links = []
        for i, (controllerId, satellite) in enumerate(
            zip(controllers, self.satellites, strict=True)
        ):
            module = bus.module(controllerId, {"auth": [("auth", "main")]}, mapping={"evse": i + 1})
            endpoint = secureClientEndpoint(
                TCP4ClientEndpoint(self.reactor, "127.0.0.1", satellite.port),
                self.credentials,
                satellite.name,
            )
            link = ControllerLink(
                module,
                self.reactor,
                endpoint,
                self._ended(satellite.name),
                self.options.timings,
                self.options.limits,
                self.options.holdTime,
                summaryInterval=self.options.summaryInterval,
            )
            self.links.append(link)
        if self.system is not None:
            self._bootSystem(bus, controllers)
        # The main EVerest goes ready once every module is: the controllers
        # only once their links are synchronised.
        self.engineer.signalReady().addCallback(lambda _: self._globallyReady())
        self.auth.start()
        self.consumer.start()
        for link in self.links:
            link.start()
        self.note("main", f"booted (boot {self.boots}), connecting to {len(self.links)} satellites")

    def _bootSystem(self, bus: SimBus, controllers: list[str]) -> None:
        assert self.system is not None
        self.mainSystem = SystemSim(
            bus.module("main_system"),
            self.reactor,
            stepDelay=0.2,
            onReset=lambda kind: self.restart(f"its System resets ({kind})"),
            bootReason=self.bootReason,
        )
        module = bus.module(
            "aggregator",
            {
                "system": [("main_system", "main")] + [(c, "system") for c in controllers],
                "satellite": [(c, "satellite") for c in controllers],
            },
            config=self.system.config,
        )
        self.ocpp = bus.module("ocpp", {"system": [("aggregator", "system")]})
        self.aggregator = SystemAggregator(
            module, self.reactor, self.system.receivers, self.system.transfers
        )
        self.aggregator.start()
        self.mainSystem.start()
        self.ocpp.signalReady()

    def _globallyReady(self) -> None:
        self.note("main", "every link synchronised: the station is ready (common start point)")
        waiters, self._syncWaiters = self._syncWaiters, []
        for d in waiters:
            d.callback(None)

    def whenReady(self) -> Deferred[None]:
        """Fires when every link is synchronised and the main EVerest is ready."""
        d: Deferred[None] = Deferred()
        if self.bus.globallyReady and not self.restarting:
            d.callback(None)
        else:
            self._syncWaiters.append(d)
        return d

    def _ended(self, satellite: str) -> Callable[[int, str], None]:
        def ended(code: int, reason: str) -> None:
            self.note("main", f"link to {satellite} ended ({reason}), exit code {code}")
            self.restart(f"controller for {satellite} exited with code {code}")

        return ended

    def restart(self, reason: str) -> None:
        """systemd restarts the main board's EVerest and rcp processes."""
        if self.restarting:
            return
        self.restarting = True
        self.note("main", f"restarts: {reason}")
        self.powerOff()
        self._bootCall = self.reactor.callLater(self.options.bootTime, self.boot)

    def stop(self) -> None:
        """Switched off for good: down now, and no restart to come."""
        if self._bootCall is not None and self._bootCall.active():
            self._bootCall.cancel()
        self._bootCall = None
        if hasattr(self, "bus"):
            self.powerOff()

    def powerOff(self) -> None:
        if self.aggregator is not None:
            self.aggregator.stop()
            self.aggregator = None
        if self.mainSystem is not None:
            self.bootReason = self.mainSystem.nextBootReason or "ApplicationReset"
            self.mainSystem.stop()
            self.mainSystem = None
        for link in self.links:
            link.halt()
        self.auth.stop()
        self.bus.shutdown()


class Station:
    """The boards of one station, with their certificates."""

    def __init__(
        self,
        reactor: Any,
        options: StationOptions | None = None,
        pki: Path | None = None,
        note: Note = _quiet,
        system: StationSystem | None = None,
    ) -> None:
        """@param system: host the SystemAggregator on the main board."""
        self.reactor = reactor
        self.options = options or StationOptions()
        self.note = note
        names = [f"satellite-{i + 1}" for i in range(self.options.satellites)]
        credentials: dict[str, Credentials | None] = {n: None for n in ["main", *names]}
        if self.options.secure:
            if pki is None:
                raise ValueError("a secure station needs a directory for its certificates")
            createStation(pki, ["main", *names])
            for name in credentials:
                credentials[name] = loadCredentials(
                    str(pki / "ca.pem"), str(pki / f"{name}.pem"), str(pki / f"{name}.key")
                )
        self.satellites = [
            SatelliteBoard(reactor, n, i + 1, credentials[n], self.options, note)
            for i, n in enumerate(names)
        ]
        self.main = MainBoard(
            reactor, self.satellites, credentials["main"], self.options, note, system
        )

    async def start(self) -> None:
        for satellite in self.satellites:
            await satellite.boot()
        self.main.boot()
        await self.main.whenReady()

    def stop(self) -> None:
        """Every board off, with no reboot or restart still to come."""
        self.main.stop()
        for satellite in self.satellites:
            satellite.stop()
