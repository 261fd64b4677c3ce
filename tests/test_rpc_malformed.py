"""
Hostile and broken input: what an L{RpcProtocol} server does with every kind
of malformed message, slow peer and non-reading peer.

The rule under test: a request whose msgid can be read gets an error
response and the connection stays; anything else closes that one connection
with a log line naming the peer and the problem, after answering the
requests that came before it.  Either way the server goes
on answering well-formed requests: on the same connection when it stays
open, on a new one when it closed, and all along on a second connection.

Most cases run on L{StringTransport} with a L{Clock}; the last test case
repeats the essentials over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import msgpack
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.rpc import MethodRegistry, NotConnected, RpcFactory, RpcLimits, RpcProtocol

reactor: Any = _reactor

PEER = IPv4Address("TCP", "192.0.2.7", 50123)
PEER_NAME = "192.0.2.7:50123"
OTHER_PEER = IPv4Address("TCP", "192.0.2.8", 40000)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def warnings(events: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") is LogLevel.warn]


def observeLog(case: SynchronousTestCase) -> EventLoggingObserver:
    """Every log event while C{case} runs."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


class Connection:
    """One server-side connection of the factory, on a L{StringTransport}."""

    def __init__(self, factory: RpcFactory, peer: IPv4Address) -> None:
        self.transport = StringTransport(peerAddress=peer)
        self.proto = factory.buildProtocol(peer)
        self.proto.makeConnection(self.transport)

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        """What the server wrote since the last take."""
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def aborted(self) -> bool:
        return bool(self.transport.disconnected)

    def lose(self) -> None:
        """The reactor's part: report the aborted connection."""
        self.proto.connectionLost(Failure(ConnectionAborted()))


class MalformedBase(SynchronousTestCase):
    limits = RpcLimits()

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = observeLog(self)
        methods = MethodRegistry({"add": lambda a, b: a + b, "echo": lambda value: value})
        self.factory = RpcFactory(self.clock, methods, self.limits)
        self.conn = Connection(self.factory, PEER)
        self.bystander = Connection(self.factory, OTHER_PEER)

    def assertServed(self, conn: Connection, msgid: int = 77) -> None:
        """C{conn} answers a well-formed request."""
        conn.feed(pack([0, msgid, "add", [2, 3]]))
        self.assertEqual(conn.take(), pack([1, msgid, None, 5]))
        self.assertFalse(conn.closed)

    def assertErrorResponse(self, data: bytes, msgid: int, problem: str) -> None:
        """
        C{data} is answered with the malformed-request error for C{msgid}; the
        connection stays open and serves the next request.
        """
        self.conn.feed(data)
        text = f"rcp: malformed request: {problem}"
        self.assertEqual(self.conn.take(), pack([1, msgid, text, None]))
        self.assertFalse(self.conn.closed)
        self.assertEqual(
            warnings(self.events),
            [f"{PEER_NAME}: malformed request {msgid} answered with an error: {problem}"],
        )
        self.assertServed(self.conn)
        self.assertServed(self.bystander)

    def assertClosed(self, data: bytes, problem: str, answers: bytes = b"") -> None:
        """
        C{data} closes the connection at once, with C{answers} only, and the
        log names the peer and the problem; a new connection is served.
        """
        self.conn.feed(data)
        self.assertConnectionClosed(problem, answers=answers)

    def assertConnectionClosed(
        self, problem: str, prefix: bool = False, answers: bytes = b""
    ) -> None:
        """
        The connection is closed after C{answers} (nothing else is written),
        with one log line; with C{prefix}, C{problem} is how that line's
        problem text starts.
        """
        self.assertEqual(self.conn.take(), answers)
        self.assertTrue(self.conn.closed)
        [warning] = warnings(self.events)
        expected = f"{PEER_NAME}: protocol violation, closing the connection: {problem}"
        if prefix:
            self.assertTrue(warning.startswith(expected), warning)
        else:
            self.assertEqual(warning, expected)
        # Whatever else arrives before the close completes is ignored.
        self.conn.feed(pack([0, 78, "add", [1, 1]]))
        self.assertEqual(self.conn.take(), b"")
        self.conn.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertServed(Connection(self.factory, PEER))
        self.assertServed(self.bystander)


