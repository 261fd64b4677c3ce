"""``twistd rcp-agent``: options and service tree of a satellite's agent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from ..health.service import processStatus
from ..options import ConfigOptions
from ..service import (
    ListeningService,
    SecurityNotice,
    exitProcess,
    guardedServerFactory,
)
from ..settings import AgentSettings, endpointPort

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
        [
            "everest",
            None,
            None,
            "the EVerest side: sim or mqtt (overrides the setting everest)",
        ],
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


def makeService(
    options: Options, reactor: Any = None, end: Callable[[int, str], None] | None = None
) -> MultiService:
    """
    @param end: how to end the process (C{everest: mqtt}; by default: stop
        the reactor, then exit with the code).
    """
    if reactor is None:
        from twisted.internet import reactor
    settings: AgentSettings = options.settings
    top = MultiService()

    SecurityNotice("rcp-agent", options.credentials).setServiceParent(top)
    board = options.credentials.name if options.credentials is not None else "satellite"
    health, status = processStatus(reactor, "rcp-agent", board, settings, options["config"])
    status.setServiceParent(top)

    if settings.everest == "mqtt":
        # the module listens itself, once EVerest told it the port
        from .everest_mqtt import MqttSatellite

        module = MqttSatellite(
            reactor, settings, options.credentials, end or exitProcess(reactor), health=health
        )
        module.setName("everest")
        module.setServiceParent(top)
        return top

    # the simulation is imported only when it is used
    from .service import SimulatedSatellite

    everest = SimulatedSatellite(reactor, settings, options.credentials, health)
    everest.setName("everest")
    everest.setServiceParent(top)

    rpc = ListeningService(
        "rcp-agent",
        settings.listenEndpoint,
        guardedServerFactory(
            everest.factory(), options.credentials, settings.guard.limits(), reactor, "rcp-agent"
        ),
        reactor,
    )
    rpc.setName("rpc")
    rpc.setServiceParent(top)
    if settings.discovery.advertise:
        _advertise(reactor, settings, options, top)
    return top


def _advertise(reactor: Any, settings: AgentSettings, options: Options, top: MultiService) -> None:
    from ..discovery.agent import SerialError, advertiser

    port = endpointPort(settings.listenEndpoint)
    if port is None or port == 0:
        raise SystemExit(
            "rcp-agent: discovery.advertise needs a fixed TCP port,"
            f" listen is {settings.listenEndpoint}"
        )
    try:
        advert = advertiser(reactor, settings.discovery, port, options.credentials)
    except SerialError as e:
        raise SystemExit(f"rcp-agent: discovery: {e}") from None
    advert.setName("discovery")
    advert.setServiceParent(top)
