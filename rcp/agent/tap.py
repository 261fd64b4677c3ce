"""``twistd rcp-agent``: options and service tree of a satellite's agent."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from ..options import ConfigOptions
from ..service import ListeningService, SecurityNotice, secureServerFactory
from ..settings import AgentSettings

log = Logger()


class Options(ConfigOptions):
    """
    Run the rcp agent of a satellite board: an RPC server that the main
    board's rcp-controller connects to.
    """

    command = "rcp-agent"
    settingsClass = AgentSettings
    optParameters = [
        ["config", "c", None, "YAML config file (example: etc/rcp-agent.yaml)"],
        [
            "listen",
            "l",
            None,
            "Twisted server endpoint string to listen on, such as tcp:4129"
            " (overrides the setting listen)",
        ],
        ["everest", None, None, "the EVerest side: sim (overrides the setting everest)"],
    ]
    optFlags = [
        [
            "plain",
            None,
            "plain TCP, unauthenticated: only for links to C++ boards (sets tls.mode: plain)",
        ],
    ]
    overrides = {"listen": "listen", "everest": "everest"}
    flagOverrides = {"plain": ("tls.mode", "plain")}


Options.longdesc = " ".join((Options.__doc__ or "").split())


def makeService(options: Options, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    settings: AgentSettings = options.settings
    top = MultiService()

    SecurityNotice("rcp-agent", options.credentials).setServiceParent(top)

    # the simulation is imported only when it is used
    from .service import SimulatedSatellite

    everest = SimulatedSatellite(reactor, settings, options.credentials)
    everest.setName("everest")
    everest.setServiceParent(top)

    rpc = ListeningService(
        "rcp-agent",
        settings.listen,
        secureServerFactory(everest.factory(), options.credentials),
        reactor,
    )
    rpc.setName("rpc")
    rpc.setServiceParent(top)
    return top
