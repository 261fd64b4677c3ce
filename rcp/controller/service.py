"""The controller as a service: one satellite link and the main board's EVerest side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from ..health.process import ProcessHealth
from ..health.versions import helloFrom
from ..service import exitProcess
from ..settings import ControllerSettings
from ..station import MainSide
from .link import ControllerLink

__all__ = ["SimulatedController", "exitProcess"]


class SimulatedController(Service):
    """``--everest sim``: the link, with the main board's EVerest simulated in this process."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: ControllerSettings,
        endpoint: IStreamClientEndpoint,
        end: Callable[[int, str], None],
        board: str = "main",
        health: ProcessHealth | None = None,
    ) -> None:
        """
        @param board: this board's name (in the version exchange).
        @param health: the process's figures for C{rcp status}.
        """
        self.main = MainSide(
            reactor, settings.sim.evse_id, settings.sim.accepted_tokens, self._note
        )
        self.link = ControllerLink(
            self.main.controller,
            reactor,
            endpoint,
            self._ended(end),
            settings.timings(),
            settings.rpc.limits(),
            settings.link.hold_time,
            helloFrom(settings.versions, settings.link.liveness, board, reactor.seconds()),
            health.link("satellite") if health is not None else None,
            summaryInterval=settings.link.summary_interval,
        )

    def _note(self, board: str, text: str) -> None:
        self.log.info("{board}: {text}", board=board, text=text)

    def _ended(self, end: Callable[[int, str], None]) -> Callable[[int, str], None]:
        def ended(code: int, reason: str) -> None:
            self.log.warn(
                "rcp-controller: ending with exit code {code}: {reason}", code=code, reason=reason
            )
            end(code, reason)

        return ended

    def startService(self) -> None:
        super().startService()
        self.main.start()
        self.link.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.link.stop()
