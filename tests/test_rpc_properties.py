"""
Properties of the wire functions and of L{RpcProtocol}, checked with
hypothesis on generated messages and bytes: framing is independent of how the
stream is cut, garbage only ever raises the two documented exceptions, and a
protocol fed anything neither raises nor leaves its peer waiting.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rcp.rpc import MethodRegistry, RpcLimits, RpcProtocol
from rcp.rpc.wire import (
    MSGID_MODULUS,
    BadMessage,
    Framer,
    FramingError,
    Notification,
    Request,
    Response,
    classify,
    decode,
    encodeNotification,
    encodeRequest,
    encodeResponse,
)

# Modest and reproducible: the whole module runs in a few seconds.
checks = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
#: msgpack values that decode back to themselves (lists, not tuples)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=8,
)
msgids = st.integers(min_value=0, max_value=MSGID_MODULUS - 1)
methods = st.text(max_size=30)
paramLists = st.lists(values, max_size=4)

requests = st.builds(Request, msgids, methods, paramLists)
responses = st.builds(Response, msgids, values, values)
notifications = st.builds(Notification, methods, paramLists)
messages = requests | responses | notifications


def encode(message: Request | Response | Notification) -> bytes:
    if isinstance(message, Request):
        return encodeRequest(message.msgid, message.method, message.params)
    if isinstance(message, Response):
        return encodeResponse(message.msgid, message.error, message.result)
    return encodeNotification(message.method, message.params)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """C{data} cut at C{points} (any ints; taken modulo its length)."""
    if not data:
        return []
    offsets = sorted({0, len(data), *(p % len(data) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(offsets)]


def frameAll(framer: Framer, pieces: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for piece in pieces:
        frames.extend(framer.feed(piece))
    return frames


class FramerProperties(SynchronousTestCase):
    @checks
    @given(st.lists(messages, max_size=10), st.lists(st.integers(min_value=0), max_size=30))
    def test_anySplitYieldsTheMessages(self, sent: list[Any], points: list[int]) -> None:
        """However the stream is cut, the framer yields exactly the messages."""
        encoded = [encode(m) for m in sent]
        framer = Framer()
        frames = frameAll(framer, cut(b"".join(encoded), points))
        self.assertEqual(frames, encoded)
        self.assertEqual(framer.pending, 0)
        self.assertEqual([decode(f) for f in frames], sent)

    @checks
    @given(
        st.lists(messages, max_size=6),
        st.lists(st.integers(min_value=0), max_size=10),
        st.integers(min_value=40, max_value=400),
    )
    def test_smallLimitSplits(self, sent: list[Any], points: list[int], limit: int) -> None:
        """With a small limit: the messages that fit, then L{FramingError}."""
        encoded = [encode(m) for m in sent]
        framer = Framer(limit)
        frames: list[bytes] = []
        try:
            for piece in cut(b"".join(encoded), points):
                frames.extend(framer.feed(piece))
        except FramingError:
            # Messages completed by the failing read are not returned.
            self.assertEqual(frames, encoded[: len(frames)])
            self.assertTrue(any(len(e) > limit for e in encoded[len(frames) :]))
        else:
            self.assertEqual(frames, encoded)
            self.assertTrue(all(len(e) <= limit for e in encoded))

    @checks
    @given(
        st.lists(messages, max_size=6),
        st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=20))),
        st.lists(st.integers(min_value=0), max_size=10),
    )
    def test_garbageOnlyRaisesWireErrors(
        self,
        sent: list[Any],
        insertions: list[tuple[int, bytes]],
        points: list[int],
    ) -> None:
        """
        Random bytes inserted into a valid stream, or appended to it: the
        framer raises only L{FramingError}, decoding only L{BadMessage}.
        """
        data = bytearray(b"".join(encode(m) for m in sent))
        for position, garbage in insertions:
            at = position % (len(data) + 1)
            data[at:at] = garbage
        framer = Framer(4096)
        try:
            for piece in cut(bytes(data), points):
                for frame in framer.feed(piece):
                    try:
                        decode(frame)
                    except BadMessage:
                        pass
        except FramingError:
            pass

    @settings(checks, max_examples=200)
    @given(st.binary(max_size=200))
    def test_decodeAnyBytes(self, data: bytes) -> None:
        """decode() of any bytes at all: a message or L{BadMessage}."""
        try:
            decode(data)
        except BadMessage as e:
            self.assertTrue(e.msgid is None or 0 <= e.msgid < MSGID_MODULUS)

    @checks
    @given(values | st.lists(values, max_size=6))
    def test_classifyAnyValue(self, value: Any) -> None:
        try:
            classify(value)
        except BadMessage:
            pass


class RoundTripProperties(SynchronousTestCase):
    @checks
    @given(messages)
    def test_roundTrip(self, message: Request | Response | Notification) -> None:
        """Any valid request, response or notification decodes to itself."""
        self.assertEqual(decode(encode(message)), message)


def _packed(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


#: Bytes a hostile or broken peer might send: noise, valid messages, any
#: msgpack value (shapes that look like messages), headers of huge objects.
pieces = (
    st.binary(max_size=64)
    | st.builds(encodeRequest, msgids, st.sampled_from(["echo", "nosuch"]), paramLists)
    | messages.map(encode)
    | (values | st.lists(values, max_size=5)).map(_packed)
    | st.sampled_from(
        [b"\xc1", b"\x94", b"\x94\x00", b"\xdd\xff\xff\xff\xff", b"\x91" * 1000, b"\x91" * 1100]
    )
)


def _echo(*params: Any) -> list[Any]:
    return list(params)


class ProtocolProperties(SynchronousTestCase):
    """An L{RpcProtocol} on a L{StringTransport}, fed generated bytes."""

    limits = RpcLimits(maxMessageSize=2048, frameTimeout=30)

    def connect(self) -> tuple[RpcProtocol, StringTransport, Clock]:
        clock = Clock()
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 5000))
        proto = RpcProtocol(clock, MethodRegistry({"echo": _echo}), self.limits)
        proto.makeConnection(transport)
        return proto, transport, clock

    def responsesIn(self, data: bytes) -> list[Any]:
        """Everything the protocol wrote: only well-formed responses."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data)
        out = list(unpacker)
        for message in out:
            self.assertIsInstance(decode(msgpack.packb(message, use_bin_type=True)), Response)
        return out

    @settings(checks, max_examples=200)
    @given(st.lists(pieces, max_size=12), st.lists(st.integers(min_value=0), max_size=12))
    def test_arbitraryBytes(self, chunks: list[bytes], points: list[int]) -> None:
        """
        Any bytes, however cut: dataReceived never raises; the protocol
        answers (with responses only) or closes; after frameTimeout it has
        closed or holds no partial message, and if it is open it answers a
        request.
        """
        proto, transport, clock = self.connect()
        for chunk in cut(b"".join(chunks), points):
            proto.dataReceived(chunk)
        self.responsesIn(transport.value())
        clock.advance(self.limits.frameTimeout)
        if transport.disconnecting:
            # closed (after the answers owed): nothing runs once it is lost
            proto.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(clock.getDelayedCalls(), [])
            return
        self.assertEqual(clock.getDelayedCalls(), [])
        transport.clear()
        proto.dataReceived(encodeRequest(7, "echo", [1]))
        self.assertEqual(transport.value(), encodeResponse(7, None, [1]))

    @checks
    @given(
        st.lists(st.tuples(msgids, paramLists), max_size=8),
        st.lists(st.integers(min_value=0), max_size=20),
    )
    def test_requestsAnsweredInOrder(
        self, calls: list[tuple[int, list[Any]]], points: list[int]
    ) -> None:
        """Requests however cut: one response each, in order, nothing else."""
        proto, transport, _ = self.connect()
        stream = b"".join(encodeRequest(msgid, "echo", params) for msgid, params in calls)
        assume(
            all(len(encodeRequest(m, "echo", p)) <= self.limits.maxMessageSize for m, p in calls)
        )
        for piece in cut(stream, points):
            proto.dataReceived(piece)
        expected = b"".join(encodeResponse(msgid, None, params) for msgid, params in calls)
        self.assertEqual(transport.value(), expected)
        self.assertFalse(transport.disconnecting)
