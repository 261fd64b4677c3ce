"""``twistd rcp-agent``: options and service tree of a satellite's agent."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from ..options import ConfigOptions
from ..rpc import MethodRegistry, RpcFactory, RpcProtocol
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
    ]
    optFlags = [
        [
            "plain",
            None,
            "plain TCP, unauthenticated: only for links to C++ boards (sets tls.mode: plain)",
        ],
    ]
    overrides = {"listen": "listen"}
    flagOverrides = {"plain": ("tls.mode", "plain")}


Options.longdesc = " ".join((Options.__doc__ or "").split())


def _controllerConnected(protocol: RpcProtocol) -> None:
    log.info("rcp-agent: connection from {peer}", peer=protocol.peer)


def makeService(options: Options, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    settings: AgentSettings = options.settings
    top = MultiService()

    SecurityNotice("rcp-agent", options.credentials).setServiceParent(top)

    methods = MethodRegistry()
    factory = RpcFactory(reactor, methods, settings.rpc.limits(), _controllerConnected)
    rpc = ListeningService(
        "rcp-agent", settings.listen, secureServerFactory(factory, options.credentials), reactor
    )
    rpc.setName("rpc")
    rpc.setServiceParent(top)
    return top
