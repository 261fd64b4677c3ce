"""
Discovery by serial number, without a network: the records (everything
from the network is untrusted), the directory of adverts (clock-driven),
the endpoint that follows a board, the serial number's sources, the
settings and the certificate's second name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.certs import createStation
from rcp.config import ConfigError, load
from rcp.discovery.directory import Directory, IFinder, NotFound
from rcp.discovery.endpoint import DiscoveredEndpoint
from rcp.discovery.records import SERVICE_TYPE, Advert, AdvertError, checkSerial, parseAdvert
from rcp.discovery.serial import SerialError, readSerial
from rcp.settings import AgentSettings, ControllerSettings, endpointPort

SN = "SN0042"


def _props(**keys: str) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in keys.items()}


class RecordTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        advert = Advert(SN, 4129, ("10.0.0.2",), board="satellite-1", version="0.1.0")
        txt = {k.encode(): v.encode() for k, v in advert.txt().items()}
        self.assertEqual(parseAdvert(advert.instance, 4129, ["10.0.0.2"], txt), advert)
        self.assertEqual(advert.instance, f"rcp-{SN}.{SERVICE_TYPE}")

    def test_refused(self) -> None:
        name = f"rcp-{SN}.{SERVICE_TYPE}"
        good = _props(serial=SN)
        cases: list[tuple[str, Any, list[Any], Any]] = [
            (name, 4129, ["10.0.0.2"], {}),  # no serial
            (name, 4129, ["10.0.0.2"], _props(serial="../etc")),
            (name, 4129, ["10.0.0.2"], {b"serial": b"\xff\xfe"}),
            (name, 4129, ["10.0.0.2"], {b"serial": b"A" * 5000}),
            (f"rcp-OTHER.{SERVICE_TYPE}", 4129, ["10.0.0.2"], good),  # name and serial differ
            (name, 0, ["10.0.0.2"], good),
            (name, 70000, ["10.0.0.2"], good),
            (name, "4129", ["10.0.0.2"], good),
            (name, True, ["10.0.0.2"], good),
            (name, 4129, [], good),
            (name, 4129, ["not an address"], good),
            (name, 4129, ["224.0.0.251", "0.0.0.0"], good),  # nothing usable
            (name, 4129, ["10.0.0.2"], [1, 2]),
            (name, 4129, ["10.0.0.2"], {b"serial": 12}),
        ]
        for case in cases:
            with self.assertRaises(AdvertError, msg=repr(case)) as caught:
                parseAdvert(*case)
            self.assertLess(len(str(caught.exception)), 300)

    @given(
        name=st.one_of(st.text(max_size=300), st.just(f"rcp-{SN}.{SERVICE_TYPE}")),
        port=st.one_of(st.integers(), st.text(), st.none(), st.floats()),
        addresses=st.lists(
            st.one_of(st.text(max_size=50), st.binary(), st.integers()), max_size=20
        ),
        properties=st.one_of(
            st.dictionaries(st.binary(max_size=20), st.one_of(st.none(), st.binary(max_size=100))),
            st.dictionaries(st.just(b"serial"), st.binary(max_size=70)),
        ),
    )
    def test_anythingFromTheNetwork(
        self, name: str, port: Any, addresses: list[Any], properties: dict[bytes, Any]
    ) -> None:
        """Whatever a record holds, the result is an advert or an AdvertError."""
        try:
            advert = parseAdvert(name, port, addresses, properties)
        except AdvertError:
            return
        checkSerial(advert.serial)
        self.assertTrue(1 <= advert.port <= 65535)
        self.assertTrue(advert.addresses)

    def test_serialNumbers(self) -> None:
        for good in ("A", "SN-1.2_3", "0" * 64):
            self.assertEqual(checkSerial(good), good)
        for bad in ("", "-x", "a b", "x" * 65, "ä", "a/b", "a\0"):
            self.assertRaises(ValueError, checkSerial, bad)


class DirectoryTests(SynchronousTestCase):
    def test_waitsThenFinds(self) -> None:
        clock = Clock()
        directory = Directory(clock)
        found: list[Advert] = []
        d = directory.whereIs(SN, 5)
        d.addCallback(found.append)
        clock.advance(2)
        self.assertEqual(found, [])
        advert = Advert(SN, 4129, ("10.0.0.2",))
        directory.seen(advert)
        self.assertEqual(found, [advert])
        self.assertEqual(clock.getDelayedCalls(), [])
        # known now: answered at once
        self.assertEqual(self.successResultOf(directory.whereIs(SN, 5)), advert)

    def test_timeout(self) -> None:
        clock = Clock()
        directory = Directory(clock)
        d = directory.whereIs(SN, 5)
        clock.advance(5)
        failure = self.failureResultOf(d, NotFound)
        self.assertIn(SN, str(failure.value))
        self.assertEqual(directory._waiting, {})

    def test_cancel(self) -> None:
        clock = Clock()
        directory = Directory(clock)
        d = directory.whereIs(SN, 5)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(directory._waiting, {})

    def test_followsAndForgets(self) -> None:
        directory = Directory(Clock())
        directory.seen(Advert(SN, 4129, ("10.0.0.2",)))
        directory.seen(Advert(SN, 4129, ("10.0.0.7",)))
        self.assertEqual(self.successResultOf(directory.whereIs(SN, 1)).addresses, ("10.0.0.7",))
        directory.gone(SN)
        self.assertNotIn(SN, directory.adverts)


@implementer(IFinder)
class _Finder:
    def __init__(self, advert: Advert) -> None:
        self.advert = advert

    def whereIs(self, serial: str, timeout: float) -> Deferred[Advert]:
        return succeed(self.advert)


class EndpointTests(SynchronousTestCase):
    def test_connectsWhereTheBoardIsNow(self) -> None:
        reactor = MemoryReactorClock()
        finder = _Finder(Advert(SN, 4129, ("10.0.0.2",)))
        endpoint = DiscoveredEndpoint(reactor, finder, SN, 5)
        endpoint.connect(Factory.forProtocol(Protocol))
        finder.advert = Advert(SN, 4200, ("10.0.0.9",))
        endpoint.connect(Factory.forProtocol(Protocol))
        targets = [(host, port) for host, port, *_ in reactor.tcpClients]
        self.assertEqual(targets, [("10.0.0.2", 4129), ("10.0.0.9", 4200)])

    def test_nextAddressOnFailure(self) -> None:
        reactor = MemoryReactorClock()
        endpoint = DiscoveredEndpoint(
            reactor, _Finder(Advert(SN, 4129, ("10.0.0.2", "10.0.1.2"))), SN, 5
        )
        d = endpoint.connect(Factory.forProtocol(Protocol))
        self.assertNoResult(d)
        from twisted.internet.error import ConnectionRefusedError

        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
        self.assertEqual(reactor.tcpClients[-1][:2], ("10.0.1.2", 4129))


class SerialTests(SynchronousTestCase):
    def test_valueWins(self) -> None:
        self.assertEqual(readSerial(SN, "/nonexistent"), SN)

    def test_deviceTreeFile(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(SN.encode() + b"\0")
        self.assertEqual(readSerial(None, str(path)), SN)

    def test_problems(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(b"../../x\n")
        for value, where in ((None, None), (None, "/nonexistent/serial"), (None, str(path))):
            with self.assertRaises(SerialError) as caught:
                readSerial(value, where)
            self.assertNotIn("Traceback", str(caught.exception))
        self.assertRaises(SerialError, readSerial, "bad serial", None)


class SettingsTests(SynchronousTestCase):
    def _load(self, cls: type, text: str) -> Any:
        path = Path(self.mktemp())
        path.write_text(text)
        return load(cls, str(path))

    def test_controllerBySerial(self) -> None:
        settings = self._load(
            ControllerSettings,
            "tls: {mode: plain}\ndiscovery: {serial: SN0042}\n",
        )
        self.assertEqual(settings.discovery.serial, SN)
        self.assertEqual(settings.peerName, SN)

    def test_peerOrSerial(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self._load(ControllerSettings, "tls: {mode: plain}\n")
        self.assertIn("discovery.serial", str(caught.exception))
        with self.assertRaises(ConfigError):
            self._load(
                ControllerSettings,
                "tls: {mode: plain}\npeer: tcp:host=a:port=1\ndiscovery: {serial: X}\n",
            )
        with self.assertRaises(ConfigError) as caught:
            self._load(ControllerSettings, "tls: {mode: plain}\ndiscovery: {serial: 'a b'}\n")
        self.assertIn("discovery.serial", str(caught.exception))

    def test_agent(self) -> None:
        settings = self._load(
            AgentSettings, "tls: {mode: plain}\ndiscovery: {advertise: true, serial: SN0042}\n"
        )
        self.assertTrue(settings.discovery.advertise)
        with self.assertRaises(ConfigError):
            self._load(AgentSettings, "discovery: {addresses: [eth0]}\n")

    def test_endpointPort(self) -> None:
        self.assertEqual(endpointPort("tcp:4129"), 4129)
        self.assertEqual(endpointPort("tcp:port=4130:interface=10.0.0.2"), 4130)
        self.assertEqual(endpointPort("tcp:interface=10.0.0.2:port=4131"), 4131)
        self.assertIsNone(endpointPort("unix:/run/x"))


class CertificateTests(SynchronousTestCase):
    def test_serialIsASecondName(self) -> None:
        directory = Path(self.mktemp())
        createStation(directory, ["main", "satellite-1"], serials={"satellite-1": SN})
        cert = x509.load_pem_x509_certificate((directory / "satellite-1.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["satellite-1", SN])


class ModuleConfigTests(SynchronousTestCase):
    def test_serialNumberKey(self) -> None:
        from rcp.controller.everest_mqtt import serialOf

        self.assertIsNone(serialOf({"hostname": "satellite-1"}))
        self.assertIsNone(serialOf({"hostname": "satellite-1", "serial_number": ""}))
        self.assertEqual(serialOf({"serial_number": " SN0042 "}), SN)
        for bad in (12, "a b", "x" * 100, ["SN"]):
            self.assertRaises(ValueError, serialOf, {"serial_number": bad})
