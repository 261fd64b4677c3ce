"""
msgpack-rpc messages as bytes: framing, decoding, validation and encoding.

Pure functions and one small stateful framer; no transport, no clock.  The
format is classic msgpack-rpc as spoken by rpclib (see
``shared/docs/upstream-wire-protocol.md``)::

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

Decoding is split in two steps so that one bad message never poisons the
stream: the L{Framer} only finds where each message ends (msgpack's C
``skip``), then L{decode} builds and checks one message at a time.  A message
that cannot be built still has its msgid read, when possible, so the sender of
a broken request gets an error response instead of waiting forever.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2

#: msgids are unsigned 32-bit counters (rpclib's ``uint32_t``).
MSGID_MODULUS: Final = 1 << 32

#: Largest message accepted by default, in bytes.
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20

# One transport read may complete a message and start the next one: the
# framer's buffer must hold a full message plus one read.
_READ_SLACK: Final = 1 << 17
_INITIAL_BUFFER: Final = 1 << 16


@dataclass(slots=True)
class Request:
    msgid: int
    method: str
    params: list[Any]


@dataclass(slots=True)
class Response:
    msgid: int
    error: Any
    result: Any


@dataclass(slots=True)
class Notification:
    method: str
    params: list[Any]


Message = Request | Response | Notification


class FramingError(Exception):
    """
    The byte stream cannot be cut into msgpack messages any more (not
    msgpack, or a message over the size limit).  The connection is lost.

    @ivar frames: the messages the same call to L{Framer.feed} completed
        before the bad bytes: they arrived first and are still handled.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.frames: list[bytes] = []


