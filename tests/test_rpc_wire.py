"""
The exact bytes rcp reads and writes, as pinned by
``shared/docs/upstream-wire-protocol.md`` (msgpack-rpc as spoken by rpclib).

Every key case is written as hand-made hex (L{bytes.fromhex}), not through
C{msgpack.packb}, so that these tests pin the encoding itself: smallest
unsigned msgids, C{str} (never C{bin}) for text, C{bin} for bytes, nil for a
void result and rpclib's error texts word for word.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rcp.rpc import EncodeError, HandlerError, MethodRegistry, RemoteError, RpcProtocol


def h(text: str) -> bytes:
    """Bytes from hex written with spaces for readability."""
    return bytes.fromhex(text)


def str8(text: str) -> bytes:
    """
    A msgpack str 8 (C{d9 LEN DATA}), built by hand: rpclib's error texts are
    32 to 255 bytes long.
    """
    data = text.encode("utf-8")
    assert 32 <= len(data) < 256, len(data)
    return b"\xd9" + bytes([len(data)]) + data


# The texts of the wire document, written out here rather than taken from
# rcp.rpc.wire so that a change there shows up as a failure.
UNKNOWN_NOSUCH_2 = "rpclib: server could not find function 'nosuch' with argument count 2."
UNKNOWN_NOSUCH_0 = "rpclib: server could not find function 'nosuch' with argument count 0."
# rpclib swaps the two numbers: "Expected" is the count sent, "got" the
# count the function takes (add takes 2).
ADD_GOT_1 = (
    "rpclib: client error C0002: Function 'add' was called with an invalid number of"
    " arguments. Expected: 1, got: 2"
)
ADD_GOT_3 = (
    "rpclib: client error C0002: Function 'add' was called with an invalid number of"
    " arguments. Expected: 3, got: 2"
)
ADD_GOT_0 = (
    "rpclib: client error C0002: Function 'add' was called with an invalid number of"
    " arguments. Expected: 0, got: 2"
)
ECHO_GOT_2 = (
    "rpclib: client error C0002: Function 'echo' was called with an invalid number of"
    " arguments. Expected: 2, got: 1"
)
FAIL_NOPE = (
    "rpclib: function 'fail' (called with 1 arg(s)) threw an exception."
    " The exception contained this information: nope."
)

# Requests used in several tests.
VOID_1 = h("94 00 01 a4 766f6964 90")  # [0, 1, "void", []]
ADD_2_3 = h("94 00 02 a3 616464 92 02 03")  # [0, 2, "add", [2, 3]]


def _void() -> None:
    pass


def _add(a: int, b: int) -> int:
    return a + b


def _echo(value: Any) -> Any:
    return value


def _fail(reason: str) -> NoReturn:
    raise ValueError(reason)


def _refuse(error: Any) -> NoReturn:
    raise HandlerError(error)


class _Connected(SynchronousTestCase):
    """An L{RpcProtocol} on a L{StringTransport}, driven by a L{Clock}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.later: list[Deferred[Any]] = []
        self.notes: list[list[Any]] = []
        self.registry = MethodRegistry(
            {
                "void": _void,
                "add": _add,
                "echo": _echo,
                "fail": _fail,
                "refuse": _refuse,
                "later": self._later,
                "double": self._double,
                "note": self._note,
            }
        )
        self.transport = StringTransport()
        self.proto = RpcProtocol(self.clock, self.registry)
        self.proto.makeConnection(self.transport)

    def _later(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.later.append(d)
        return d

    async def _double(self, x: int) -> int:
        value: int = await self._later()
        return value * x

    def _note(self, *params: Any) -> None:
        self.notes.append(list(params))

    def feed(self, *reads: bytes) -> None:
        for data in reads:
            self.proto.dataReceived(data)

    def written(self) -> bytes:
        """What the protocol wrote since the last call."""
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def assertStillOpen(self) -> None:
        self.assertFalse(self.transport.disconnecting)
        self.assertTrue(self.proto.connected)


class ServerBytesTests(_Connected):
    """Requests and notifications coming in; what is answered, byte for byte."""

    def test_voidAnswersNil(self) -> None:
        """A handler without a result answers nil error, nil result."""
        self.feed(h("94 00 02 a4 766f6964 90"))  # [0, 2, "void", []]
        self.assertEqual(self.written(), h("94 01 02 c0 c0"))

    def test_result(self) -> None:
        self.feed(ADD_2_3)
        self.assertEqual(self.written(), h("94 01 02 c0 05"))

    def test_resultEncodings(self) -> None:
        """
        Results are packed in msgpack's smallest form: text as str (fixstr,
        str 8, str 16), bytes as bin, floats as float 64.
        """
        cases = [
            ("a2 6869", "a2 6869"),  # "hi"
            ("a2 c3a9", "a2 c3a9"),  # "é", UTF-8
            ("d9 28" + "78" * 40, "d9 28" + "78" * 40),  # 40 chars: str 8
            ("da 012c" + "79" * 300, "da 012c" + "79" * 300),  # 300 chars: str 16
            ("c4 02 00ff", "c4 02 00ff"),  # bin stays bin
            ("c4 00", "c4 00"),  # empty bin
            ("a0", "a0"),  # empty str
            ("c3", "c3"),  # true
            ("ff", "ff"),  # -1
            ("cd 012c", "cd 012c"),  # 300
            ("cf 0000000100000000", "cf 0000000100000000"),  # 2**32
            ("cb 3ff8000000000000", "cb 3ff8000000000000"),  # 1.5
            ("ca 3fc00000", "cb 3ff8000000000000"),  # float 32 in, float 64 out
            ("81 a1 61 93 01 c3 c0", "81 a1 61 93 01 c3 c0"),  # {"a": [1, true, nil]}
            ("90", "90"),  # []
        ]
        for value, result in cases:
            # [0, 9, "echo", [value]]
            self.feed(h("94 00 09 a4 6563686f 91" + value))
            self.assertEqual(self.written(), h("94 01 09 c0" + result), value)

    def test_msgidSmallestForm(self) -> None:
        """
        A response carries the request's msgid packed in the smallest
        unsigned form, however the request packed it.
        """
        cases = [
            ("01", "01"),  # 1
            ("7f", "7f"),  # 127: positive fixint
            ("cc 80", "cc 80"),  # 128: uint 8
            ("cc c8", "cc c8"),  # 200
            ("cd 012c", "cd 012c"),  # 300: uint 16
            ("cd ffff", "cd ffff"),  # 65535
            ("ce 00010000", "ce 00010000"),  # 65536: uint 32
            ("ce 00011170", "ce 00011170"),  # 70000
            ("ce ffffffff", "ce ffffffff"),  # 2**32 - 1
            ("00", "00"),  # 0
            ("cd 0001", "01"),  # 1 sent as uint 16
            ("ce 000000c8", "cc c8"),  # 200 sent as uint 32
            ("cf 0000000000011170", "ce 00011170"),  # 70000 sent as uint 64
            ("d0 05", "05"),  # 5 sent as int 8
        ]
        for msgidIn, msgidOut in cases:
            self.feed(h("94 00" + msgidIn + "a4 766f6964 90"))
            self.assertEqual(self.written(), h("94 01" + msgidOut + "c0 c0"), msgidIn)
        self.assertStillOpen()

    def test_unknownMethod(self) -> None:
        # [0, 3, "nosuch", [1, 2]]
        self.feed(h("94 00 03 a6 6e6f73756368 92 01 02"))
        self.assertEqual(self.written(), h("94 01 03") + str8(UNKNOWN_NOSUCH_2) + h("c0"))
        self.feed(h("94 00 04 a6 6e6f73756368 90"))
        self.assertEqual(self.written(), h("94 01 04") + str8(UNKNOWN_NOSUCH_0) + h("c0"))
        self.assertStillOpen()

    def test_wrongArgumentCount(self) -> None:
        self.feed(h("94 00 05 a3 616464 91 02"))  # add(2)
        self.assertEqual(self.written(), h("94 01 05") + str8(ADD_GOT_1) + h("c0"))
        self.feed(h("94 00 06 a3 616464 93 01 02 03"))  # add(1, 2, 3)
        self.assertEqual(self.written(), h("94 01 06") + str8(ADD_GOT_3) + h("c0"))
        self.feed(h("94 00 07 a3 616464 90"))  # add()
        self.assertEqual(self.written(), h("94 01 07") + str8(ADD_GOT_0) + h("c0"))
        # the wire document's capture: a one-argument echo called with 2
        self.feed(h("94 00 08 a4 6563686f 92 01 02"))  # echo(1, 2)
        self.assertEqual(self.written(), h("94 01 08") + str8(ECHO_GOT_2) + h("c0"))
        self.assertStillOpen()

    def test_nilParamsAreNoArguments(self) -> None:
        """rpclib reads nil params as an empty array."""
        self.feed(h("94 00 02 a4 766f6964 c0"))  # [0, 2, "void", nil]
        self.assertEqual(self.written(), h("94 01 02 c0 c0"))
        self.feed(h("94 00 03 a6 6e6f73756368 c0"))  # [0, 3, "nosuch", nil]
        self.assertEqual(self.written(), h("94 01 03") + str8(UNKNOWN_NOSUCH_0) + h("c0"))
        self.feed(h("94 00 07 a3 616464 c0"))  # [0, 7, "add", nil]
        self.assertEqual(self.written(), h("94 01 07") + str8(ADD_GOT_0) + h("c0"))
        self.feed(h("93 02 a4 6e6f7465 c0"))  # [2, "note", nil]
        self.assertEqual(self.notes, [[]])
        self.assertEqual(self.written(), b"")
        self.assertStillOpen()

    def test_handlerRaises(self) -> None:
        """
        An exception in a handler answers with rpclib's "threw an exception"
        text, which ends with the exception's message and a full stop.
        """
        self.feed(h("94 00 07 a4 6661696c 91 a4 6e6f7065"))  # fail("nope")
        self.assertEqual(self.written(), h("94 01 07") + str8(FAIL_NOPE) + h("c0"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertStillOpen()

    def test_handlerErrorUntouched(self) -> None:
        """A L{HandlerError}'s value is the error, exactly as given."""
        cases = [
            "92 01 a4 626f6f6d",  # [1, "boom"]: what neovim sends
            "a5 706c61696e",  # "plain"
            "81 a4 636f6465 07",  # {"code": 7}
            "c2",  # false
            "c4 01 00",  # bin
        ]
        for error in cases:
            self.feed(h("94 00 08 a6 726566757365 91" + error))  # refuse(error)
            self.assertEqual(self.written(), h("94 01 08" + error + "c0"), error)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_handlerErrorNoneIsStillAnError(self) -> None:
        """
        A handler that raises L{HandlerError} must not look successful: a
        response with a nil error is a success for every msgpack-rpc client
        (the wire document: rpclib treats "error not nil" as failure).
        """
        self.feed(h("94 00 08 a6 726566757365 91 c0"))  # refuse(nil)
        kind, msgid, error, result = msgpack.unpackb(self.written())
        self.assertEqual((kind, msgid, result), (1, 8, None))
        self.assertIsNotNone(error)

    def test_deferredHandlerAnswersLater(self) -> None:
        """
        A handler returning a L{Deferred} is answered when it fires; requests
        after it are answered first when they finish first.
        """
        self.feed(h("94 00 01 a5 6c61746572 90"))  # [0, 1, "later", []]
        self.assertEqual(self.written(), b"")
        self.feed(ADD_2_3)
        self.assertEqual(self.written(), h("94 01 02 c0 05"))
        self.later[0].callback("ok")
        self.assertEqual(self.written(), h("94 01 01 c0 a2 6f6b"))

    def test_asyncHandler(self) -> None:
        self.feed(h("94 00 0a a6 646f75626c65 91 15"))  # double(21)
        self.assertEqual(self.written(), b"")
        self.later[0].callback(2)
        self.assertEqual(self.written(), h("94 01 0a c0 2a"))

    def test_incomingNotification(self) -> None:
        """A notification calls its handler and is never answered."""
        self.feed(h("93 02 a4 6e6f7465 92 01 a1 78"))  # [2, "note", [1, "x"]]
        self.feed(h("93 02 a4 6e6f7465 90"))  # [2, "note", []]
        self.assertEqual(self.notes, [[1, "x"], []])
        self.assertEqual(self.written(), b"")
        self.assertStillOpen()

    def test_unknownNotificationIgnored(self) -> None:
        self.feed(h("93 02 a6 6e6f73756368 91 01"))  # [2, "nosuch", [1]]
        self.feed(h("93 02 a3 616464 91 01"))  # [2, "add", [1]]: wrong count
        self.assertEqual(self.written(), b"")
        self.assertStillOpen()
        self.feed(VOID_1)
        self.assertEqual(self.written(), h("94 01 01 c0 c0"))

    def test_twoMessagesInOneRead(self) -> None:
        self.feed(VOID_1 + ADD_2_3)
        self.assertEqual(self.written(), h("94 01 01 c0 c0  94 01 02 c0 05"))

    def test_messageSplitAcrossReads(self) -> None:
        """Every byte of a request in its own read: one answer, at the end."""
        for i in range(len(ADD_2_3) - 1):
            self.feed(ADD_2_3[i : i + 1])
            self.assertEqual(self.written(), b"")
        self.feed(ADD_2_3[-1:])
        self.assertEqual(self.written(), h("94 01 02 c0 05"))

    def test_messagesStraddlingReads(self) -> None:
        """One read ends a message and starts the next."""
        note = h("93 02 a4 6e6f7465 91 07")
        stream = VOID_1 + note + ADD_2_3
        self.feed(stream[:12], stream[12:20], stream[20:])
        self.assertEqual(self.written(), h("94 01 01 c0 c0  94 01 02 c0 05"))
        self.assertEqual(self.notes, [[7]])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClientBytesTests(_Connected):
    """Calls and notifications going out; how responses are matched."""

    def test_callWithoutParams(self) -> None:
        """No arguments: params is an empty array, never left out."""
        self.proto.call("void")
        self.assertEqual(self.written(), VOID_1)

    def test_params(self) -> None:
        self.proto.call("add", 2, 3)
        self.assertEqual(self.written(), h("94 00 01 a3 616464 92 02 03"))

    def test_msgidsStartAtOneAndCountUp(self) -> None:
        for expected in ("01", "02", "03"):
            self.proto.call("void")
            self.assertEqual(self.written(), h("94 00" + expected + "a4 766f6964 90"))

    def test_msgidsCountUpAfterResponses(self) -> None:
        """A msgid is not reused once its response arrived: the count goes on."""
        d = self.proto.call("void")
        self.feed(h("94 01 01 c0 c0"))
        self.assertIsNone(self.successResultOf(d))
        self.written()
        self.proto.call("void")
        self.assertEqual(self.written(), h("94 00 02 a4 766f6964 90"))

    def test_msgid200(self) -> None:
        """The 200th call of a connection has msgid 200, packed as uint 8."""
        for _ in range(199):
            self.proto.call("void")
        self.written()
        self.proto.call("void")
        self.assertEqual(self.written(), h("94 00 cc c8 a4 766f6964 90"))

    def _skipTo(self, msgid: int) -> None:
        # 2**32 calls take too long: set the counter directly (the one
        # private attribute these tests touch).
        self.proto._nextMsgid = msgid

    def test_msgidLargeForms(self) -> None:
        self._skipTo(65535)
        for expected in ("cd ffff", "ce 00010000"):
            self.proto.call("void")
            self.assertEqual(self.written(), h("94 00" + expected + "a4 766f6964 90"))
        self._skipTo(70000)
        self.proto.call("void")
        self.assertEqual(self.written(), h("94 00 ce 00011170 a4 766f6964 90"))

    def test_msgidWraps(self) -> None:
        """After 2**32 - 1 the count goes on modulo 2**32: 0, then 1."""
        self._skipTo(2**32 - 2)
        for expected in ("ce fffffffe", "ce ffffffff", "00", "01", "02"):
            self.proto.call("void")
            self.assertEqual(self.written(), h("94 00" + expected + "a4 766f6964 90"))

    def test_msgidWrapSkipsPendingCalls(self) -> None:
        """A msgid still waiting for its response is not handed out again."""
        first = self.proto.call("void")  # msgid 1 stays pending
        self._skipTo(2**32 - 1)
        for _ in range(3):
            self.proto.call("void")
        self.assertEqual(
            self.written(),
            VOID_1
            + h("94 00 ce ffffffff a4 766f6964 90")
            + h("94 00 00 a4 766f6964 90")
            + h("94 00 02 a4 766f6964 90"),
        )
        self.feed(h("94 01 01 c0 a1 31"))
        self.assertEqual(self.successResultOf(first), "1")

    def test_stringsAreStr(self) -> None:
        """Text always goes out as msgpack str (a0..bf, d9, da), never bin."""
        self.proto.call("echo", "hi")
        self.assertEqual(self.written(), h("94 00 01 a4 6563686f 91 a2 6869"))
        self.proto.call("echo", "é")
        self.assertEqual(self.written(), h("94 00 02 a4 6563686f 91 a2 c3a9"))
        self.proto.call("echo", "x" * 31)
        self.assertEqual(self.written(), h("94 00 03 a4 6563686f 91 bf" + "78" * 31))
        self.proto.call("echo", "x" * 32)
        self.assertEqual(self.written(), h("94 00 04 a4 6563686f 91 d9 20" + "78" * 32))
        self.proto.call("echo", "y" * 300)
        self.assertEqual(self.written(), h("94 00 05 a4 6563686f 91 da 012c" + "79" * 300))
        self.proto.call("m" * 40)
        self.assertEqual(self.written(), h("94 00 06 d9 28" + "6d" * 40 + "90"))
        self.proto.call("echo", {"k": ["v"]})
        self.assertEqual(self.written(), h("94 00 07 a4 6563686f 91 81 a1 6b 91 a1 76"))

    def test_bytesAreBin(self) -> None:
        self.proto.call("echo", b"\x00\xff")
        self.assertEqual(self.written(), h("94 00 01 a4 6563686f 91 c4 02 00ff"))
        self.proto.notify("echo", b"")
        self.assertEqual(self.written(), h("93 02 a4 6563686f 91 c4 00"))

    def test_otherParamEncodings(self) -> None:
        self.proto.call("echo", None, True, False, -1, 1.5, 2**32)
        self.assertEqual(
            self.written(),
            h("94 00 01 a4 6563686f 96 c0 c3 c2 ff cb 3ff8000000000000 cf 0000000100000000"),
        )

    def test_unencodableParams(self) -> None:
        """A call that cannot be encoded writes nothing and spoils nothing."""
        self.failureResultOf(self.proto.call("echo", "abc", object()), EncodeError)
        self.failureResultOf(self.proto.call("echo", 2**64), EncodeError)
        self.assertRaises(EncodeError, self.proto.notify, "echo", {1, 2})
        self.assertEqual(self.written(), b"")
        self.proto.call("void")
        self.assertEqual(self.written(), h("94 00 03 a4 766f6964 90"))
        self.assertEqual(self.proto.pendingCalls, 1)

    def test_result(self) -> None:
        d = self.proto.call("add", 2, 3)
        self.feed(h("94 01 01 c0 05"))
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(self.proto.pendingCalls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_voidResult(self) -> None:
        d = self.proto.call("void")
        self.feed(h("94 01 01 c0 c0"))
        self.assertIsNone(self.successResultOf(d))

    def test_resultDecoding(self) -> None:
        """str arrives as str, bin as bytes, float 32 and 64 as float."""
        ds = [self.proto.call("echo") for _ in range(4)]
        self.feed(
            h("94 01 01 c0 a2 c3a9")
            + h("94 01 02 c0 c4 02 00ff")
            + h("94 01 03 c0 ca 3fc00000")
            + h("94 01 04 c0 82 a1 61 90 a1 62 81 a1 63 c0")
        )
        self.assertEqual(
            [self.successResultOf(d) for d in ds],
            ["é", b"\x00\xff", 1.5, {"a": [], "b": {"c": None}}],
        )

    def test_responseMsgidAnyForm(self) -> None:
        """A response's msgid is matched by value, not by its encoding."""
        d = self.proto.call("add", 2, 3)
        self.feed(h("94 01 cd 0001 c0 05"))
        self.assertEqual(self.successResultOf(d), 5)

    def test_remoteErrorString(self) -> None:
        d = self.proto.call("nosuch")
        self.feed(h("94 01 01") + str8(UNKNOWN_NOSUCH_0) + h("c0"))
        error = self.failureResultOf(d, RemoteError).value
        assert isinstance(error, RemoteError)
        self.assertEqual(error.error, UNKNOWN_NOSUCH_0)
        self.assertEqual(str(error), UNKNOWN_NOSUCH_0)

    def test_remoteErrorAnyValue(self) -> None:
        """
        Any error value that is not nil is a failure, kept as sent: neovim's
        [type, message] array, a map, false, even with a result beside it.
        """
        cases: list[tuple[str, object]] = [
            ("92 01 a4 626f6f6d c0", [1, "boom"]),
            ("81 a4 636f6465 07 c0", {"code": 7}),
            ("c2 c0", False),
            ("a4 6f6f7073 05", "oops"),
        ]
        for msgid, (tail, expected) in enumerate(cases, start=1):
            d = self.proto.call("x")
            self.feed(h("94 01") + bytes([msgid]) + h(tail))
            error = self.failureResultOf(d, RemoteError).value
            assert isinstance(error, RemoteError)
            self.assertEqual(error.error, expected)
        self.assertStillOpen()

    def test_responsesInAnyOrder(self) -> None:
        """Responses are matched to calls by msgid, whatever their order."""
        d1 = self.proto.call("echo", "one")
        d2 = self.proto.call("echo", "two")
        d3 = self.proto.call("echo", "three")
        d4 = self.proto.call("echo", "four")
        self.feed(h("94 01 03 c0 a1 33") + h("94 01 01 c0 a1 31"))
        self.assertNoResult(d2)
        self.assertNoResult(d4)
        self.feed(h("94 01 04 a1 34 c0"))
        self.feed(h("94 01 02 c0 a1 32"))
        self.assertEqual(
            (self.successResultOf(d1), self.successResultOf(d2), self.successResultOf(d3)),
            ("1", "2", "3"),
        )
        error = self.failureResultOf(d4, RemoteError).value
        assert isinstance(error, RemoteError)
        self.assertEqual(error.error, "4")
        self.assertEqual(self.proto.pendingCalls, 0)

    def test_responseSplitAcrossReads(self) -> None:
        d = self.proto.call("echo", "x" * 300)
        response = h("94 01 01 c0 da 012c" + "78" * 300)
        self.feed(response[:1], response[1:6], response[6:200], response[200:-1])
        self.assertNoResult(d)
        self.feed(response[-1:])
        self.assertEqual(self.successResultOf(d), "x" * 300)

    def test_outgoingNotification(self) -> None:
        self.proto.notify("note", 1, "x")
        self.proto.notify("note")
        self.assertEqual(
            self.written(), h("93 02 a4 6e6f7465 92 01 a1 78") + h("93 02 a4 6e6f7465 90")
        )
        self.assertEqual(self.proto.pendingCalls, 0)
        # Notifications take no msgid: the first call still gets 1.
        self.proto.call("void")
        self.assertEqual(self.written(), VOID_1)

    def test_bothDirectionsInterleaved(self) -> None:
        """
        Our calls and the peer's requests share one connection; their msgids
        are independent counters.
        """
        d = self.proto.call("echo", "mine")
        self.assertEqual(self.written(), h("94 00 01 a4 6563686f 91 a4 6d696e65"))
        # The peer's request 1 and the response to our call 1, in one read.
        self.feed(h("94 00 01 a3 616464 92 02 03") + h("94 01 01 c0 a4 6d696e65"))
        self.assertEqual(self.written(), h("94 01 01 c0 05"))
        self.assertEqual(self.successResultOf(d), "mine")


class DisconnectTests(_Connected):
    def test_whenDisconnectedFiresWithReason(self) -> None:
        """
        L{RpcProtocol.whenDisconnected} I{fires} with the exception that ended
        the connection; it does not fail with it.
        """
        # (At commit a20a24f it ran d.callback(reason) with reason a Failure,
        # which makes the Deferred fail with ConnectionDone.)
        d = self.proto.whenDisconnected()
        self.assertNoResult(d)
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(self.successResultOf(d), ConnectionDone)
        # Asked afterwards: the same answer at once.
        self.assertIsInstance(self.successResultOf(self.proto.whenDisconnected()), ConnectionDone)

    def test_pendingCallsFailWithReason(self) -> None:
        d = self.proto.call("void")
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])
