"""``twistd rcp-controller``: options and service tree of one satellite's controller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from ..health.service import processStatus
from ..options import ConfigOptions
from ..service import SecurityNotice, secureClientEndpoint
from ..settings import ControllerSettings

log = Logger()


class Options(ConfigOptions):
    """
    Run the rcp controller of one satellite on the main board: the RPC
    client that connects to that satellite's rcp-agent.
    """

    command = "rcp-controller"
    settingsClass = ControllerSettings
    optParameters = [
        ["config", "c", None, "YAML config file (example: etc/rcp-controller.yaml)"],
        [
            "peer",
            "p",
            None,
            "Twisted client endpoint string of the agent, such as"
            " tcp:host=10.0.0.2:port=4129 (overrides the setting peer)",
        ],
        [
            "peer-name",
            None,
            None,
            "name in the agent's certificate, such as satellite-1 (overrides tls.peer_name)",
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
    overrides = {"peer": "peer", "peer-name": "tls.peer_name", "everest": "everest"}
    flagOverrides = {"plain": ("tls.mode", "plain")}


Options.longdesc = " ".join((Options.__doc__ or "").split())


def makeService(
    options: Options, reactor: Any = None, end: Callable[[int, str], None] | None = None
) -> MultiService:
    """
    @param end: how to end the process after a loss of sync (by default:
        stop the reactor, then exit with the code).
    """
    if reactor is None:
        from twisted.internet import reactor
    settings: ControllerSettings = options.settings
    top = MultiService()

    SecurityNotice("rcp-controller", options.credentials, settings.peerName).setServiceParent(top)
    board = options.credentials.name if options.credentials is not None else "main"
    health, status = processStatus(reactor, "rcp-controller", board, settings, options["config"])
    status.setServiceParent(top)
    if settings.everest == "mqtt":
        from ..service import exitProcess
        from .everest_mqtt import MqttController

        modules = MqttController(
            reactor, settings, options.credentials, end or exitProcess(reactor), health=health
        )
        modules.setName("link")
        modules.setServiceParent(top)
        return top

    if settings.discovery.serial is not None:
        from ..discovery.directory import Directory
        from ..discovery.endpoint import DiscoveredEndpoint
        from ..discovery.mdns import Browser

        directory = Directory(reactor)
        browser = Browser(reactor, directory, settings.discovery.interfaces)
        browser.setName("discovery")
        browser.setServiceParent(top)
        found: IStreamClientEndpoint = DiscoveredEndpoint(
            reactor, directory, settings.discovery.serial, settings.discovery.timeout
        )
    else:
        assert settings.peer is not None  # required with everest: sim
        found = clientFromString(reactor, settings.peer)
    endpoint = secureClientEndpoint(found, options.credentials, settings.peerName)
    # the simulation is imported only when it is used
    from .service import SimulatedController, exitProcess

    link = SimulatedController(
        reactor, settings, endpoint, end or exitProcess(reactor), board, health
    )
    link.setName("link")
    link.setServiceParent(top)
    return top
