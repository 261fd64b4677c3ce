"""
Compatibility with the C++ boards (remotechargeport 2026.02.0 with rpclib),
byte for byte, over real TCP connections on 127.0.0.1 (plain TCP: the C++
boards have no TLS).

 - B{A C++ controller against an rcp agent}: a raw client writes exactly
   what the upstream SatelliteController's rpclib client writes to a
   L{SatelliteBoard}, and checks the bytes that come back.
 - B{An rcp controller against a C++ agent}: a fake agent server answers as
   rpclib and the upstream SatelliteAgent do (no long poll) and checks the
   bytes an rcp L{ControllerLink} sends it.

The test's side of the wire uses nothing of rcp: every message is built by
hand from ``shared/docs/upstream-wire-protocol.md``, as hex literals for
the key messages and with this module's own small msgpack codec (the subset
msgpack-c writes: smallest forms, strings as C{str}) for the rest.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.controller.link import ControllerLink
from rcp.everest.interface import CommandError
from rcp.everest.sim.bus import SimModule
from rcp.station import MainSide, SatelliteBoard, StationOptions
from rcp.sync import SyncTimings

from .common import FULL_SESSION


class _Reactor(IReactorTCP, IReactorTime):
    """What these tests use of the global reactor (for the type checker)."""


reactor = cast(_Reactor, _globalReactor)

LOCALHOST = "127.0.0.1"

# -- a msgpack codec of our own ------------------------------------------------


class Incomplete(Exception):
    """The bytes end inside a message."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise Incomplete()
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def value(self) -> Any:
        b = self.take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return self.take(b & 0x1F).decode("utf-8")
        if 0x90 <= b <= 0x9F:
            return [self.value() for _ in range(b & 0x0F)]
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F)
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if 0xC4 <= b <= 0xC6:  # bin: returned as bytes, never as str
            return self.take(self.uint(1 << (b - 0xC4)))
        if b == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if b == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if 0xCC <= b <= 0xCF:
            return self.uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return int.from_bytes(self.take(1 << (b - 0xD0)), "big", signed=True)
        if 0xD9 <= b <= 0xDB:
            return self.take(self.uint(1 << (b - 0xD9))).decode("utf-8")
        if b in (0xDC, 0xDD):
            return [self.value() for _ in range(self.uint(2 if b == 0xDC else 4))]
        if b in (0xDE, 0xDF):
            return self.map(self.uint(2 if b == 0xDE else 4))
        raise ValueError(f"type byte {b:#04x} is never written by an rpclib peer")

    def map(self, n: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for _ in range(n):
            key = self.value()
            result[key] = self.value()
        return result


def unpackOne(data: bytes) -> tuple[Any, int]:
    """
    The first msgpack value in C{data} and how many bytes it takes.

    @raise Incomplete: C{data} ends inside it.
    """
    reader = _Reader(data)
    value = reader.value()
    return value, reader.pos


def unpack(data: bytes) -> Any:
    value, used = unpackOne(data)
    assert used == len(data), f"{len(data) - used} bytes after the value"
    return value


def _uint(n: int) -> bytes:
    """An unsigned integer in its smallest form, as msgpack-c packs it."""
    if n <= 0x7F:
        return bytes([n])
    if n <= 0xFF:
        return b"\xcc" + n.to_bytes(1, "big")
    if n <= 0xFFFF:
        return b"\xcd" + n.to_bytes(2, "big")
    if n <= 0xFFFFFFFF:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


def _sized(n: int, codes: tuple[int | None, int, int]) -> bytes:
    """The header of a str, bin, array or map too long for its fix form."""
    if codes[0] is not None and n <= 0xFF:
        return bytes([codes[0], n])
    if n <= 0xFFFF:
        return bytes([codes[1]]) + n.to_bytes(2, "big")
    return bytes([codes[2]]) + n.to_bytes(4, "big")


def pack(value: Any) -> bytes:
    """C{value} as msgpack-c writes it: smallest forms, text as C{str}."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if value >= 0:
            return _uint(value)
        if value >= -32:
            return bytes([value & 0xFF])
        for code, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if value >= -(1 << (8 * size - 1)):
                return bytes([code]) + value.to_bytes(size, "big", signed=True)
        raise OverflowError(value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        n = len(raw)
        if n <= 0x1F:
            return bytes([0xA0 | n]) + raw
        return _sized(n, (0xD9, 0xDA, 0xDB)) + raw
    if isinstance(value, bytes):
        return _sized(len(value), (0xC4, 0xC5, 0xC6)) + value
    if isinstance(value, list):
        items = b"".join(pack(v) for v in value)
        if len(value) <= 0x0F:
            return bytes([0x90 | len(value)]) + items
        return _sized(len(value), (None, 0xDC, 0xDD)) + items
    if isinstance(value, dict):
        pairs = b"".join(pack(k) + pack(v) for k, v in value.items())
        if len(value) <= 0x0F:
            return bytes([0x80 | len(value)]) + pairs
        return _sized(len(value), (None, 0xDE, 0xDF)) + pairs
    raise TypeError(f"cannot pack {type(value).__name__}")


def cppJson(value: Any) -> str:
    """What nlohmann::json::dump() writes: compact, keys sorted (std::map), UTF-8 raw."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- the wire document's messages, by hand -------------------------------------

# rpclib requests: 94 (array of 4), 00 (request), msgid, method, params
HERE_1 = bytes.fromhex("94 00 01 a9 695f616d5f68657265 90")  # [0, 1, "i_am_here", []]
READY_2 = bytes.fromhex("94 00 02 aa 695f616d5f7265616479 90")  # [0, 2, "i_am_ready", []]
RETRIEVE_3 = bytes.fromhex(  # [0, 3, "retrieve_vars_and_errors", []]
    "94 00 03 b8 72657472696576655f766172735f616e645f6572726f7273 90"
)
# responses: 94, 01 (response), msgid, error, result
FALSE_1 = bytes.fromhex("94 01 01 c0 c2")  # [1, 1, nil, false]
TRUE_1 = bytes.fromhex("94 01 01 c0 c3")  # [1, 1, nil, true]
NIL_2 = bytes.fromhex("94 01 02 c0 c0")  # [1, 2, nil, nil]

# Method names and params (hex), to follow "94 00 <msgid>".
I_AM_HERE = "a9 695f616d5f68657265 90"
I_AM_READY = "aa 695f616d5f7265616479 90"
EXIT = "a4 65786974 90"
RETRIEVE = "b8 72657472696576655f766172735f616e645f6572726f7273 90"
GET_EVSE = "b5 657673655f6d616e616765725f6765745f65767365 90"
PAUSE = "bb 657673655f6d616e616765725f70617573655f6368617267696e67 90"
RESUME = "bc 657673655f6d616e616765725f726573756d655f6368617267696e67 90"
BOOT_REASON = "b6 73797374656d5f6765745f626f6f745f726561736f6e 90"
IS_RESET_ALLOWED_SOFT = "b6 737974656d5f69735f72657365745f616c6c6f776564 91 a4 536f6674"
RESET_SOFT = "ab 737974656d5f7265736574 92 a4 536f6674 c2"  # ["Soft", false]
ENABLE_DISABLE = "bb 657673655f6d616e616765725f656e61626c655f64697361626c65"  # then params
AUTHORIZE_RESPONSE = "bf 657673655f6d616e616765725f617574686f72697a655f726573706f6e7365"
PUSH_VAR = "a8 707573685f766172"

# Results (hex), to follow "94 01 <msgid>".
NIL = "c0 c0"
TRUE = "c0 c3"
FALSE = "c0 c2"
POWER_UP = "c0 a7 506f7765725570"  # plain str "PowerUp", not JSON-quoted
REMOTE_RESET = "c0 ab 52656d6f74655265736574"  # "RemoteReset"
EMPTY_BATCH = "c0 b7 7b226572726f7273223a5b5d2c2276617273223a5b5d7d"  # {"errors":[],"vars":[]}
ACCEPTED_JSON = "c0 aa 22416363657074656422"  # "\"Accepted\"": a JSON string literal
STATUS_REJECTED = "c0 b5 7b22737461747573223a2252656a6563746564227d"  # {"status":"Rejected"}
STATUS_UNKNOWN = "c0 b4 7b22737461747573223a22556e6b6e6f776e227d"  # {"status":"Unknown"}
NO_MESSAGES = "c0 af 7b226d65737361676573223a5b5d7d"  # {"messages":[]}


def cppRequest(msgid: int, rest: str) -> bytes:
    """An rpclib request: C{rest} is the hex of the method name and params."""
    return bytes.fromhex("94 00") + _uint(msgid) + bytes.fromhex(rest)


def cppResponse(msgid: int, rest: str) -> bytes:
    """An rpclib response: C{rest} is the hex of the error and result."""
    return bytes.fromhex("94 01") + _uint(msgid) + bytes.fromhex(rest)


def notFound(name: str, argc: int) -> str:
    return f"rpclib: server could not find function '{name}' with argument count {argc}."


def wrongCount(name: str, sent: int, takes: int) -> str:
    """
    rpclib's C0002 text, with its numbers swapped: "Expected" is the count
    the caller sent, "got" the count the function takes.
    """
    return (
        f"rpclib: client error C0002: Function '{name}' was called with an invalid number"
        f" of arguments. Expected: {sent}, got: {takes}"
    )


TOKEN = {"authorization_type": "RFID", "id_token": {"type": "ISO14443", "value": "DEADBEEF"}}
ACCEPTED = {"authorization_status": "Accepted"}


# -- time ---------------------------------------------------------------------


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def waitFor(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait until C{condition()} holds, checking every few milliseconds."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await sleep(0.005)


# -- raw TCP peers ------------------------------------------------------------


@dataclass
class Frame:
    """One msgpack message as it crossed the wire."""

    raw: bytes
    message: Any
    at: float

    @property
    def msgid(self) -> int:
        msgid: int = self.message[1]
        return msgid


class WireLog(Protocol):
    """
    One end of a TCP connection: it writes exact bytes and cuts what it
    reads into msgpack messages, keeping each message's own bytes.
    """

    def __init__(self, onFrame: Callable[[WireLog, Frame], None] | None = None) -> None:
        self.onFrame = onFrame
        self.received = b""
        self.frames: list[Frame] = []
        self.open = False
        self.closedHere = False
        self.whenLost: Deferred[None] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        self.open = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._buffer += data
        while self._buffer:
            try:
                message, used = unpackOne(self._buffer)
            except Incomplete:
                return
            frame = Frame(self._buffer[:used], message, reactor.seconds())
            self._buffer = self._buffer[used:]
            self.frames.append(frame)
            if self.onFrame is not None:
                self.onFrame(self, frame)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open = False
        self.whenLost.callback(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.open and self.transport is not None:
            self.closedHere = True
            self.transport.loseConnection()

    def abort(self) -> None:
        if self.open and self.transport is not None:
            self.closedHere = True
            self.transport.abortConnection()  # type: ignore[attr-defined]


# -- a C++ controller (an rpclib client) -----------------------------------------


class CppController:
    """
    What the upstream SatelliteController's rpclib client writes: requests
    C{[0, msgid, name, params]} with msgids counted from 1; it matches
    responses by msgid, whatever their order.
    """

    def __init__(self, case: TestCase, peer: WireLog) -> None:
        self.case = case
        self.peer = peer
        self.nextMsgid = 1
        #: everything the polls returned, in order
        self.vars: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def send(self, data: bytes) -> int:
        """Write one request exactly; it must carry the next msgid."""
        message = unpack(data)
        self.case.assertEqual(message[:2], [0, self.nextMsgid], "rpclib counts msgids up from 1")
        self.nextMsgid += 1
        self.peer.write(data)
        msgid: int = message[1]
        return msgid

    def request(self, method: str, *params: Any) -> int:
        return self.send(pack([0, self.nextMsgid, method, list(params)]))

    def answered(self, msgid: int) -> Frame | None:
        for frame in self.peer.frames:
            if frame.message[:2] == [1, msgid]:
                return frame
        return None

    async def response(self, msgid: int, timeout: float = 5.0) -> Frame:
        await waitFor(lambda: self.answered(msgid) is not None, f"response {msgid}", timeout)
        frame = self.answered(msgid)
        assert frame is not None
        self.case.assertEqual(len(frame.message), 4)
        return frame

    async def exchange(self, data: bytes) -> Frame:
        """Send exact bytes, wait for their response."""
        return await self.response(self.send(data))

    async def call(self, method: str, *params: Any) -> Frame:
        return await self.response(self.request(method, *params))

    async def result(self, method: str, *params: Any) -> Any:
        """Call, and return the result of a successful response."""
        frame = await self.call(method, *params)
        self.case.assertIsNone(frame.message[2], f"{method} failed: {frame.message[2]!r}")
        return frame.message[3]

    async def poll(self) -> Frame:
        """One ``retrieve_vars_and_errors``, checked as the C++ controller reads it."""
        frame = await self.exchange(cppRequest(self.nextMsgid, RETRIEVE))
        self.collect(frame)
        return frame

    def collect(self, frame: Frame) -> dict[str, Any]:
        self.case.assertIsNone(frame.message[2])
        text = frame.message[3]
        self.case.assertIsInstance(text, str, "the batch is a JSON text in a msgpack str")
        batch = json.loads(text)
        self.case.assertEqual(text, cppJson(batch), "compact JSON, keys sorted as nlohmann does")
        self.case.assertEqual(sorted(batch), ["errors", "vars"])
        for entry in batch["vars"]:
            self.case.assertEqual(sorted(entry), ["interface", "value", "var"])
        for entry in batch["errors"]:
            self.case.assertEqual(sorted(entry), ["action", "error"])
            self.case.assertIn(entry["action"], ("raise", "clear"))
        self.vars.extend(batch["vars"])
        self.errors.extend(batch["errors"])
        result: dict[str, Any] = batch
        return result

    async def pollUntil(
        self, condition: Callable[[], bool], what: str, timeout: float = 5.0
    ) -> None:
        """Poll as upstream does (poll, publish, sleep 25 ms) until C{condition()} holds."""
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out after {timeout} s polling for {what}")
            await self.poll()
            if not condition():
                await sleep(0.025)

    def values(self, interface: str, var: str) -> list[Any]:
        return [v["value"] for v in self.vars if v["interface"] == interface and v["var"] == var]

    def sessionEvents(self) -> list[str]:
        return [event["event"] for event in self.values("evse_manager", "session_event")]


def satelliteOptions() -> StationOptions:
    """Idle polls held 0.2 s, a meter reading every 0.2 s, a quick reboot."""
    return StationOptions(satellites=1, holdTime=0.2, meterInterval=0.2, bootTime=0.2)


STARTUP_VARS = {
    "evse_id",
    "hw_capabilities",
    "supported_energy_transfer_modes",
    "waiting_for_external_ready",
    "limits",
    "ready",
}


class CodecTests(SynchronousTestCase):
    """This module's own msgpack codec against the hex of the wire document."""

    def test_literals(self) -> None:
        self.assertEqual(pack([0, 1, "i_am_here", []]), HERE_1)
        self.assertEqual(pack([0, 2, "i_am_ready", []]), READY_2)
        self.assertEqual(pack([0, 3, "retrieve_vars_and_errors", []]), RETRIEVE_3)
        self.assertEqual(pack([1, 1, None, False]), FALSE_1)
        self.assertEqual(pack([1, 2, None, None]), NIL_2)
        self.assertEqual(cppResponse(2, NIL), NIL_2)
        self.assertEqual(cppRequest(1, I_AM_HERE), HERE_1)
        self.assertEqual(unpack(cppRequest(7, RESET_SOFT)), [0, 7, "sytem_reset", ["Soft", False]])
        self.assertEqual(unpack(bytes.fromhex(EMPTY_BATCH)[1:]), '{"errors":[],"vars":[]}')

    def test_forms(self) -> None:
        for value, hexed in [
            (127, "7f"),
            (128, "cc 80"),
            (300, "cd 01 2c"),
            (70000, "ce 00 01 11 70"),
            (-1, "ff"),
            (-33, "d0 df"),
            ("x" * 32, "d9 20" + "78" * 32),
            (11000.0, "cb 40 c5 7c 00 00 00 00 00"),
            (b"\x01", "c4 01 01"),
            ({"a": 1}, "81 a1 61 01"),
        ]:
            self.assertEqual(pack(value), bytes.fromhex(hexed), value)
            self.assertEqual(unpack(bytes.fromhex(hexed)), value)
        self.assertRaises(Incomplete, unpackOne, bytes.fromhex("94 00 01"))


# -- 1. a C++ controller against an rcp agent ---------------------------------------


class CppControllerToRcpAgentTests(TestCase):
    """A SatelliteBoard running rcp's agent, driven with the upstream controller's bytes."""

    timeout = 20

    async def boot(self) -> SatelliteBoard:
        board = SatelliteBoard(
            reactor, "satellite-1", 1, credentials=None, options=satelliteOptions(), listen=True
        )
        await board.boot()
        self.peers: list[WireLog] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self.shutDown(board)))
        return board

    async def shutDown(self, board: SatelliteBoard) -> None:
        # Let a reset under way finish (the board boots again), then power off
        # before the peers go: a lost link must not start another reset.
        await waitFor(
            lambda: (
                not board.resetting and board.link.resetReason is None and not board.system.busy
            ),
            "the board to settle",
        )
        board.powerOff()
        for peer in self.peers:
            peer.abort()
        for peer in self.peers:
            await peer.whenLost

    async def connect(self, board: SatelliteBoard) -> CppController:
        peer = WireLog()
        await connectProtocol(TCP4ClientEndpoint(reactor, LOCALHOST, board.port), peer)
        self.peers.append(peer)
        return CppController(self, peer)

    async def synchronise(self, board: SatelliteBoard) -> CppController:
        """The upstream start-up: i_am_here (1) answered false, i_am_ready (2)."""
        cpp = await self.connect(board)
        self.assertEqual((await cpp.exchange(HERE_1)).raw, FALSE_1)
        self.assertEqual((await cpp.exchange(READY_2)).raw, NIL_2)
        return cpp

    async def test_onlyLinkMethodsBeforeHere(self) -> None:
        """
        Before the first ``i_am_here`` a tunnelled method does not exist:
        rpclib's "could not find function" error, word for word.
        """
        board = await self.boot()
        cpp = await self.connect(board)
        frame = await cpp.exchange(cppRequest(1, GET_EVSE))
        self.assertEqual(
            frame.raw,
            bytes.fromhex("94 01 01 d9 55")
            + b"rpclib: server could not find function 'evse_manager_get_evse'"
            + b" with argument count 0."
            + bytes.fromhex("c0"),
        )
        early: list[tuple[str, list[Any]]] = [
            ("retrieve_vars_and_errors", []),
            ("push_var", [cppJson({"interface": "auth", "value": {}, "var": "x"})]),
            ("sytem_is_reset_allowed", ["Soft"]),
            ("evse_manager_enable_disable", [1, cppJson({"enable_state": "Enable"})]),
        ]
        for method, params in early:
            frame = await cpp.call(method, *params)
            self.assertEqual(frame.message, [1, frame.msgid, notFound(method, len(params)), None])
        # and then they do
        self.assertEqual((await cpp.call("i_am_here")).raw, cppResponse(6, FALSE))
        frame = await cpp.exchange(cppRequest(7, GET_EVSE))
        self.assertIsNone(frame.message[2])

    async def test_handshake(self) -> None:
        """i_am_here -> false, i_am_ready -> nil, then polls answer JSON batches."""
        board = await self.boot()
        cpp = await self.connect(board)
        self.assertEqual((await cpp.exchange(HERE_1)).raw, FALSE_1)
        self.assertEqual((await cpp.exchange(READY_2)).raw, NIL_2)
        frame = await cpp.exchange(RETRIEVE_3)
        cpp.collect(frame)
        self.assertEqual(frame.raw[:4], bytes.fromhex("94 01 03 c0"))
        self.assertTrue(0xA0 <= frame.raw[4] <= 0xBF or frame.raw[4] in (0xD9, 0xDA, 0xDB))
        # The EVSE publishes its state once the board is ready; it all comes
        # through the polls.
        await cpp.pollUntil(
            lambda: STARTUP_VARS <= {v["var"] for v in cpp.vars}, "the EVSE's start-up vars"
        )
        self.assertEqual(cpp.values("evse_manager", "evse_id"), ["DE*RCP*ESATELLITE-1"])
        self.assertEqual(cpp.values("evse_manager", "ready"), [True])
        self.assertEqual(
            cpp.values("evse_manager", "supported_energy_transfer_modes"), [["AC_three_phase_core"]]
        )
        self.assertEqual(cpp.values("evse_manager", "waiting_for_external_ready"), [False])
        capabilities = cpp.values("evse_manager", "hw_capabilities")[0]
        self.assertEqual(capabilities["max_current_A_import"], 32.0)
        self.assertIsInstance(capabilities["max_current_A_import"], float)
        # a second i_am_ready is ignored: nil
        msgid = cpp.nextMsgid
        self.assertEqual(
            (await cpp.exchange(cppRequest(msgid, I_AM_READY))).raw, cppResponse(msgid, NIL)
        )
        # wrong argument counts of the link's own methods: rpclib's C0002 text
        frame = await cpp.call("i_am_here", 1)
        self.assertEqual(frame.message, [1, frame.msgid, wrongCount("i_am_here", 1, 0), None])
        frame = await cpp.call("push_var")
        self.assertEqual(frame.message, [1, frame.msgid, wrongCount("push_var", 0, 1), None])
        self.assertEqual(board.boots, 1)
        self.assertTrue(cpp.peer.open)

    async def test_wrongArgumentCountOfATunnelledMethod(self) -> None:
        """
        A tunnelled method called with the wrong number of arguments answers
        rpclib's C0002 text, as an rpclib server does.
        """
        board = await self.boot()
        cpp = await self.synchronise(board)
        calls: list[tuple[str, list[Any], int]] = [
            ("evse_manager_enable_disable", [1], 2),
            ("evse_manager_get_evse", [1], 0),
            ("sytem_reset", ["Soft"], 2),
            ("evse_manager_reserve", [], 1),
        ]
        for method, params, takes in calls:
            frame = await cpp.call(method, *params)
            self.assertEqual(
                frame.message,
                [1, frame.msgid, wrongCount(method, len(params), takes), None],
            )
        # the wire document's capture, byte for byte
        msgid = cpp.request("evse_manager_reserve")
        text = (
            b"rpclib: client error C0002: Function 'evse_manager_reserve' was called"
            b" with an invalid number of arguments. Expected: 0, got: 1"
        )
        self.assertEqual(
            (await cpp.response(msgid)).raw,
            cppResponse(msgid, "d9" + f"{len(text):02x}" + text.hex() + "c0"),
        )
        self.assertEqual(board.boots, 1)

    async def test_segmentation(self) -> None:
        """
        TCP keeps no message boundaries: two requests in one segment, and one
        request cut in pieces, are answered all the same.
        """
        board = await self.boot()
        cpp = await self.connect(board)
        cpp.peer.write(HERE_1 + READY_2)
        cpp.nextMsgid = 3
        self.assertEqual((await cpp.response(1)).raw, FALSE_1)
        self.assertEqual((await cpp.response(2)).raw, NIL_2)
        self.assertEqual(cpp.peer.received[: len(FALSE_1 + NIL_2)], FALSE_1 + NIL_2)
        request = cppRequest(3, GET_EVSE)
        for i in range(len(request)):
            cpp.peer.write(request[i : i + 1])
            await sleep(0)
        cpp.nextMsgid = 4
        frame = await cpp.response(3)
        self.assertEqual(frame.raw[:5], bytes.fromhex("94 01 03 c0 d9"))

    async def test_nilParamsAreNoArguments(self) -> None:
        """rpclib reads nil params as an empty array: the start-up works with them."""
        board = await self.boot()
        cpp = await self.connect(board)
        here = bytes.fromhex("94 00 01 a9 695f616d5f68657265 c0")  # [0, 1, "i_am_here", nil]
        self.assertEqual((await cpp.exchange(here)).raw, FALSE_1)
        ready = bytes.fromhex("94 00 02 aa 695f616d5f7265616479 c0")  # [0, 2, "i_am_ready", nil]
        self.assertEqual((await cpp.exchange(ready)).raw, NIL_2)
        frame = await cpp.exchange(cppRequest(3, PAUSE[:-2] + "c0"))  # pause_charging, nil
        self.assertEqual(frame.raw, cppResponse(3, FALSE))  # not charging
        frame = await cpp.exchange(cppRequest(4, "a6 6e6f73756368 c0"))  # [0, 4, "nosuch", nil]
        self.assertEqual(frame.message[2], notFound("nosuch", 0))
        self.assertTrue(cpp.peer.open)

    async def test_requestAndGarbageInOneRead(self) -> None:
        """
        A request and malformed bytes in the same segment: the request is
        answered, then the agent closes the connection.
        """
        board = await self.boot()
        cpp = await self.connect(board)
        cpp.peer.write(HERE_1 + bytes.fromhex("c1"))
        await cpp.peer.whenLost.addTimeout(5, reactor)
        self.assertFalse(cpp.peer.closedHere)
        self.assertEqual(cpp.peer.received, FALSE_1)

    async def test_commandAndGarbageInOneRead(self) -> None:
        """
        The same with tunnelled commands, answered by the board's modules
        after the read: every answer comes before the close.
        """
        board = await self.boot()
        cpp = await self.synchronise(board)
        cpp.peer.write(
            cppRequest(3, PAUSE) + cppRequest(4, BOOT_REASON) + bytes.fromhex("93 05 c0 c0")
        )
        await cpp.peer.whenLost.addTimeout(5, reactor)
        self.assertFalse(cpp.peer.closedHere)
        self.assertEqual(
            cpp.peer.received,
            FALSE_1 + NIL_2 + cppResponse(3, FALSE) + cppResponse(4, POWER_UP),
        )

    async def test_rpclibMsgidForms(self) -> None:
        """Msgids beyond a fixint come back as they went: uint8, uint16, uint32."""
        board = await self.boot()
        cpp = await self.connect(board)
        cpp.nextMsgid = 200
        frame = await cpp.exchange(bytes.fromhex("94 00 cc c8") + bytes.fromhex(I_AM_HERE))
        self.assertEqual(frame.raw, bytes.fromhex("94 01 cc c8 c0 c2"))
        cpp.nextMsgid = 300
        frame = await cpp.exchange(bytes.fromhex("94 00 cd 01 2c") + bytes.fromhex(I_AM_READY))
        self.assertEqual(frame.raw, bytes.fromhex("94 01 cd 01 2c c0 c0"))
        cpp.nextMsgid = 70000
        frame = await cpp.exchange(bytes.fromhex("94 00 ce 00 01 11 70") + bytes.fromhex(GET_EVSE))
        self.assertEqual(frame.raw[:8], bytes.fromhex("94 01 ce 00 01 11 70 c0"))
        cpp.nextMsgid = 0xFFFFFFFF
        frame = await cpp.exchange(bytes.fromhex("94 00 ce ff ff ff ff") + bytes.fromhex(RETRIEVE))
        self.assertEqual(frame.raw[:8], bytes.fromhex("94 01 ce ff ff ff ff c0"))

    async def test_commands(self) -> None:
        """Every argument and result encoding of the table, from the C++ side."""
        board = await self.boot()
        cpp = await self.synchronise(board)

        # evse_manager_enable_disable(connector_id: int, cmd_source: J) -> bool
        source = {"enable_priority": 100, "enable_source": "LocalAPI", "enable_state": "Disable"}
        msgid = cpp.nextMsgid
        data = (
            cppRequest(msgid, ENABLE_DISABLE + " 92 01 d9 4b")
            + b'{"enable_priority":100,"enable_source":"LocalAPI","enable_state":"Disable"}'
        )
        self.assertEqual(unpack(data)[3], [1, cppJson(source)])
        self.assertEqual((await cpp.exchange(data)).raw, cppResponse(msgid, TRUE))
        self.assertFalse(board.evse.enabled)
        self.assertTrue(await cpp.result("evse_manager_enable_disable", 1, cppJson(
            {**source, "enable_state": "Enable"})))  # fmt: skip
        self.assertTrue(board.evse.enabled)

        # evse_manager_get_evse() -> J
        msgid = cpp.nextMsgid
        frame = await cpp.exchange(cppRequest(msgid, GET_EVSE))
        self.assertEqual(
            frame.raw,
            cppResponse(msgid, "c0 d9 2f") + b'{"connectors":[{"id":1,"type":"cCCS2"}],"id":1}',
        )

        # sytem_is_reset_allowed(type: str) -> bool
        msgid = cpp.nextMsgid
        frame = await cpp.exchange(cppRequest(msgid, IS_RESET_ALLOWED_SOFT))
        self.assertEqual(frame.raw, cppResponse(msgid, TRUE))

        # system_get_boot_reason() -> str, the plain enum name
        msgid = cpp.nextMsgid
        frame = await cpp.exchange(cppRequest(msgid, BOOT_REASON))
        self.assertEqual(frame.raw, cppResponse(msgid, POWER_UP))

        # system_set_system_time(timestamp: str) -> bool
        self.assertIs(await cpp.result("system_set_system_time", "2026-03-01T12:00:00.000Z"), True)
        self.assertEqual(board.system.systemTime, "2026-03-01T12:00:00.000Z")

        # evse_manager_update_allowed_energy_transfer_modes(J) -> J string literal
        msgid = cpp.request(
            "evse_manager_update_allowed_energy_transfer_modes", cppJson(["AC_single_phase_core"])
        )
        self.assertEqual((await cpp.response(msgid)).raw, cppResponse(msgid, ACCEPTED_JSON))
        self.assertEqual(board.evse.allowedEnergyTransferModes, ["AC_single_phase_core"])

        # ints and nils
        self.assertIs(await cpp.result("evse_manager_force_unlock", 1), True)
        self.assertIs(await cpp.result("evse_manager_reserve", 42), True)
        self.assertEqual(board.evse.reservationId, 42)
        msgid = cpp.request("evse_manager_cancel_reservation")
        self.assertEqual((await cpp.response(msgid)).raw, cppResponse(msgid, NIL))
        self.assertIsNone(board.evse.reservationId)
        limits = {"limits_root_side": {"ac_max_current_A": 16.0}, "uuid": "connector_1",
                  "valid_until": "2026-03-01T12:00:00.000Z"}  # fmt: skip
        msgid = cpp.request("energy_enforce_limits", cppJson(limits))
        self.assertEqual((await cpp.response(msgid)).raw, cppResponse(msgid, NIL))
        self.assertEqual(board.evse.enforcedLimits, limits)

        # The board has no display, derate, ISO 15118, data transfer or random
        # delay: the "if absent" answers.
        absent: list[tuple[str, list[Any], str]] = [
            ("dc_external_derate_set_external_derating", [cppJson({"max_power_W": 1.0})], NIL),
            ("display_message_set_display_message", [cppJson([{"id": 1}])], STATUS_REJECTED),
            # not null (a C++ agent's answer), which the result type refuses
            ("display_message_get_display_messages", [cppJson({"id": [1]})], NO_MESSAGES),
            ("display_message_clear_display_message", [cppJson({"id": 1})], STATUS_UNKNOWN),
            ("iso15118_extensions_set_get_certificate_response", [cppJson({})], NIL),
            ("ocpp_data_transfer_data_transfer", [cppJson({"vendor_id": "x"})], STATUS_REJECTED),
            ("uk_random_delay_enable", [], NIL),
            ("uk_random_delay_disable", [], NIL),
            ("uk_random_delay_cancel", [], NIL),
            ("uk_random_delay_set_duration_s", [30], NIL),
        ]
        for method, params, answer in absent:
            msgid = cpp.request(method, *params)
            self.assertEqual((await cpp.response(msgid)).raw, cppResponse(msgid, answer), method)

        # push_var(event: J) -> nil, published on the board's auth interface
        seen: list[Any] = []
        probe = board.bus.module("probe", {"auth": [("satellite_agent", "auth")]})
        probe.subscribeVar("auth", "token_validation_status", seen.append)
        status = {"status": "Accepted", "token": TOKEN}
        event = cppJson({"interface": "auth", "value": status, "var": "token_validation_status"})
        msgid = cpp.nextMsgid
        data = cppRequest(msgid, PUSH_VAR + " 91") + pack(event)
        self.assertEqual((await cpp.exchange(data)).raw, cppResponse(msgid, NIL))
        await waitFor(lambda: bool(seen), "the pushed var on the satellite")
        self.assertEqual(seen, [status])
        # one it does not know is ignored, as upstream does
        unknown = cppJson({"interface": "nope", "value": 1, "var": "nothing"})
        msgid = cpp.request("push_var", unknown)
        self.assertEqual((await cpp.response(msgid)).raw, cppResponse(msgid, NIL))

        # a broken argument fails with an error string and a nil result
        frame = await cpp.call("evse_manager_enable_disable", 1, "{not json")
        self.assertIsInstance(frame.message[2], str)
        self.assertIsNone(frame.message[3])
        self.assertTrue(cpp.peer.open)
        self.assertEqual(board.boots, 1)

    async def test_chargingSession(self) -> None:
        """A whole session: commands in C++ encodings, session events through the polls in order."""
        board = await self.boot()
        cpp = await self.synchronise(board)
        await cpp.pollUntil(lambda: "ready" in {v["var"] for v in cpp.vars}, "the EVSE ready")
        self.assertTrue(board.evse.plugIn())
        await cpp.pollUntil(lambda: "AuthRequired" in cpp.sessionEvents(), "AuthRequired")

        token = {**TOKEN, "connectors": [1]}
        msgid = cpp.nextMsgid
        data = (
            cppRequest(msgid, AUTHORIZE_RESPONSE + " 92")
            + pack(cppJson(token))
            + bytes.fromhex("d9 23")
            + b'{"authorization_status":"Accepted"}'
        )
        self.assertEqual(unpack(data)[2:], ["evse_manager_authorize_response",
                                            [cppJson(token), cppJson(ACCEPTED)]])  # fmt: skip
        self.assertEqual((await cpp.exchange(data)).raw, cppResponse(msgid, NIL))
        await cpp.pollUntil(lambda: "ChargingStarted" in cpp.sessionEvents(), "ChargingStarted")
        # energy flows: the meter readings come through the polls too
        await cpp.pollUntil(
            lambda: any(
                p["energy_Wh_import"]["total"] > 0 for p in cpp.values("evse_manager", "powermeter")
            ),
            "energy on the meter",
        )

        msgid = cpp.nextMsgid
        self.assertEqual(
            (await cpp.exchange(cppRequest(msgid, PAUSE))).raw, cppResponse(msgid, TRUE)
        )
        msgid = cpp.nextMsgid
        self.assertEqual(
            (await cpp.exchange(cppRequest(msgid, RESUME))).raw, cppResponse(msgid, TRUE)
        )
        stopped = await cpp.result("evse_manager_stop_transaction", cppJson({"reason": "Local"}))
        self.assertIs(stopped, True)
        await cpp.pollUntil(
            lambda: "TransactionFinished" in cpp.sessionEvents(), "TransactionFinished"
        )
        self.assertTrue(board.evse.unplug())
        await cpp.pollUntil(lambda: "SessionFinished" in cpp.sessionEvents(), "SessionFinished")

        self.assertEqual(
            cpp.sessionEvents(),
            FULL_SESSION,
        )
        events = cpp.values("evse_manager", "session_event")
        self.assertEqual(len({event["uuid"] for event in events}), 1, "one session")
        started = next(e for e in events if e["event"] == "TransactionStarted")
        self.assertEqual(started["transaction_started"]["id_tag"], token)
        finished = next(e for e in events if e["event"] == "TransactionFinished")
        self.assertEqual(finished["transaction_finished"]["reason"], "Local")
        self.assertEqual(cpp.errors, [])

    async def test_errorsForwarded(self) -> None:
        """Every error of the board: raise, then clear, as complete EVerest error objects."""
        board = await self.boot()
        cpp = await self.synchronise(board)
        raised = board.evse.injectError("MREC2GroundFailure", sub_type="Vendor42")
        await cpp.pollUntil(lambda: len(cpp.errors) >= 1, "the raise")
        self.assertTrue(board.evse.clearInjected("MREC2GroundFailure", sub_type="Vendor42"))
        await cpp.pollUntil(lambda: len(cpp.errors) >= 2, "the clear")
        self.assertEqual([e["action"] for e in cpp.errors], ["raise", "clear"])
        first, second = (e["error"] for e in cpp.errors)
        for error in (first, second):
            self.assertEqual(
                set(error),
                {"type", "sub_type", "message", "description", "origin", "severity",
                 "timestamp", "uuid", "state", "vendor_id"},
            )  # fmt: skip
            self.assertEqual(error["type"], "evse_manager/MREC2GroundFailure")
            self.assertEqual(error["sub_type"], "Vendor42")
            self.assertEqual(
                error["origin"],
                {"implementation_id": "evse", "mapping": {"evse": 1}, "module_id": "connector_1"},
            )
            self.assertEqual(error["uuid"], raised["uuid"])
        self.assertEqual(first["state"], "Active")
        self.assertEqual(second["state"], "ClearedByModule")

    async def test_cppPollCadence(self) -> None:
        """
        The upstream controller polls again 25 ms after each answer; rcp holds
        an idle poll up to holdTime, answers it empty, and answers other
        calls meanwhile (rpclib matches responses by msgid).
        """
        board = await self.boot()
        cpp = await self.synchronise(board)
        await cpp.pollUntil(lambda: "ready" in {v["var"] for v in cpp.vars}, "the EVSE ready")
        board.evse.stop()  # no more meter readings: the link goes idle
        empty = '{"errors":[],"vars":[]}'
        await cpp.pollUntil(
            lambda: cpp.peer.frames[-1].message[3] == empty, "an empty answer", timeout=3.0
        )
        for _ in range(3):
            await sleep(0.025)
            msgid = cpp.nextMsgid
            started = reactor.seconds()
            frame = await cpp.exchange(cppRequest(msgid, RETRIEVE))
            self.assertEqual(frame.raw, cppResponse(msgid, EMPTY_BATCH))
            held = frame.at - started
            self.assertGreaterEqual(held, 0.18, "an idle poll is held")
            self.assertLess(held, 2.0, "well within the upstream controller's 30 s")

        # a command while a poll is held: its answer overtakes the poll's
        await sleep(0.025)
        poll = cpp.send(cppRequest(cpp.nextMsgid, RETRIEVE))
        getEvse = cpp.send(cppRequest(cpp.nextMsgid, GET_EVSE))
        await cpp.response(getEvse)
        self.assertIsNone(cpp.answered(poll), "the poll is still held")
        # an event ends the held poll
        board.evse.swipeCard("DEADBEEF")
        frame = await cpp.response(poll)
        batch = cpp.collect(frame)
        self.assertEqual(
            batch["vars"],
            [{"interface": "rfid_token_provider", "value": TOKEN, "var": "provided_token"}],
        )
        frames = cpp.peer.frames
        self.assertLess(frames.index(cast(Frame, cpp.answered(getEvse))), frames.index(frame))
        self.assertTrue(cpp.peer.open)
        self.assertEqual(board.boots, 1)

    async def test_secondHereOnTheSameConnection(self) -> None:
        """A second i_am_here answers true; the agent closes the link and the board resets."""
        board = await self.boot()
        cpp = await self.synchronise(board)
        await cpp.poll()
        msgid = cpp.nextMsgid
        frame = await cpp.exchange(cppRequest(msgid, I_AM_HERE))
        self.assertEqual(frame.raw, cppResponse(msgid, TRUE))
        await cpp.peer.whenLost
        self.assertFalse(cpp.peer.closedHere, "the agent closed the connection")
        await waitFor(lambda: board.boots == 2 and not board.resetting, "the board to boot again")
        # the single common start point: a fresh agent
        again = await self.connect(board)
        self.assertEqual((await again.exchange(HERE_1)).raw, FALSE_1)

    async def test_restartedController(self) -> None:
        """
        A restarted controller connects anew (its old connection still half
        open) and calls i_am_here with msgid 1: true, and the board resets.
        """
        board = await self.boot()
        old = await self.synchronise(board)
        new = await self.connect(board)
        self.assertEqual((await new.exchange(HERE_1)).raw, TRUE_1)
        await new.peer.whenLost
        await old.peer.whenLost
        self.assertFalse(new.peer.closedHere or old.peer.closedHere)
        await waitFor(lambda: board.boots == 2 and not board.resetting, "the board to boot again")
        third = await self.connect(board)
        self.assertEqual((await third.exchange(HERE_1)).raw, FALSE_1)
        self.assertEqual((await third.exchange(READY_2)).raw, NIL_2)

    async def test_exit(self) -> None:
        """exit: nil, then the agent closes the link and the board resets."""
        board = await self.boot()
        cpp = await self.synchronise(board)
        frame = await cpp.exchange(cppRequest(3, EXIT))
        self.assertEqual(frame.raw, bytes.fromhex("94 01 03 c0 c0"))
        await cpp.peer.whenLost
        self.assertFalse(cpp.peer.closedHere)
        await waitFor(lambda: board.boots == 2 and not board.resetting, "the board to boot again")

    async def test_sytemReset(self) -> None:
        """sytem_reset("Soft", false): nil, the board restarts, and says why."""
        board = await self.boot()
        cpp = await self.synchronise(board)
        frame = await cpp.exchange(cppRequest(3, RESET_SOFT))
        self.assertEqual(frame.raw, bytes.fromhex("94 01 03 c0 c0"))
        await cpp.peer.whenLost
        self.assertFalse(cpp.peer.closedHere)
        await waitFor(lambda: board.boots == 2 and not board.resetting, "the board to boot again")
        again = await self.synchronise(board)
        frame = await again.exchange(cppRequest(3, BOOT_REASON))
        self.assertEqual(frame.raw, cppResponse(3, REMOTE_RESET))


# -- 2. an rcp controller against a C++ agent ------------------------------------

#: The C++ agent's methods after the first i_am_here (argument count, answer),
#: from the wire document's table; answers are wire values.
CPP_AGENT_METHODS: dict[str, tuple[int, Any]] = {
    "retrieve_vars_and_errors": (0, None),  # answered from the queued events
    "push_var": (1, None),
    "energy_enforce_limits": (1, None),
    "evse_manager_get_evse": (0, cppJson({"connectors": [{"id": 1, "type": "cType2"}], "id": 2})),
    "evse_manager_enable_disable": (2, True),
    "evse_manager_authorize_response": (2, None),
    "evse_manager_withdraw_authorization": (0, None),
    "evse_manager_reserve": (1, True),
    "evse_manager_cancel_reservation": (0, None),
    "evse_manager_pause_charging": (0, True),
    "evse_manager_resume_charging": (0, True),
    "evse_manager_stop_transaction": (1, True),
    "evse_manager_force_unlock": (1, True),
    "evse_manager_external_ready_to_start_charging": (0, True),
    "evse_manager_set_plug_and_charge_configuration": (1, None),
    "evse_manager_update_allowed_energy_transfer_modes": (1, '"Accepted"'),
    "dc_external_derate_set_external_derating": (1, None),
    "display_message_set_display_message": (1, cppJson({"status": "Rejected"})),
    "display_message_get_display_messages": (1, "null"),
    "display_message_clear_display_message": (1, cppJson({"status": "Unknown"})),
    "iso15118_extensions_set_get_certificate_response": (1, None),
    "ocpp_data_transfer_data_transfer": (1, cppJson({"status": "Rejected"})),
    "system_update_firmware": (1, "Rejected"),
    "system_allow_firmware_installation": (0, None),
    "system_upload_logs": (1, "null"),
    "sytem_is_reset_allowed": (1, True),
    "sytem_reset": (2, None),
    "system_set_system_time": (1, True),
    "system_get_boot_reason": (0, "PowerUp"),
    "uk_random_delay_enable": (0, None),
    "uk_random_delay_disable": (0, None),
    "uk_random_delay_cancel": (0, None),
    "uk_random_delay_set_duration_s": (1, None),
}
LINK_METHODS = {"i_am_here", "i_am_ready", "exit"}


@dataclass
class Request:
    """A request the fake agent received."""

    connection: int
    frame: Frame

    @property
    def method(self) -> str:
        method: str = self.frame.message[2]
        return method

    @property
    def params(self) -> list[Any]:
        params: list[Any] = self.frame.message[3]
        return params


class FakeCppAgent(Factory):
    """
    An upstream SatelliteAgent behind an rpclib server, as seen on the wire:
    only the link's methods until the first i_am_here, then the table's;
    ``retrieve_vars_and_errors`` answers at once, empty or not.
    """

    noisy = False

    def __init__(self) -> None:
        self.connections: list[WireLog] = []
        self.requests: list[Request] = []
        #: malformed messages (an rpclib server would abort on them)
        self.violations: list[Frame] = []
        #: the answers to the first i_am_here of each connection, in order; then false
        self.hereAnswers: list[bool] = []
        self.methods = dict(CPP_AGENT_METHODS)
        #: methods whose handler "throws": the rpclib error text to answer
        self.failures: dict[str, str] = {}
        self.vars: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self._greeted: set[int] = set()

    def buildProtocol(self, addr: IAddress | None) -> WireLog:
        peer = WireLog(self._received)
        self.connections.append(peer)
        return peer

    def _received(self, peer: WireLog, frame: Frame) -> None:
        message = frame.message
        if not (
            type(message) is list
            and len(message) == 4
            and message[0] == 0
            and type(message[1]) is int
            and type(message[2]) is str
            and type(message[3]) is list
        ):
            self.violations.append(frame)
            return
        index = self.connections.index(peer)
        request = Request(index, frame)
        self.requests.append(request)
        error, result = self._answer(index, request)
        peer.write(pack([1, request.frame.msgid, error, result]))
        if request.method == "exit" and error is None:
            peer.close()

    def _answer(self, connection: int, request: Request) -> tuple[str | None, Any]:
        name, argc = request.method, len(request.params)
        if name in LINK_METHODS:
            if argc:
                return wrongCount(name, 0, argc), None
            if name == "i_am_here":
                seen = self.hereAnswers.pop(0) if self.hereAnswers else False
                if not seen:
                    self._greeted.add(connection)
                return None, seen
            return None, None
        if connection not in self._greeted or name not in self.methods:
            return notFound(name, argc), None
        expected, answer = self.methods[name]
        if argc != expected:
            return wrongCount(name, expected, argc), None
        if name in self.failures:
            return self.failures[name], None
        if name == "retrieve_vars_and_errors":
            batch = cppJson({"errors": self.errors, "vars": self.vars})
            self.vars, self.errors = [], []
            return None, batch
        return None, answer

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def pushed(self) -> list[Any]:
        return [json.loads(r.params[0]) for r in self.calls("push_var")]


@dataclass
class Rig:
    agent: FakeCppAgent
    port: IListeningPort
    main: MainSide
    probe: SimModule
    link: ControllerLink
    ended: list[tuple[int, str]] = field(default_factory=list)


TIMINGS = SyncTimings(here_timeout=2.0, retry_interval=0.1, poll_timeout=5.0)


class RcpControllerToCppAgentTests(TestCase):
    """rcp's ControllerLink (on a simulated main board) against a fake C++ agent."""

    timeout = 20

    async def start(self, agent: FakeCppAgent | None = None) -> Rig:
        agent = agent or FakeCppAgent()
        port = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(agent)
        main = MainSide(reactor, evseId=2, acceptedTokens=["DEADBEEF"])
        # what else the main board has: modules using the satellite's system,
        # random delay and energy through the controller
        probe = main.bus.module(
            "probe",
            {
                name: [("satellite_controller", name)]
                for name in ("system", "uk_random_delay", "energy", "display_message")
            },
        )
        probe.signalReady()
        ended: list[tuple[int, str]] = []
        link = ControllerLink(
            main.controller,
            reactor,
            TCP4ClientEndpoint(reactor, LOCALHOST, port.getHost().port),
            end=lambda code, reason: ended.append((code, reason)),
            timings=TIMINGS,
            holdTime=1.0,
        )
        rig = Rig(agent, port, main, probe, link, ended)
        self.addCleanup(lambda: Deferred.fromCoroutine(self.shutDown(rig)))
        main.start()
        link.start()
        return rig

    async def shutDown(self, rig: Rig) -> None:
        await rig.link.stop()
        rig.link.halt()
        # A paced poll may still be scheduled (it does nothing once stopped).
        await waitFor(
            lambda: (
                not any(
                    call.active() and getattr(call, "func", None) == rig.link._poll
                    for call in reactor.getDelayedCalls()
                )
            ),
            "the last paced poll",
        )
        for peer in rig.agent.connections:
            peer.abort()
        for peer in rig.agent.connections:
            await peer.whenLost
        rig.main.auth.stop()
        await sleep(0)  # the last command results reach their callers
        rig.main.bus.shutdown()
        stopped = rig.port.stopListening()
        if stopped is not None:
            await stopped

    async def synced(self, rig: Rig) -> WireLog:
        await waitFor(
            lambda: rig.link.synced and rig.main.bus.globallyReady, "the link to synchronise"
        )
        # Auth learns the EVSE's id once the main board is ready.
        await waitFor(lambda: bool(rig.agent.calls("evse_manager_get_evse")), "get_evse")
        return rig.agent.connections[-1]

    def assertRpclibMsgids(self, peer: WireLog) -> None:
        """Requests counted up from 1, each msgid in its smallest unsigned form."""
        for expected, frame in enumerate(peer.frames, start=1):
            self.assertEqual(frame.message[:2], [0, expected])
            self.assertEqual(frame.raw[:2], bytes.fromhex("94 00"))
            self.assertEqual(frame.raw[2 : 2 + len(_uint(expected))], _uint(expected))
            self.assertIsInstance(frame.message[2], str, "method names are msgpack str")
            self.assertIsInstance(frame.message[3], list, "params are an array")

    async def command(self, rig: Rig, d: Deferred[Any], method: str) -> tuple[Any, Request]:
        """The result of a main-board command, and the request it became."""
        before = len(rig.agent.calls(method))
        result = await d
        calls = rig.agent.calls(method)
        self.assertEqual(len(calls), before + 1, method)
        return result, calls[-1]

    async def test_handshakeBytes(self) -> None:
        """i_am_here (1), i_am_ready (2), then polls from 3: exactly what rpclib writes."""
        rig = await self.start()
        peer = await self.synced(rig)
        self.assertEqual(len(rig.agent.connections), 1)
        await waitFor(lambda: len(rig.agent.calls("retrieve_vars_and_errors")) >= 3, "polls")
        self.assertEqual(peer.frames[0].raw, HERE_1)
        self.assertEqual(peer.frames[1].raw, READY_2)
        self.assertEqual(peer.frames[2].raw, RETRIEVE_3)
        self.assertEqual(
            peer.received[: len(HERE_1 + READY_2 + RETRIEVE_3)], HERE_1 + READY_2 + RETRIEVE_3
        )
        getEvse = rig.agent.calls("evse_manager_get_evse")[0].frame
        self.assertEqual(getEvse.raw, cppRequest(getEvse.msgid, GET_EVSE))
        for poll in rig.agent.calls("retrieve_vars_and_errors"):
            self.assertEqual(poll.frame.raw, cppRequest(poll.frame.msgid, RETRIEVE))
        self.assertRpclibMsgids(peer)
        self.assertEqual(rig.agent.violations, [])
        self.assertEqual(rig.ended, [])

    async def test_pollsPacedAgainstAnImmediateAgent(self) -> None:
        """A C++ agent answers empty polls at once: rcp waits ~25 ms between them."""
        rig = await self.start()
        await self.synced(rig)
        await waitFor(lambda: len(rig.agent.calls("retrieve_vars_and_errors")) >= 2, "polls")
        since = reactor.seconds()
        await sleep(0.5)  # the window polls are counted in
        polls = [r.frame.at for r in rig.agent.calls("retrieve_vars_and_errors")]
        counted = [at for at in polls if since <= at <= since + 0.5]
        self.assertGreaterEqual(len(counted), 8, counted)
        self.assertLessEqual(len(counted), 30, counted)
        gaps = [later - earlier for earlier, later in pairwise(polls[1:])]
        self.assertGreaterEqual(min(gaps), 0.02, "never sooner than 25 ms after an empty answer")
        self.assertEqual(rig.ended, [])

    async def test_eventsReachTheMainBoard(self) -> None:
        """Vars and errors of the C++ agent reach the main board's EVerest exactly."""
        rig = await self.start()
        await self.synced(rig)
        consumer = rig.main.consumer
        started = {"connector_id": 1, "event": "SessionStarted",
                   "session_started": {"meter_value": {"energy_Wh_import": {"total": 11000.0},
                                                       "timestamp": "2026-03-01T12:00:00.000Z"},
                                       "reason": "EVConnected"},
                   "timestamp": "2026-03-01T12:00:00.000Z", "uuid": "7c1d"}  # fmt: skip
        authRequired = {"connector_id": 1, "event": "AuthRequired",
                        "timestamp": "2026-03-01T12:00:00.001Z", "uuid": "7c1d"}  # fmt: skip
        powermeter = {"energy_Wh_import": {"L1": 3666.667, "total": 11000.0},
                      "meter_id": "connector_1/powermeter", "power_W": {"total": 0.0},
                      "timestamp": "2026-03-01T12:00:00.002Z"}  # fmt: skip
        rig.agent.vars += [
            {"interface": "evse_manager", "value": started, "var": "session_event"},
            {"interface": "evse_manager", "value": authRequired, "var": "session_event"},
            {"interface": "evse_manager", "value": powermeter, "var": "powermeter"},
            {"interface": "evse_manager", "value": "VolkswagenGroup", "var": "car_manufacturer"},
            # pairs this controller does not know are ignored, as upstream does
            {"interface": "evse_manager", "value": 1, "var": "no_such_var"},
            {"interface": "no_such_interface", "value": 1, "var": "x"},
        ]
        await waitFor(lambda: consumer.latest(0, "car_manufacturer") is not None, "the vars")
        self.assertEqual(consumer.sessionEvents(0), [started, authRequired])
        self.assertEqual(consumer.values(0, "powermeter"), [powermeter])
        self.assertEqual(consumer.values(0, "car_manufacturer"), ["VolkswagenGroup"])

        # A card at the satellite's reader, naming no connectors: the
        # controller adds its own connector id (the mapping's evse, 2). Auth
        # then says so with push_var, and authorizes EVSE 2.
        rig.agent.vars.append(
            {"interface": "rfid_token_provider", "value": TOKEN, "var": "provided_token"}
        )
        await waitFor(lambda: bool(rig.agent.calls("evse_manager_authorize_response")), "auth")
        token = {**TOKEN, "connectors": [2]}
        request = rig.agent.calls("evse_manager_authorize_response")[0].frame
        self.assertEqual(
            request.raw,
            cppRequest(request.msgid, AUTHORIZE_RESPONSE + " 92 d9 60")
            + b'{"authorization_type":"RFID","connectors":[2],'
            + b'"id_token":{"type":"ISO14443","value":"DEADBEEF"}}'
            + bytes.fromhex("d9 23")
            + b'{"authorization_status":"Accepted"}',
        )
        await waitFor(lambda: len(rig.agent.calls("push_var")) >= 2, "the token statuses")
        for push in rig.agent.calls("push_var"):
            self.assertEqual(len(push.params), 1)
            self.assertIsInstance(push.params[0], str)
            self.assertEqual(push.params[0], cppJson(json.loads(push.params[0])), "compact JSON")
        self.assertEqual(
            rig.agent.pushed()[:2],
            [
                {"interface": "auth", "value": {"status": status, "token": token},
                 "var": "token_validation_status"}
                for status in ("Processing", "Accepted")
            ],
        )  # fmt: skip

        # errors: raised with a sub_type, then cleared
        error = {"description": "Ground fault", "message": "RCD tripped",
                 "origin": {"implementation_id": "evse", "mapping": {"evse": 1},
                            "module_id": "connector_1"},
                 "severity": "High", "state": "Active", "sub_type": "Vendor42",
                 "timestamp": "2026-03-01T12:00:01.000Z",
                 "type": "evse_manager/MREC2GroundFailure",
                 "uuid": "0b6f", "vendor_id": "everest"}  # fmt: skip
        other = {**error, "sub_type": "Vendor43", "uuid": "0b70"}
        rig.agent.errors += [
            {"action": "raise", "error": error},
            {"action": "raise", "error": other},
        ]
        await waitFor(lambda: len(consumer.errors()) >= 2, "the raises")
        self.assertEqual(consumer.errors(), [error, other])
        cleared = {**error, "state": "ClearedByModule", "timestamp": "2026-03-01T12:00:02.000Z"}
        rig.agent.errors.append({"action": "clear", "error": cleared})
        await waitFor(lambda: len(consumer.errors()) >= 3, "the clear")
        self.assertEqual(consumer.errors()[2], {**error, "state": "ClearedByModule"})
        self.assertEqual(rig.link.tunnel.activeErrors, [other])
        self.assertEqual(rig.ended, [])
        self.assertEqual(rig.agent.violations, [])

    async def test_commandsFromTheMainBoard(self) -> None:
        """Main-board commands arrive in the C++ encodings; the C++ answers come back."""
        rig = await self.start()
        await self.synced(rig)
        consumer, probe = rig.main.consumer, rig.probe

        result, request = await self.command(rig, consumer.pause(0), "evse_manager_pause_charging")
        self.assertIs(result, True)
        self.assertEqual(request.frame.raw, cppRequest(request.frame.msgid, PAUSE))

        rig.agent.methods["evse_manager_enable_disable"] = (2, False)
        source = {"enable_priority": 5000, "enable_source": "CSMS", "enable_state": "Disable"}
        result, request = await self.command(
            rig,
            consumer.call(0, "enable_disable", {"connector_id": 0, "cmd_source": source}),
            "evse_manager_enable_disable",
        )
        self.assertIs(result, False)
        self.assertEqual(
            request.frame.raw,
            cppRequest(request.frame.msgid, ENABLE_DISABLE + " 92 00 d9 48")
            + b'{"enable_priority":5000,"enable_source":"CSMS","enable_state":"Disable"}',
        )

        result, request = await self.command(
            rig,
            probe.call("system", "is_reset_allowed", {"type": "Soft"}),
            "sytem_is_reset_allowed",
        )
        self.assertIs(result, True)
        self.assertEqual(request.frame.raw, cppRequest(request.frame.msgid, IS_RESET_ALLOWED_SOFT))

        result, request = await self.command(
            rig, probe.call("system", "get_boot_reason", {}), "system_get_boot_reason"
        )
        self.assertEqual(result, "PowerUp")
        self.assertEqual(request.frame.raw, cppRequest(request.frame.msgid, BOOT_REASON))

        modes = ["AC_single_phase_core", "AC_three_phase_core"]
        result, request = await self.command(
            rig,
            consumer.call(0, "update_allowed_energy_transfer_modes",
                          {"allowed_energy_transfer_modes": modes}),
            "evse_manager_update_allowed_energy_transfer_modes",
        )  # fmt: skip
        self.assertEqual(result, "Accepted")
        self.assertEqual(request.params, [cppJson(modes)])

        result, request = await self.command(
            rig,
            probe.call("uk_random_delay", "set_duration_s", {"value": 600}),
            "uk_random_delay_set_duration_s",
        )
        self.assertIsNone(result)
        self.assertEqual(request.params, [600])
        self.assertEqual(request.frame.raw[-4:], bytes.fromhex("91 cd 02 58"))

        result, request = await self.command(
            rig,
            probe.call("display_message", "get_display_messages", {"request": {"id": [1]}}),
            "display_message_get_display_messages",
        )
        # the JSON text "null" (a C++ agent's answer for an unconnected
        # display) is not a GetDisplayMessageResponse: rcp's absent answer
        self.assertEqual(result, {"messages": []})
        result, _ = await self.command(
            rig,
            probe.call("system", "upload_logs", {"upload_logs_request": {"location": "ftp://x/"}}),
            "system_upload_logs",
        )
        self.assertEqual(result, {"upload_logs_status": "Rejected"})

        # A handler that threw (rpclib's text) and a method an older agent
        # lacks (rpclib's not-found text): failed EVerest commands.
        thrown = (
            "rpclib: function 'evse_manager_force_unlock' (called with 1 arg(s)) threw an"
            " exception. The exception contained this information: relay stuck."
        )
        rig.agent.failures["evse_manager_force_unlock"] = thrown
        failure = await self.assertFailure(
            consumer.call(0, "force_unlock", {"connector_id": 1}), CommandError
        )
        self.assertEqual(failure.kind, "HandlerException")
        self.assertIn(thrown, failure.message)
        del rig.agent.methods["uk_random_delay_enable"]
        failure = await self.assertFailure(
            probe.call("uk_random_delay", "enable", {}), CommandError
        )
        self.assertEqual(failure.kind, "HandlerException")
        self.assertIn(notFound("uk_random_delay_enable", 0), failure.message)

        # a reset: ["Soft", false]
        result, request = await self.command(
            rig, probe.call("system", "reset", {"type": "Soft", "scheduled": False}), "sytem_reset"
        )
        self.assertIsNone(result)
        self.assertEqual(request.frame.raw, cppRequest(request.frame.msgid, RESET_SOFT))

        self.assertRpclibMsgids(rig.agent.connections[0])
        self.assertEqual(rig.agent.violations, [])
        self.assertEqual(rig.ended, [])
        self.assertTrue(rig.link.synced)

    async def test_hereTrueMeansConnectAgain(self) -> None:
        """
        An agent that answers i_am_here with true resets: the controller drops
        the connection and tries again until one answers false.
        """
        agent = FakeCppAgent()
        agent.hereAnswers = [True, True]
        rig = await self.start(agent)
        peer = await self.synced(rig)
        self.assertEqual(len(agent.connections), 3)
        for refused in agent.connections[:2]:
            self.assertEqual(refused.received, HERE_1, "nothing but i_am_here")
            self.assertFalse(refused.open)
            self.assertFalse(refused.closedHere, "the controller closed it")
        self.assertEqual(peer.frames[0].raw, HERE_1)
        self.assertEqual(peer.frames[1].raw, READY_2)
        self.assertRpclibMsgids(peer)
        self.assertEqual(rig.ended, [])

    async def test_lostConnectionEndsTheController(self) -> None:
        """The agent's connection closing after sync ends the controller with code 1."""
        rig = await self.start()
        peer = await self.synced(rig)
        peer.close()
        await waitFor(lambda: bool(rig.ended), "the controller to end")
        self.assertEqual(len(rig.ended), 1)
        self.assertEqual(rig.ended[0][0], 1)
        self.assertFalse(rig.link.synced)

    async def test_stopSaysExit(self) -> None:
        """Stopping on purpose: exit, answered nil, and the link closes."""
        rig = await self.start()
        peer = await self.synced(rig)
        await rig.link.stop()
        exits = rig.agent.calls("exit")
        self.assertEqual(len(exits), 1)
        self.assertEqual(exits[0].frame.raw, cppRequest(exits[0].frame.msgid, EXIT))
        await peer.whenLost
        self.assertRpclibMsgids(peer)
        self.assertEqual(rig.ended, [])
