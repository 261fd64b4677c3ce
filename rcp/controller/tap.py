"""``twistd rcp-controller``: options and service tree of one satellite's controller."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger

from ..options import ConfigOptions
from ..rpc import MethodRegistry, RpcFactory, RpcProtocol
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
    ]
    optFlags = [
        [
            "plain",
            None,
            "plain TCP, unauthenticated: only for links to C++ boards (sets tls.mode: plain)",
        ],
    ]
    overrides = {"peer": "peer", "peer-name": "tls.peer_name"}
    flagOverrides = {"plain": ("tls.mode", "plain")}


Options.longdesc = " ".join((Options.__doc__ or "").split())


def _agentConnected(protocol: RpcProtocol) -> None:
    log.info("rcp-controller: connected to the agent at {peer}", peer=protocol.peer)


def makeService(options: Options, reactor: Any = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    settings: ControllerSettings = options.settings
    top = MultiService()

    SecurityNotice("rcp-controller", options.credentials, settings.peerName).setServiceParent(top)

    factory = RpcFactory(reactor, MethodRegistry(), settings.rpc.limits(), _agentConnected)
    endpoint = secureClientEndpoint(
        clientFromString(reactor, settings.peer), options.credentials, settings.peerName
    )
    rpc = ClientService(
        endpoint,
        factory,
        retryPolicy=backoffPolicy(
            initialDelay=settings.reconnect.initial_delay,
            maxDelay=settings.reconnect.max_delay,
        ),
        clock=reactor,
    )
    rpc.setName("rpc")
    rpc.setServiceParent(top)
    return top
