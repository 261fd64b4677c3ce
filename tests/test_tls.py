"""
Mutual TLS on the link, over real sockets on 127.0.0.1: who gets in, who
does not, and that no method runs for anyone refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import optionsForClientTLS
from twisted.trial.unittest import TestCase

from rcp import tls
from rcp.rpc import MethodRegistry, RpcFactory, RpcProtocol
from rcp.tls import Credentials

from .common import makeStation

reactor: Any = _reactor


def _credentials(station: Path, board: str) -> Credentials:
    return tls.loadCredentials(
        str(station / "ca.pem"), str(station / f"{board}.pem"), str(station / f"{board}.key")
    )


class MutualTlsTests(TestCase):
    def setUp(self) -> None:
        self.station = makeStation(self)
        self.calls: list[str] = []
        self.serverConnections: list[RpcProtocol] = []
        methods = MethodRegistry({"whoami": self._whoami})
        self.agentFactory = RpcFactory(reactor, methods, connected=self.serverConnections.append)

    def _whoami(self) -> str:
        self.calls.append("whoami")
        [proto] = self.serverConnections
        return proto.peerIdentity or "?"

    async def listen(
        self, board: str = "satellite-1", allowed: frozenset[str] = frozenset()
    ) -> int:
        credentials = replace(_credentials(self.station, board), allowedClients=allowed)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(
            tls.serverFactory(credentials, self.agentFactory)
        )
        self.addCleanup(port.stopListening)
        portNumber: int = port.getHost().port  # type: ignore[attr-defined]
        return portNumber

    async def connect(self, endpoint: Any) -> RpcProtocol:
        proto: RpcProtocol = await endpoint.connect(RpcFactory(reactor))
        self.addCleanup(_closeAndWait, proto)
        return proto

    async def callThrough(self, endpoint: Any) -> Any:
        """Connect, call whoami; the result or the exception."""
        try:
            proto = await self.connect(endpoint)
            return await proto.call("whoami", timeout=5)
        except Exception as e:
            return e

    def tcp(self, port: int) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    async def test_stationBoardsConnect(self) -> None:
        port = await self.listen()
        main = _credentials(self.station, "main")
        result = await self.callThrough(tls.clientEndpoint(main, "satellite-1", self.tcp(port)))
        self.assertEqual(result, "main")
        self.assertEqual(self.calls, ["whoami"])

    async def test_clientWithoutCertificateRefused(self) -> None:
        port = await self.listen()
        ca = _credentials(self.station, "main").ca
        endpoint = wrapClientTLS(optionsForClientTLS("satellite-1", trustRoot=ca), self.tcp(port))
        result = await self.callThrough(endpoint)
        self.assertIsInstance(result, Exception)
        self.assertEqual(self.calls, [])

    async def test_clientOfAnotherStationRefused(self) -> None:
        port = await self.listen()
        other = makeStation(self)
        # trusts our CA, but its own certificate comes from another CA
        stranger = tls.Credentials(
            _credentials(self.station, "main").ca,
            _credentials(other, "main").identity,
            True,
        )
        result = await self.callThrough(tls.clientEndpoint(stranger, "satellite-1", self.tcp(port)))
        self.assertIsInstance(result, Exception)
        self.assertEqual(self.calls, [])

    async def test_wrongAgentIdentityRefused(self) -> None:
        # The agent is satellite-1; the controller expects satellite-2.
        port = await self.listen("satellite-1")
        main = _credentials(self.station, "main")
        result = await self.callThrough(tls.clientEndpoint(main, "satellite-2", self.tcp(port)))
        self.assertIsInstance(result, Exception)
        self.assertEqual(self.calls, [])

    async def test_agentOfAnotherStationRefused(self) -> None:
        other = makeStation(self)
        self.station, ours = other, self.station
        port = await self.listen("satellite-1")  # other station's satellite-1
        main = _credentials(ours, "main")
        result = await self.callThrough(tls.clientEndpoint(main, "satellite-1", self.tcp(port)))
        self.assertIsInstance(result, Exception)
        self.assertEqual(self.calls, [])

    async def test_allowedClients(self) -> None:
        # Every board's certificate is of the station CA; with allowed_clients
        # only the main board may control a satellite.
        port = await self.listen(allowed=frozenset({"main"}))
        other = _credentials(self.station, "satellite-2")
        result = await self.callThrough(tls.clientEndpoint(other, "satellite-1", self.tcp(port)))
        self.assertIsInstance(result, Exception)
        self.assertEqual(self.calls, [])
        main = _credentials(self.station, "main")
        result = await self.callThrough(tls.clientEndpoint(main, "satellite-1", self.tcp(port)))
        self.assertEqual(result, "main")
        self.assertEqual(self.calls, ["whoami"])

    async def test_plainClientRefused(self) -> None:
        port = await self.listen()
        proto = await self.connect(self.tcp(port))
        result = await proto.call("whoami", timeout=5).addErrback(lambda f: f.value)
        self.assertIsInstance(result, Exception)
        self.assertEqual(self.calls, [])


async def _closeAndWait(proto: RpcProtocol) -> None:
    if proto.connected:
        done = proto.whenDisconnected()
        proto.abort()
        await done
