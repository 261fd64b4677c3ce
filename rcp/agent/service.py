"""The agent as a service: a satellite board's EVerest side and its link."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ..health.process import ProcessHealth
from ..health.versions import helloFrom
from ..settings import AgentSettings
from ..station import SatelliteBoard, StationOptions
from ..tls import Credentials


class SimulatedSatellite(Service):
    """
    ``--everest sim``: the board's EVerest is simulated in this process; a
    reset of the board restarts that simulation and the agent, as a reboot
    would.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: AgentSettings,
        credentials: Credentials | None,
        health: ProcessHealth | None = None,
    ) -> None:
        board = credentials.name if credentials is not None else "satellite"
        options = StationOptions(
            satellites=1,
            timings=settings.timings(),
            limits=settings.rpc.limits(),
            holdTime=settings.link.hold_time,
            summaryInterval=settings.link.summary_interval,
            meterInterval=settings.sim.meter_interval,
            agentHello=helloFrom(
                settings.versions, settings.link.liveness, board, reactor.seconds()
            ),
            agentHealth=health.link("controller") if health is not None else None,
        )
        self.board = SatelliteBoard(
            reactor,
            board,
            settings.sim.evse_id,
            credentials,
            options,
            self._note,
            listen=False,
        )
        self.board.queueLimit = settings.link.queue_limit

    def _note(self, board: str, text: str) -> None:
        self.log.info("{board}: {text}", board=board, text=text)

    def factory(self) -> Factory:
        return self.board.factory()

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self.board.boot()).addErrback(
            lambda f: self.log.failure("the simulated board did not boot", f)
        )

    def stopService(self) -> None:
        super().stopService()
        self.board.stop()