class BadMessage(Exception):
    """
    One complete message is unusable.

    @ivar problem: what is wrong, for the log and the error response.
    @ivar msgid: the msgid of a request that could still be read, else
        L{None}: a request with a known msgid is answered with an error, any
        other bad message ends the connection.
    """

    def __init__(self, problem: str, msgid: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.msgid = msgid


class Framer:
    """
    Cut a byte stream into complete msgpack messages.

    @param maxMessageSize: a message longer than this, complete or still
        arriving, raises L{FramingError}.
    """

    def __init__(self, maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max = maxMessageSize
        # made at the first bytes: an unpacker costs some 100 KiB, and a
        # connection that never sends (an idle socket, a TLS handshake that
        # does not finish) should not pay it
        self._unpacker: msgpack.Unpacker | None = None
        self._buffer = bytearray()
        # skipper.tell() of the first byte in _buffer
        self._base = 0
        # bytes fed to the skipper so far
        self._fed = 0

    @property
    def pending(self) -> int:
        """Bytes of a message that has started but not finished."""
        return len(self._buffer)

    @property
    def _skipper(self) -> msgpack.Unpacker:
        if self._unpacker is None:
            # read_size: start small and grow only for large messages (msgpack
            # would otherwise allocate and touch the whole limit per connection)
            self._unpacker = msgpack.Unpacker(
                max_buffer_size=self._max + _READ_SLACK,
                read_size=min(_INITIAL_BUFFER, self._max + _READ_SLACK),
            )
        return self._unpacker

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add bytes from the transport; return every message they complete.

        @raise FramingError: the stream is not msgpack or a message is too
            large; its C{frames} are the messages completed before that.
            The framer must not be used afterwards.
        """
        frames: list[bytes] = []
        # The skipper holds at most one unfinished message plus one slice:
        # a longer read (a test, a TLS record batch) is fed piece by piece.
        try:
            for offset in range(0, len(data), _READ_SLACK):
                self._feedSlice(data[offset : offset + _READ_SLACK], frames)
        except FramingError as e:
            e.frames = frames
            raise
        return frames

    def _feedSlice(self, data: bytes, frames: list[bytes]) -> None:
        skipper = self._skipper
        try:
            skipper.feed(data)
        except msgpack.BufferFull:
            raise FramingError(f"message larger than the limit of {self._max} bytes") from None
        self._fed += len(data)
        if not self._buffer:
            self._cutWhole(skipper, data, frames)
            return
        self._buffer += data
        start = 0
        while skipper.tell() < self._fed:
            try:
                skipper.skip()
            except msgpack.OutOfData:
                break
            except ValueError as e:
                # msgpack raises ValueError subclasses for invalid bytes
                # (FormatError), nesting too deep (StackError) and declared
                # lengths beyond its limits.
                raise FramingError(f"not a msgpack stream ({_describe(e)})") from None
            end = skipper.tell() - self._base
            if end - start > self._max:
                raise FramingError(
                    f"message of {end - start} bytes is larger than the limit of {self._max} bytes"
                )
            frames.append(bytes(self._buffer[start:end]))
            start = end
        if start:
            del self._buffer[:start]
            self._base += start
        if len(self._buffer) > self._max:
            raise FramingError(f"message larger than the limit of {self._max} bytes")

    def _cutWhole(self, skipper: msgpack.Unpacker, data: bytes, frames: list[bytes]) -> None:
        # Same as the general case, with offsets into data itself.
        start = 0
        base = self._base
        while skipper.tell() < self._fed:
            try:
                skipper.skip()
            except msgpack.OutOfData:
                break
            except ValueError as e:
                raise FramingError(f"not a msgpack stream ({_describe(e)})") from None
            end = skipper.tell() - base
            if end - start > self._max:
                raise FramingError(
                    f"message of {end - start} bytes is larger than the limit of {self._max} bytes"
                )
            frames.append(data if start == 0 and end == len(data) else data[start:end])
            start = end
        self._base += start
        if start < len(data):
            self._buffer += data[start:] if start else data
        if len(self._buffer) > self._max:
            raise FramingError(f"message larger than the limit of {self._max} bytes")


def _describe(e: Exception) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _isMsgid(value: object) -> bool:
    return type(value) is int and 0 <= value < MSGID_MODULUS


def _salvageMsgid(frame: bytes) -> int | None:
    """
    The msgid of a request that cannot be decoded as a whole, if its first
    two elements can be read.
    """
    reader = msgpack.Unpacker(raw=True, strict_map_key=False)
    reader.feed(frame)
    try:
        if reader.read_array_header() < 2:
            return None
        kind = reader.unpack()
        msgid = reader.unpack()
    except Exception:
        return None
    if type(kind) is int and kind == REQUEST and _isMsgid(msgid):
        return int(msgid)
    return None


def decode(frame: bytes) -> Message:
    """
    Build and check one message.

    @raise BadMessage: the message cannot be used; its C{msgid} is set when
        it is a request whose msgid could be read.
    """
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as e:
        # Invalid UTF-8 in a str, an unhashable map key, a bad timestamp:
        # the frame boundaries are sound, only this message is lost.
        raise BadMessage(
            f"message cannot be decoded ({_describe(e)})", _salvageMsgid(frame)
        ) from None
    return classify(message)


def classify(message: object) -> Message:
    """
    Check the shape and field types of a decoded message.

    @raise BadMessage: see L{decode}.
    """
    if type(message) is not list or not message:
        raise BadMessage(f"message is not a non-empty array but {_typeName(message)}")
    kind = message[0]
    if type(kind) is not int:
        raise BadMessage(f"message type is {_typeName(kind)}, not an integer")
    size = len(message)
    if kind == REQUEST:
        msgid = message[1] if size > 1 and _isMsgid(message[1]) else None
        if size != 4:
            raise BadMessage(f"request has {size} elements instead of 4", msgid)
        if msgid is None:
            raise BadMessage(
                f"request msgid {_brief(message[1])} is not an unsigned 32-bit integer"
            )
        method, params = _methodName(message[2]), message[3]
        if method is None:
            raise BadMessage(f"request method name is {_typeName(message[2])}, not a string", msgid)
        if params is None:
            params = []  # rpclib reads nil params as no arguments
        elif type(params) is not list:
            raise BadMessage(f"request params are {_typeName(params)}, not an array", msgid)
        return Request(msgid, method, params)
    if kind == RESPONSE:
        if size == 4 and type(message[1]) is int and 0 <= message[1] < MSGID_MODULUS:
            return Response(message[1], message[2], message[3])
        if size != 4:
            raise BadMessage(f"response has {size} elements instead of 4")
        if not _isMsgid(message[1]):
            raise BadMessage(
                f"response msgid {_brief(message[1])} is not an unsigned 32-bit integer"
            )
        return Response(message[1], message[2], message[3])
    if kind == NOTIFICATION:
        if size != 3:
            raise BadMessage(f"notification has {size} elements instead of 3")
        method, params = _methodName(message[1]), message[2]
        if method is None:
            raise BadMessage(f"notification method name is {_typeName(message[1])}, not a string")
        if params is None:
            params = []
        elif type(params) is not list:
            raise BadMessage(f"notification params are {_typeName(params)}, not an array")
        return Notification(method, params)
    raise BadMessage(f"unknown message type {kind}")


# Received values in problem texts: short and shallow, whatever the peer
# sent (a plain repr of an array nested a thousand deep raises RecursionError).
_reprlib = reprlib.Repr()
_reprlib.maxlevel = 3
_reprlib.maxstring = 40
_reprlib.maxother = 40


def _brief(value: object) -> str:
    return _reprlib.repr(value)


def _methodName(value: object) -> str | None:
    # rpclib reads the name into a std::string, which msgpack-c fills from
    # str and bin alike; some clients (pynvim) send bin.
    if type(value) is str:
        return value
    if type(value) is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _typeName(value: object) -> str:
    names = {
        list: "an array",
        dict: "a map",
        str: "a string",
        bytes: "binary",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        type(None): "nil",
    }
    return names.get(type(value), type(value).__name__)


# One packer for the process: Twisted runs protocols on one thread.  str
# packs as msgpack str and bytes as bin, as rpclib expects.
_packer = msgpack.Packer(use_bin_type=True)


def encodeRequest(msgid: int, method: str, params: list[Any]) -> bytes:
    """
    @raise TypeError: or L{ValueError}, a parameter has no msgpack form.
    """
    data: bytes = _packer.pack([REQUEST, msgid, method, params])
    return data


def encodeResponse(msgid: int, error: Any, result: Any) -> bytes:
    data: bytes = _packer.pack([RESPONSE, msgid, error, result])
    return data


def encodeNotification(method: str, params: list[Any]) -> bytes:
    data: bytes = _packer.pack([NOTIFICATION, method, params])
    return data


# rpclib's error texts, word for word: rpclib clients and the people reading
# their logs know them.


def noSuchFunction(name: str, argc: int) -> str:
    return f"rpclib: server could not find function '{name}' with argument count {argc}."


def wrongArgumentCount(name: str, sent: int, takes: int) -> str:
    """
    rpclib's text swaps its two numbers: "Expected" is the count the caller
    C{sent}, "got" the count the function C{takes}.
    """
    return (
        f"rpclib: client error C0002: Function '{name}' was called with an invalid"
        f" number of arguments. Expected: {sent}, got: {takes}"
    )


def handlerFailed(name: str, argc: int, info: str) -> str:
    return (
        f"rpclib: function '{name}' (called with {argc} arg(s)) threw an exception."
        f" The exception contained this information: {info}."
    )