class NotMsgpackTests(MalformedBase):
    def test_strayByte(self) -> None:
        """0xc1 is no msgpack type: the stream cannot be cut into messages."""
        self.assertClosed(h("c1"), "not a msgpack stream (FormatError)")

    def test_strayByteAfterAGoodRequest(self) -> None:
        self.assertServed(self.conn)
        self.assertClosed(h("c1 94 00 05 a3 616464 92 01 02"), "not a msgpack stream (FormatError)")

    def test_deepNesting(self) -> None:
        """Nesting deeper than msgpack's stack (1024) cannot be framed."""
        self.assertClosed(h("91") * 2000 + h("01"), "not a msgpack stream (StackError)")


class SameReadTests(MalformedBase):
    """
    Well-formed requests and then malformed bytes in one read: the requests
    are answered before the connection closes (rpclib peers write a request
    and whatever follows it in one segment).
    """

    limits = RpcLimits(writeStallTimeout=60)

    def setUp(self) -> None:
        super().setUp()
        self.later: list[Deferred[Any]] = []
        self.factory.methods.register("later", self._later)

    def _later(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.later.append(d)
        return d

    def test_requestThenStrayByte(self) -> None:
        self.assertClosed(
            pack([0, 5, "add", [1, 2]]) + h("c1"),
            "not a msgpack stream (FormatError)",
            answers=pack([1, 5, None, 3]),
        )

    def test_requestsThenDeepNesting(self) -> None:
        self.assertClosed(
            pack([0, 5, "add", [1, 2]]) + pack([0, 6, "echo", ["x"]]) + h("91") * 2000,
            "not a msgpack stream (StackError)",
            answers=pack([1, 5, None, 3]) + pack([1, 6, None, "x"]),
        )

    def test_requestThenBadShape(self) -> None:
        """What follows the bad message in the same read is not handled."""
        self.assertClosed(
            pack([0, 5, "add", [1, 2]]) + pack([3, 1, "add", []]) + pack([0, 6, "add", [3, 4]]),
            "unknown message type 3",
            answers=pack([1, 5, None, 3]),
        )

    def test_malformedRequestThenStrayByte(self) -> None:
        """A malformed request with a msgid is answered too (with its error)."""
        problem = "request has 3 elements instead of 4"
        self.conn.feed(pack([0, 5, "add"]) + h("c1"))
        self.assertEqual(self.conn.take(), pack([1, 5, f"rcp: malformed request: {problem}", None]))
        self.assertTrue(self.conn.closed)

    def test_laterAnswersComeBeforeTheClose(self) -> None:
        """A handler answering later: the close waits for its answer."""
        self.conn.feed(
            pack([0, 5, "later", []]) + pack([0, 6, "add", [1, 2]]) + pack([0, 7, "later", []])
        )
        self.assertEqual(self.conn.take(), pack([1, 6, None, 3]))
        self.conn.feed(h("c1"))
        self.assertFalse(self.conn.closed)
        self.later[1].callback("second")
        self.assertEqual(self.conn.take(), pack([1, 7, None, "second"]))
        self.assertFalse(self.conn.closed)
        self.later[0].callback("first")
        self.assertEqual(self.conn.take(), pack([1, 5, None, "first"]))
        self.assertTrue(self.conn.closed)
        self.assertEqual(
            warnings(self.events),
            [
                f"{PEER_NAME}: protocol violation, closing the connection:"
                " not a msgpack stream (FormatError)"
            ],
        )
        # no more requests are taken, and no calls made
        self.conn.feed(pack([0, 8, "add", [1, 1]]))
        self.assertEqual(self.conn.take(), b"")
        self.conn.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeAfterViolationHasADeadline(self) -> None:
        """An answer that never comes: the connection is aborted in the end."""
        self.conn.feed(pack([0, 5, "later", []]) + h("c1"))
        self.assertFalse(self.conn.closed)
        self.clock.advance(self.limits.writeStallTimeout - 0.1)
        self.assertFalse(self.conn.closed)
        self.clock.advance(0.1)
        self.assertTrue(self.conn.aborted)
        self.conn.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.later[0].callback("too late")
        self.assertEqual(self.conn.take(), b"")

    def test_noCallsWhileClosing(self) -> None:
        self.conn.feed(pack([0, 5, "later", []]) + h("c1"))
        self.failureResultOf(self.conn.proto.call("ping"), NotConnected)
        self.assertRaises(NotConnected, self.conn.proto.notify, "ping")
        self.assertEqual(self.conn.take(), b"")


class ShapeTests(MalformedBase):
    def test_integer(self) -> None:
        self.assertClosed(h("05"), "message is not a non-empty array but an integer")

    def test_map(self) -> None:
        self.assertClosed(pack({"a": 1}), "message is not a non-empty array but a map")

    def test_string(self) -> None:
        self.assertClosed(pack("hello"), "message is not a non-empty array but a string")

    def test_emptyArray(self) -> None:
        self.assertClosed(h("90"), "message is not a non-empty array but an array")

    def test_typeString(self) -> None:
        self.assertClosed(pack(["0", 1, "add", []]), "message type is a string, not an integer")

    def test_typeBool(self) -> None:
        self.assertClosed(pack([True, 1, "add", []]), "message type is a boolean, not an integer")

    def test_typeThree(self) -> None:
        self.assertClosed(pack([3, 1, "add", []]), "unknown message type 3")

    def test_typeNegative(self) -> None:
        self.assertClosed(pack([-1, 1, "add", []]), "unknown message type -1")


class RequestTests(MalformedBase):
    def test_errorResponseBytes(self) -> None:
        """The error response, byte for byte: [1, 7, "rcp: ...", nil]."""
        self.conn.feed(h("93 00 07 a3 616464"))  # [0, 7, "add"]
        text = b"rcp: malformed request: request has 3 elements instead of 4"
        self.assertEqual(self.conn.take(), h("94 01 07 d9") + bytes([len(text)]) + text + h("c0"))
        self.assertServed(self.conn)

    def test_threeElements(self) -> None:
        self.assertErrorResponse(pack([0, 7, "add"]), 7, "request has 3 elements instead of 4")

    def test_fiveElements(self) -> None:
        self.assertErrorResponse(
            pack([0, 8, "add", [1, 2], "extra"]), 8, "request has 5 elements instead of 4"
        )

    def test_twoElements(self) -> None:
        self.assertErrorResponse(pack([0, 6]), 6, "request has 2 elements instead of 4")

    def test_shortWithoutMsgid(self) -> None:
        self.assertClosed(pack([0]), "request has 1 elements instead of 4")

    def test_msgidNegative(self) -> None:
        self.assertClosed(
            pack([0, -1, "add", [1, 2]]), "request msgid -1 is not an unsigned 32-bit integer"
        )

    def test_msgidTooLarge(self) -> None:
        self.assertClosed(
            pack([0, 2**32, "add", [1, 2]]),
            "request msgid 4294967296 is not an unsigned 32-bit integer",
        )

    def test_msgidLargest(self) -> None:
        """2**32 - 1 is still a msgid."""
        self.conn.feed(pack([0, 2**32 - 1, "add", [1, 2]]))
        self.assertEqual(self.conn.take(), pack([1, 2**32 - 1, None, 3]))
        self.assertServed(self.conn)

    def test_msgidFloat(self) -> None:
        self.assertClosed(
            pack([0, 1.0, "add", [1, 2]]), "request msgid 1.0 is not an unsigned 32-bit integer"
        )

    def test_msgidString(self) -> None:
        self.assertClosed(
            pack([0, "1", "add", [1, 2]]), "request msgid '1' is not an unsigned 32-bit integer"
        )

    def test_msgidBool(self) -> None:
        self.assertClosed(
            pack([0, True, "add", [1, 2]]), "request msgid True is not an unsigned 32-bit integer"
        )

    def test_msgidDeeplyNested(self) -> None:
        """A msgid nested a thousand arrays deep is described briefly."""
        self.assertClosed(
            h("94 00") + h("91") * 1000 + h("01 a3 616464 90"),
            "request msgid [[[[...]]]] is not an unsigned 32-bit integer",
        )

    def test_methodInteger(self) -> None:
        self.assertErrorResponse(
            pack([0, 9, 5, [1, 2]]), 9, "request method name is an integer, not a string"
        )

    def test_methodBinaryIsReadAsText(self) -> None:
        # rpclib (msgpack-c) reads bin and str names alike; pynvim sends bin.
        self.conn.feed(pack([0, 9, b"add", [1, 2]]))
        self.assertEqual(self.conn.take(), pack([1, 9, None, 3]))
        self.assertServed(self.conn)

    def test_methodBinaryNotUtf8(self) -> None:
        self.assertErrorResponse(
            pack([0, 9, b"\xffadd", [1, 2]]), 9, "request method name is binary, not a string"
        )

    def test_methodNil(self) -> None:
        self.assertErrorResponse(
            pack([0, 9, None, [1, 2]]), 9, "request method name is nil, not a string"
        )

    def test_paramsMap(self) -> None:
        self.assertErrorResponse(
            pack([0, 9, "add", {"a": 1}]), 9, "request params are a map, not an array"
        )

    def test_paramsNil(self) -> None:
        """rpclib reads nil params as no arguments."""
        self.conn.feed(pack([0, 9, "add", None]) + pack([0, 10, "nosuch", None]))
        self.assertEqual(
            self.conn.take(),
            pack(
                [
                    1,
                    9,
                    "rpclib: client error C0002: Function 'add' was called with an"
                    " invalid number of arguments. Expected: 0, got: 2",
                    None,
                ]
            )
            + pack(
                [
                    1,
                    10,
                    "rpclib: server could not find function 'nosuch' with argument count 0.",
                    None,
                ]
            ),
        )
        self.assertEqual(warnings(self.events), [])
        self.assertServed(self.conn)

    def test_paramsString(self) -> None:
        self.assertErrorResponse(
            pack([0, 9, "add", "12"]), 9, "request params are a string, not an array"
        )

    def test_methodInvalidUtf8(self) -> None:
        self.assertErrorResponse(
            h("94 00 0a a2 fffe 90"),
            10,
            "message cannot be decoded (UnicodeDecodeError: 'utf-8' codec can't decode byte"
            " 0xff in position 0: invalid start byte)",
        )

    def test_paramsInvalidUtf8(self) -> None:
        self.assertErrorResponse(
            h("94 00 0b a4 6563686f 91 a3 61ff62"),
            11,
            "message cannot be decoded (UnicodeDecodeError: 'utf-8' codec can't decode byte"
            " 0xff in position 1: invalid start byte)",
        )

    def test_invalidUtf8InFiveElements(self) -> None:
        """The msgid is read even when the request has the wrong size too."""
        self.assertErrorResponse(
            h("95 00 0c a2 fffe 90 c0"),
            12,
            "message cannot be decoded (UnicodeDecodeError: 'utf-8' codec can't decode byte"
            " 0xff in position 0: invalid start byte)",
        )

    def test_unhashableMapKey(self) -> None:
        """{[1]: 2} in the params: a valid msgpack map no Python dict can hold."""
        self.assertErrorResponse(
            h("94 00 0d a4 6563686f 91 81 91 01 02"),
            13,
            "message cannot be decoded (TypeError: unhashable type: 'list')",
        )

    def test_badTimestamp(self) -> None:
        """An ext -1 (timestamp) of a length msgpack refuses."""
        self.conn.feed(h("94 00 0e a4 6563686f 91 d4 ff 00"))
        [kind, msgid, error, result] = msgpack.unpackb(self.conn.take())
        self.assertEqual((kind, msgid, result), (1, 14, None))
        self.assertTrue(error.startswith("rcp: malformed request: message cannot be decoded ("))
        self.assertServed(self.conn)

    def test_deepParamsAreFine(self) -> None:
        """Nesting msgpack can frame is no problem: it is echoed back."""
        # as deep as this msgpack packs: up to 1.1 (scarthgap's 1.0.7,
        # whinlatter's 1.1.2) it stops at 511 levels
        depth = 900 if msgpack.version >= (1, 2) else 500
        deep: list[Any] = [1]
        for _ in range(depth):
            deep = [deep]
        self.conn.feed(pack([0, 15, "echo", [deep]]))
        self.assertEqual(self.conn.take(), pack([1, 15, None, deep]))
        self.assertServed(self.conn)

    def test_unknownExtTypeIsAValue(self) -> None:
        ext = msgpack.ExtType(5, b"xy")
        self.conn.feed(pack([0, 16, "echo", [ext]]))
        self.assertEqual(self.conn.take(), pack([1, 16, None, ext]))
        self.assertServed(self.conn)


class ResponseTests(MalformedBase):
    def test_unknownMsgid(self) -> None:
        self.assertClosed(
            pack([1, 99, None, "surprise"]), "response to msgid 99, which was never sent"
        )

    def test_threeElements(self) -> None:
        self.assertClosed(pack([1, 1, None]), "response has 3 elements instead of 4")

    def test_badMsgid(self) -> None:
        self.assertClosed(
            pack([1, "x", None, None]), "response msgid 'x' is not an unsigned 32-bit integer"
        )

    def test_invalidUtf8(self) -> None:
        """A response that cannot be decoded has no msgid to answer: close."""
        self.assertClosed(
            h("94 01 01 c0 a1 ff"),
            "message cannot be decoded (UnicodeDecodeError: 'utf-8' codec can't decode byte"
            " 0xff in position 0: invalid start byte)",
        )

    def test_pendingCallFailsWhenClosed(self) -> None:
        """A malformed response closes the connection: our pending call fails."""
        d = self.conn.proto.call("ping")
        self.assertEqual(self.conn.take(), pack([0, 1, "ping", []]))
        self.conn.feed(pack([1, 1]))
        self.assertNoResult(d)
        self.assertConnectionClosed("response has 2 elements instead of 4")
        self.failureResultOf(d, ConnectionAborted)


class NotificationTests(MalformedBase):
    def test_twoElements(self) -> None:
        self.assertClosed(pack([2, "add"]), "notification has 2 elements instead of 3")

    def test_fourElements(self) -> None:
        self.assertClosed(pack([2, "add", [], 1]), "notification has 4 elements instead of 3")

    def test_methodInteger(self) -> None:
        self.assertClosed(pack([2, 5, []]), "notification method name is an integer, not a string")

    def test_paramsMap(self) -> None:
        self.assertClosed(pack([2, "add", {}]), "notification params are a map, not an array")


class SizeTests(MalformedBase):
    limits = RpcLimits(maxMessageSize=64)

    def test_atTheLimit(self) -> None:
        message = pack([0, 20, "echo", ["x" * 53]])
        self.assertEqual(len(message), 64)
        self.conn.feed(message)
        self.assertEqual(self.conn.take(), pack([1, 20, None, "x" * 53]))
        self.assertServed(self.conn)

    def test_completeOversizedMessage(self) -> None:
        message = pack([0, 20, "echo", ["x" * 54]])
        self.assertClosed(message, "message of 65 bytes is larger than the limit of 64 bytes")

    def test_oversizedMessageStillArriving(self) -> None:
        """The limit applies before the message is complete."""
        message = pack([0, 20, "echo", ["x" * 1000]])
        self.conn.feed(message[:64])
        self.assertFalse(self.conn.closed)
        self.assertClosed(message[64:65], "message larger than the limit of 64 bytes")

    def test_oversizedAfterGoodMessages(self) -> None:
        self.conn.feed(pack([0, 21, "add", [1, 2]]) + pack([0, 22, "add", [3, 4]]))
        self.assertEqual(self.conn.take(), pack([1, 21, None, 3]) + pack([1, 22, None, 7]))
        message = pack([0, 23, "echo", ["y" * 100]])
        self.assertClosed(
            message, f"message of {len(message)} bytes is larger than the limit of 64 bytes"
        )

    def test_manySmallMessagesInOneRead(self) -> None:
        """A long read of small messages is not one large message."""
        data = b"".join(pack([0, i, "add", [i, 1]]) for i in range(50000))
        self.conn.feed(data)
        self.assertEqual(
            self.conn.take(), b"".join(pack([1, i, None, i + 1]) for i in range(50000))
        )
        self.assertFalse(self.conn.closed)

    def _declaredHuge(self, header: bytes) -> None:
        """
        A header announcing 2**32-1 elements or bytes: nothing is allocated
        for it; the message waits like any other and the size limit ends it.
        """
        self.conn.feed(header)
        self.assertEqual(self.conn.take(), b"")
        self.assertFalse(self.conn.closed)
        self.assertServed(self.bystander)
        self.conn.feed(b"\x00" * (64 - len(header)))
        self.assertFalse(self.conn.closed)
        self.assertClosed(b"\x00", "message larger than the limit of 64 bytes")

    def test_hugeArray(self) -> None:
        self._declaredHuge(h("dd ffffffff"))

    def test_hugeMap(self) -> None:
        self._declaredHuge(h("df ffffffff"))

    def test_hugeString(self) -> None:
        self._declaredHuge(h("db ffffffff"))

    def test_hugeBinary(self) -> None:
        self._declaredHuge(h("c6 ffffffff"))

    def test_hugeExt(self) -> None:
        self._declaredHuge(h("c9 fffffffe 01"))

    def test_hugestExt(self) -> None:
        """
        msgpack's skip() takes C{c9 ffffffff} (ext 32 of 2**32-1 bytes) for a
        complete 5-byte object (its length plus the type byte overflows);
        decoding it fails, so it is one more undecodable message.
        """
        self.conn.feed(h("c9 ffffffff"))
        self.assertConnectionClosed("message cannot be decoded (ValueError: ", prefix=True)

    def test_hugestExtInRequest(self) -> None:
        """...and inside a request, the request is answered with an error."""
        self.conn.feed(h("94 00 19 a3 616464 c9 ffffffff"))
        [kind, msgid, error, result] = msgpack.unpackb(self.conn.take())
        self.assertEqual((kind, msgid, result), (1, 25, None))
        self.assertTrue(error.startswith("rcp: malformed request: message cannot be decoded ("))
        [warning] = warnings(self.events)
        self.assertTrue(
            warning.startswith(
                f"{PEER_NAME}: malformed request 25 answered with an error:"
                " message cannot be decoded (ValueError: "
            ),
            warning,
        )
        self.assertServed(self.conn)

    def test_hugeParamsInRequest(self) -> None:
        self._declaredHuge(h("94 00 18 a3 616464 dd ffffffff"))


class SlowPeerTests(MalformedBase):
    """frameTimeout: a started message must arrive within 30 s (the default)."""

    def test_hugeDeclaredLengthTimesOut(self) -> None:
        self.conn.feed(h("dd ffffffff"))
        self.clock.advance(29.9)
        self.assertFalse(self.conn.closed)
        self.clock.advance(0.1)
        self.assertConnectionClosed("a message stayed incomplete for 30 s (5 bytes received)")

    def test_byteAMinute(self) -> None:
        self.conn.feed(b"\x94")
        self.clock.advance(60)
        self.assertConnectionClosed("a message stayed incomplete for 30 s (1 bytes received)")

    def test_byteEveryTenSeconds(self) -> None:
        """Bytes that do not finish the message do not buy more time."""
        message = pack([0, 30, "add", [1, 2]])
        for byte in message[:3]:
            self.conn.feed(bytes([byte]))
            self.clock.advance(10)
        self.assertConnectionClosed("a message stayed incomplete for 30 s (3 bytes received)")

    def test_slowButSteady(self) -> None:
        """A peer finishing a message every 20 s, in halves, is never cut off."""
        for msgid in range(10):
            message = pack([0, msgid, "add", [msgid, 1]])
            self.conn.feed(message[:4])
            self.clock.advance(10)
            self.conn.feed(message[4:])
            self.clock.advance(10)
            self.assertEqual(self.conn.take(), pack([1, msgid, None, msgid + 1]))
        self.assertFalse(self.conn.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pipelinedPartialsResetTheTimer(self) -> None:
        """Each read that completes a message gives the next one its own time."""
        stream = b"".join(pack([0, i, "add", [i, 0]]) for i in range(20))
        for offset in range(0, len(stream), 7):
            self.conn.feed(stream[offset : offset + 7])
            self.clock.advance(5)
        self.assertEqual(self.conn.take(), b"".join(pack([1, i, None, i]) for i in range(20)))
        self.assertFalse(self.conn.closed)


class NotReadingTests(MalformedBase):
    """
    writeStallTimeout: the transport pauses its producer (the protocol) when
    the peer leaves our writes unread; L{StringTransport} stands in for it.
    """

    limits = RpcLimits(writeStallTimeout=60, frameTimeout=30)

    def stall(self) -> None:
        self.assertIs(self.conn.transport.producer, self.conn.proto)
        self.conn.proto.pauseProducing()

    def test_stalledPeerIsCutOff(self) -> None:
        self.stall()
        self.assertEqual(self.conn.transport.producerState, "paused")  # not reading either
        self.clock.advance(59.9)
        self.assertFalse(self.conn.closed)
        self.clock.advance(0.1)
        self.assertTrue(self.conn.aborted)
        self.assertEqual(
            warnings(self.events),
            [f"{PEER_NAME}: peer has not read our data for 60 s; closing the connection"],
        )
        self.conn.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertServed(Connection(self.factory, PEER))
        self.assertServed(self.bystander)

    def test_requestsWaitWhilePaused(self) -> None:
        """
        Requests already read are not handled while paused (no more answers
        pile up) and are answered, in order, once the peer reads again.
        """
        self.stall()
        self.conn.feed(b"".join(pack([0, i, "add", [i, i]]) for i in range(3)))
        self.assertEqual(self.conn.take(), b"")
        self.clock.advance(30)
        self.conn.proto.resumeProducing()
        self.assertEqual(self.conn.transport.producerState, "producing")
        self.assertEqual(self.conn.take(), b"".join(pack([1, i, None, 2 * i]) for i in range(3)))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertServed(self.conn)

    def test_pauseStopsAtTheCurrentRequest(self) -> None:
        """A pause in the middle of one read stops handling right there."""
        requests = [pack([0, i, "add", [i, 1]]) for i in range(5)]
        self.conn.transport.write = self._pauseAfterTwo(self.conn.transport.write)  # type: ignore[method-assign]
        self.conn.feed(b"".join(requests))
        self.assertEqual(self.conn.take(), pack([1, 0, None, 1]) + pack([1, 1, None, 2]))
        self.conn.proto.resumeProducing()
        self.assertEqual(self.conn.take(), b"".join(pack([1, i, None, i + 1]) for i in range(2, 5)))

    def _pauseAfterTwo(self, write: Any) -> Any:
        count = [0]

        def pausingWrite(data: bytes) -> None:
            write(data)
            count[0] += 1
            if count[0] == 2:
                self.conn.proto.pauseProducing()

        return pausingWrite

    def test_noFrameTimeoutWhilePaused(self) -> None:
        """
        A peer cannot finish a message we do not read: only the stall
        deadline runs.
        """
        self.conn.feed(b"\x94\x00")
        self.stall()
        self.clock.advance(59)
        self.assertFalse(self.conn.closed)
        self.conn.proto.resumeProducing()
        self.clock.advance(29)
        self.assertFalse(self.conn.closed)
        self.clock.advance(1)
        self.assertTrue(self.conn.closed)
        self.assertEqual(
            warnings(self.events),
            [
                f"{PEER_NAME}: protocol violation, closing the connection:"
                " a message stayed incomplete for 30 s (2 bytes received)"
            ],
        )

    def test_violationWhilePausedAnswersFirst(self) -> None:
        """
        Requests read while the peer was not reading, then bad bytes: the
        requests are answered once it reads again, then the close comes.
        """
        self.stall()
        self.conn.feed(b"".join(pack([0, i, "add", [i, i]]) for i in range(3)) + h("c1"))
        self.assertEqual(self.conn.take(), b"")
        self.assertFalse(self.conn.closed)
        self.conn.proto.resumeProducing()
        self.assertEqual(self.conn.take(), b"".join(pack([1, i, None, 2 * i]) for i in range(3)))
        self.assertTrue(self.conn.closed)


class RawClient(Protocol):
    """A peer that writes what it is told and records what happens."""

    def __init__(self, readBack: bool = True) -> None:
        self.readBack = readBack
        self.received = bytearray()
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        host = cast(IPv4Address, self.transport.getHost())
        #: how the server names this client in its log
        self.name = f"{host.host}:{host.port}"
        if not self.readBack:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(reason.value or ConnectionDone())


class RealSocketTests(TestCase):
    """The same defences over TCP on 127.0.0.1, with short limits."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]
        self.events = observeLog(self)
        self.handled = 0
        self.buffered: list[int] = []
        self.servers: list[RpcProtocol] = []
        methods = MethodRegistry({"add": lambda a, b: a + b, "big": self._big, "slow": self._slow})
        limits = RpcLimits(frameTimeout=0.5, writeStallTimeout=0.5)
        factory = RpcFactory(reactor, methods, limits, connected=self.servers.append)
        port: IListeningPort = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
        self.good = cast(RpcProtocol, await self.endpoint.connect(RpcFactory(reactor)))
        self.addCleanup(self._close, self.good)

    async def _close(self, proto: RpcProtocol) -> None:
        if proto.connected:
            lost = proto.whenDisconnected()
            proto.abort()
            await lost

    def _slow(self) -> Deferred[str]:
        return deferLater(reactor, 0.1, lambda: "slow")

    def _big(self) -> str:
        # The server's own write buffer for this connection, before this
        # answer joins it (tcp.Connection internals).
        transport: Any = self.servers[-1].transport
        self.buffered.append(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)
        self.handled += 1
        return "x" * 16384

    async def raw(self, readBack: bool = True) -> RawClient:
        client = RawClient(readBack)
        await connectProtocol(self.endpoint, client)

        def close() -> Deferred[BaseException] | None:
            if client.lost.called:
                return None
            client.transport.abortConnection()  # type: ignore[union-attr]
            return client.lost

        self.addCleanup(close)
        return client

    async def serverSide(self) -> RpcProtocol:
        """The server's end of the latest connection, once accepted."""
        deadline = time.monotonic() + 5
        while len(self.servers) < 2 and time.monotonic() < deadline:
            await deferLater(reactor, 0.01)
        return self.servers[-1]

    async def goodCallWorks(self) -> None:
        self.assertEqual(await self.good.call("add", 20, 22, timeout=5), 42)

    def logged(self, text: str) -> bool:
        return text in warnings(self.events)

    async def test_garbageClosesOnlyThatConnection(self) -> None:
        raw = await self.raw()
        await self.serverSide()
        await self.goodCallWorks()
        raw.transport.write(b"\xc1")  # type: ignore[union-attr]
        await raw.lost.addTimeout(5, reactor)
        await self.goodCallWorks()
        self.assertTrue(
            self.logged(
                f"{raw.name}: protocol violation, closing the connection:"
                " not a msgpack stream (FormatError)"
            ),
            warnings(self.events),
        )
        self.assertEqual(raw.received, b"")

    async def test_answeredBeforeTheCloseOverTcp(self) -> None:
        """
        A request and garbage in one segment: the answer reaches the peer
        before the close (an abort would drop it from the write buffer).
        """
        raw = await self.raw()
        raw.transport.write(pack([0, 5, "add", [1, 2]]) + pack([0, 6, "slow", []]) + b"\xc1")  # type: ignore[union-attr]
        await raw.lost.addTimeout(5, reactor)
        self.assertEqual(bytes(raw.received), pack([1, 5, None, 3]) + pack([1, 6, None, "slow"]))
        self.assertTrue(
            self.logged(
                f"{raw.name}: protocol violation, closing the connection:"
                " not a msgpack stream (FormatError)"
            ),
            warnings(self.events),
        )
        await self.goodCallWorks()

    async def test_malformedRequestAnsweredOverTcp(self) -> None:
        raw = await self.raw()
        raw.transport.write(pack([0, 5, "add"]) + pack([0, 6, "add", [1, 2]]))  # type: ignore[union-attr]
        expected = pack(
            [1, 5, "rcp: malformed request: request has 3 elements instead of 4", None]
        ) + pack([1, 6, None, 3])
        deadline = time.monotonic() + 5
        while len(raw.received) < len(expected) and time.monotonic() < deadline:
            await deferLater(reactor, 0.01)
        self.assertEqual(bytes(raw.received), expected)
        self.assertFalse(raw.lost.called)

    async def test_silentPartialFrameIsDropped(self) -> None:
        raw = await self.raw()
        start = time.monotonic()
        raw.transport.write(h("94 00 01"))  # type: ignore[union-attr]
        while not raw.lost.called and time.monotonic() - start < 5:
            await self.goodCallWorks()  # served all along
            await deferLater(reactor, 0.1)
        await raw.lost.addTimeout(1, reactor)
        elapsed = time.monotonic() - start
        self.assertTrue(0.4 <= elapsed < 3, elapsed)
        self.assertTrue(
            self.logged(
                f"{raw.name}: protocol violation, closing the connection:"
                " a message stayed incomplete for 0.5 s (3 bytes received)"
            ),
            warnings(self.events),
        )
        await self.goodCallWorks()

    async def test_pipelinerThatNeverReadsIsCutOff(self) -> None:
        """
        3000 pipelined requests for 16 KiB answers each, never read: the
        server stops taking requests once its write buffer is full (it
        stays at Twisted's 64 KiB mark) and aborts after writeStallTimeout.
        """
        raw = await self.raw(readBack=False)
        server = await self.serverSide()
        lost = server.whenDisconnected()
        count = 3000
        raw.transport.write(b"".join(pack([0, i, "big", []]) for i in range(count)))  # type: ignore[union-attr]
        start = time.monotonic()
        while not lost.called and time.monotonic() - start < 10:
            await self.goodCallWorks()
            await deferLater(reactor, 0.1)
        # (the client, not reading, does not notice the abort yet)
        self.assertIsInstance(await lost.addTimeout(1, reactor), ConnectionAborted)
        self.assertLess(time.monotonic() - start, 5)
        self.assertGreater(self.handled, 0)
        self.assertLess(self.handled, count)
        self.assertLessEqual(max(self.buffered), 65536)
        self.assertTrue(
            any(
                w.endswith(": peer has not read our data for 0.5 s; closing the connection")
                for w in warnings(self.events)
            ),
            warnings(self.events),
        )
        await self.goodCallWorks()
