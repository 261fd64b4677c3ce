"""
rcp against msgpack-rpc implementations it shares no code with, over real TCP
connections on 127.0.0.1.

 - B{neovim as a server} (C{nvim --headless --listen}): rcp's L{RpcProtocol}
   calls the nvim API as a client, and nvim calls rcp's handlers back
   (C{rpcrequest}, C{rpcnotify}) on the same connection.  When C{nvim} is
   not installed these tests are skipped, unless the environment variable
   C{CI} is set: CI installs nvim, so there they fail.
 - B{pynvim's session layer as a client} of an rcp server
   (L{pynvim.msgpack_rpc}).  The session is put together from that package's
   own parts (EventLoop, MsgpackStream, AsyncSession, Session) rather than with
   C{tcp_session()}: C{tcp_session()} first sends C{nvim_set_client_info} as a
   notification whose method name is packed as msgpack C{bin}, and rcp closes
   the connection on a notification whose method name is not a C{str} (see
   L{PynvimClientTests.test_defaultSession}).  Each pynvim session lives in
   one worker thread (L{deferToThread}) so the reactor keeps serving.
 - B{a minimal blocking client} built on C{msgpack} and L{socket} only, for
   what pynvim's synchronous session cannot do: several requests in flight at
   once, and checking the bytes that came back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar, cast
from unittest import SkipTest

import msgpack
from pynvim.msgpack_rpc import AsyncSession, EventLoop, MsgpackStream, Session, tcp_session
from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rcp.rpc import HandlerError, MethodRegistry, RemoteError, RpcFactory, RpcProtocol

from .common import freePort


class _Reactor(IReactorTCP, IReactorTime):
    """What these tests use of the global reactor (for the type checker)."""


reactor = cast(_Reactor, _globalReactor)

T = TypeVar("T")

LOCALHOST = "127.0.0.1"

# rpclib's texts from the wire document, written out in full.
UNKNOWN_NOSUCH_2 = "rpclib: server could not find function 'nosuch' with argument count 2."
ADD_GOT_1 = (  # rpclib's swap: Expected is the count sent, got the count taken
    "rpclib: client error C0002: Function 'add' was called with an invalid number of"
    " arguments. Expected: 1, got: 2"
)
FAIL_NOPE = (
    "rpclib: function 'fail' (called with 1 arg(s)) threw an exception."
    " The exception contained this information: nope."
)


# -- finding nvim -------------------------------------------------------------


class NvimMissing(Exception):
    """nvim is not installed where it must be."""


def findNvim(environ: Mapping[str, str], which: Callable[[str], str | None] = shutil.which) -> str:
    """
    The path of C{nvim}.

    @raise SkipTest: it is not installed and C{CI} is not set.
    @raise NvimMissing: it is not installed and C{CI} is set (CI installs
        it, so its absence there is a failure).
    """
    path = which("nvim")
    if path is not None:
        return path
    if "CI" in environ:
        raise NvimMissing(f"nvim is not installed, but CI={environ['CI']!r}: CI must install it")
    raise SkipTest("nvim is not installed (with CI set this is a failure)")


class FindNvimTests(SynchronousTestCase):
    def test_found(self) -> None:
        self.assertEqual(findNvim({}, lambda name: f"/opt/bin/{name}"), "/opt/bin/nvim")
        self.assertEqual(findNvim({"CI": "true"}, lambda name: "/usr/bin/nvim"), "/usr/bin/nvim")

    def test_missingLocally(self) -> None:
        self.assertRaises(SkipTest, findNvim, {}, lambda name: None)

    def test_missingOnCI(self) -> None:
        self.assertRaises(NvimMissing, findNvim, {"CI": "true"}, lambda name: None)


async def waitForDisconnect(proto: RpcProtocol) -> None:
    """Close C{proto}'s connection and wait until the reactor has let go of it."""
    if proto.connected:
        lost = proto.whenDisconnected()
        # Only the moment matters here, not the reason.
        lost.addBoth(lambda _: None)
        proto.disconnect()
        await lost


# -- neovim as the server -------------------------------------------------------


class NvimServerTests(TestCase):
    """rcp as a client of neovim, and neovim calling rcp back."""

    timeout = 20

    async def setUp(self) -> None:  # type: ignore[override]
        try:
            nvim = findNvim(os.environ)
        except NvimMissing as e:
            self.fail(str(e))
        port = freePort()
        self.nvim = subprocess.Popen(
            [nvim, "--headless", "--clean", "--listen", f"{LOCALHOST}:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self._stopNvim)
        self.notes: list[list[Any]] = []
        self.noteArrived: Deferred[None] = Deferred()
        registry = MethodRegistry(
            {
                "rcp_add": _add,
                "rcp_fail": _fail,
                "rcp_later": _later,
                "rcp_double": _double,
                "rcp_event": self._event,
            }
        )
        self.proto = await self._connect(port, RpcFactory(reactor, registry))
        self.addCleanup(waitForDisconnect, self.proto)

    async def _connect(self, port: int, factory: RpcFactory) -> RpcProtocol:
        endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, port, timeout=5)
        deadline = reactor.seconds() + 10
        while True:
            try:
                return cast(RpcProtocol, await endpoint.connect(factory))
            except ConnectionRefusedError:
                if self.nvim.poll() is not None:
                    self.fail(f"nvim exited with status {self.nvim.returncode}")
                if reactor.seconds() > deadline:
                    raise
            await deferLater(reactor, 0.02)

    def _stopNvim(self) -> None:
        self.nvim.terminate()
        try:
            self.nvim.wait(5)
        except subprocess.TimeoutExpired:
            self.nvim.kill()
            self.nvim.wait()

    def _event(self, *args: Any) -> None:
        self.notes.append(list(args))
        if not self.noteArrived.called:
            self.noteArrived.callback(None)

    async def _channel(self) -> int:
        """nvim's id of our connection (what rpcrequest and rpcnotify take)."""
        channel, _ = await self.proto.call("nvim_get_api_info")
        return cast(int, channel)

    async def _remoteError(self, method: str, *params: Any) -> Any:
        """Call C{method}, which must fail; its error value."""
        try:
            result = await self.proto.call(method, *params)
        except RemoteError as e:
            return e.error
        self.fail(f"{method} answered {result!r} instead of failing")

    async def test_eval(self) -> None:
        self.assertEqual(await self.proto.call("nvim_eval", "1+2"), 3)

    async def test_callFunction(self) -> None:
        self.assertEqual(await self.proto.call("nvim_call_function", "abs", [-5]), 5)

    async def test_voidResult(self) -> None:
        """nvim_command has no result: nvim answers nil, rcp gives None."""
        self.assertIsNone(await self.proto.call("nvim_command", "let g:rcp_x = 1"))

    async def test_apiInfo(self) -> None:
        channel, meta = await self.proto.call("nvim_get_api_info")
        self.assertIsInstance(channel, int)
        self.assertGreater(channel, 0)
        self.assertIsInstance(meta["version"]["api_level"], int)
        names = {f["name"] for f in meta["functions"]}
        self.assertTrue({"nvim_eval", "nvim_call_function", "nvim_get_api_info"} <= names)
        # nvim packs text as msgpack str: every name arrives as a Python str.
        self.assertEqual({type(name) for name in names}, {str})

    async def test_unknownMethod(self) -> None:
        """nvim's error is an array [type, message], kept as is."""
        error = await self._remoteError("nosuch_method", 1, 2)
        self.assertIsInstance(error, list)
        self.assertEqual(len(error), 2)
        kind, message = error
        self.assertIsInstance(kind, int)
        self.assertEqual(message, "Invalid method: nosuch_method")
        self.assertTrue(self.proto.connected)

    async def test_wrongArgumentCount(self) -> None:
        error = await self._remoteError("nvim_eval")
        self.assertIsInstance(error, list)
        self.assertIn("argument", error[1])

    async def test_pipelined(self) -> None:
        """Many calls in flight at once, one failing among them."""
        calls = [self.proto.call("nvim_eval", f"{i}*{i}") for i in range(50)]
        failing = self.proto.call("nosuch_method")
        calls += [self.proto.call("nvim_eval", f"{i}+1") for i in range(50)]
        self.assertEqual(self.proto.pendingCalls, 101)
        results = await gatherResults(calls)
        self.assertEqual(results, [i * i for i in range(50)] + [i + 1 for i in range(50)])
        with self.assertRaises(RemoteError):
            await failing
        self.assertEqual(self.proto.pendingCalls, 0)

    async def test_structuredValues(self) -> None:
        value = {
            "text": "größe ✓ 🚀",
            "int": -7,
            "big": 2**40,
            "float": 2.5,
            "nested": [1, [2, [3, {"k": "v"}]], []],
            "flag": True,
            "map": {},
        }
        await self.proto.call("nvim_set_var", "rcp_data", value)
        self.assertEqual(await self.proto.call("nvim_get_var", "rcp_data"), value)
        self.assertEqual(
            await self.proto.call("nvim_eval", "[1, 'two', {'k': 1.5}, v:true, v:null]"),
            [1, "two", {"k": 1.5}, True, None],
        )

    async def test_bytesArriveAsText(self) -> None:
        """nvim has no binary type: it reads our bin as a String."""
        self.assertEqual(await self.proto.call("nvim_call_function", "len", [b"abc"]), 3)

    async def test_largeMessages(self) -> None:
        """Messages far larger than one TCP read, both ways."""
        self.assertEqual(
            await self.proto.call("nvim_call_function", "strlen", ["x" * 200_000]), 200_000
        )
        self.assertEqual(await self.proto.call("nvim_eval", "repeat('ab', 100000)"), "ab" * 100_000)

    async def test_notifyCommand(self) -> None:
        """A notification is run by nvim; the next call sees its effect."""
        self.proto.notify("nvim_command", "let g:rcp_note = 42")
        self.assertEqual(await self.proto.call("nvim_get_var", "rcp_note"), 42)

    async def test_subscribedNotification(self) -> None:
        await self.proto.call("nvim_subscribe", "rcp_event")
        await self.proto.call("nvim_command", "call rpcnotify(0, 'rcp_event', 1, 'two', [3])")
        await self.noteArrived
        self.assertEqual(self.notes, [[1, "two", [3]]])

    async def test_directNotification(self) -> None:
        channel = await self._channel()
        await self.proto.call("nvim_command", f"call rpcnotify({channel}, 'rcp_event', 'direct')")
        await self.noteArrived
        self.assertEqual(self.notes, [["direct"]])

    async def test_nvimCallsBack(self) -> None:
        """
        While our nvim_eval waits, nvim sends its own request on the same
        connection and waits for rcp's answer.
        """
        channel = await self._channel()
        self.assertEqual(
            await self.proto.call("nvim_eval", f"rpcrequest({channel}, 'rcp_add', 2, 3)"), 5
        )
        self.assertEqual(
            await self.proto.call("nvim_eval", f"rpcrequest({channel}, 'rcp_later', 'x')"),
            "later x",
        )
        self.assertEqual(
            await self.proto.call("nvim_eval", f"rpcrequest({channel}, 'rcp_double', 21)"), 42
        )

    async def test_nvimSeesRpclibErrors(self) -> None:
        """nvim takes rcp's plain-string errors and quotes them in its own."""
        channel = await self._channel()
        cases = [
            ("'rcp_fail', 'nope'", FAIL_NOPE.replace("'fail'", "'rcp_fail'")),
            ("'nosuch', 1, 2", UNKNOWN_NOSUCH_2),
            ("'rcp_add', 1", ADD_GOT_1.replace("'add'", "'rcp_add'")),
        ]
        for args, text in cases:
            error = await self._remoteError("nvim_eval", f"rpcrequest({channel}, {args})")
            self.assertIsInstance(error, list)
            # nvim 0.7: "Vim:Error invoking 'NAME' on channel N:\nTEXT"
            self.assertIn(text, error[1])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


# -- pynvim and a raw socket as clients ------------------------------------------


def _add(a: int, b: int) -> int:
    return a + b


def _fail(reason: str) -> NoReturn:
    raise ValueError(reason)


def _later(text: str) -> Deferred[str]:
    return deferLater(reactor, 0.01, lambda: f"later {text}")


async def _double(x: int) -> int:
    await deferLater(reactor, 0.01)
    return 2 * x


class RawError(Exception):
    """An error response seen by pynvim, with the error value untouched."""

    def __init__(self, error: Any) -> None:
        super().__init__(error)
        self.error = error


def pynvimSession(port: int, rawErrors: bool = True) -> Any:
    """
    A pynvim msgpack-rpc session to 127.0.0.1:C{port}, built from
    L{pynvim.msgpack_rpc}'s parts (see the module docstring).  Blocking: call
    it in a worker thread, and use the session in that thread only.

    @param rawErrors: make C{request} raise L{RawError} with the error value
        as sent, instead of pynvim's default (which keeps C{error[1]} only).
    """
    session = Session(AsyncSession(MsgpackStream(EventLoop("tcp", LOCALHOST, port))))
    if rawErrors:
        session.error_wrapper = RawError
    return session


def withPynvim(port: int, work: Callable[[Any], T], rawErrors: bool = True) -> T:
    """
    Run C{work(session)} on a new pynvim session, then close it.

    pynvim's C{close()} closes its asyncio loop before the loop has run the
    transport's close, so the client socket is only closed when it is garbage
    collected (a ResourceWarning under C{-X dev}); the server side is closed
    by the test's cleanup anyway.
    """
    session = pynvimSession(port, rawErrors)
    try:
        return work(session)
    finally:
        session.close()


def requestError(session: Any, method: str, *args: Any) -> Exception:
    """The exception a request that must fail raises."""
    try:
        result = session.request(method, *args)
    except Exception as e:
        return e
    raise AssertionError(f"{method} answered {result!r} instead of failing")


class _RcpServer(TestCase):
    """An rcp server listening on 127.0.0.1, with a few handlers."""

    timeout = 20

    async def setUp(self) -> None:  # type: ignore[override]
        self.notes: list[list[Any]] = []
        self.waiting: list[Deferred[Any]] = []
        self.protocols: list[RpcProtocol] = []
        registry = MethodRegistry(
            {
                "echo": lambda value: value,
                "add": _add,
                "later": _later,
                "double": _double,
                "fail": _fail,
                "void": lambda: None,
                "refuse": self._refuse,
                "note": self._note,
                "poke": self._poke,
                "wait": self._hold,
                "release": self._release,
            }
        )
        factory = RpcFactory(reactor, registry, connected=self.protocols.append)
        port = cast(
            IListeningPort,
            await serverFromString(reactor, f"tcp:0:interface={LOCALHOST}").listen(factory),
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(self._disconnectAll)
        self.port: int = port.getHost().port  # type: ignore[attr-defined]

    async def _disconnectAll(self) -> None:
        for proto in self.protocols:
            await waitForDisconnect(proto)

    def _refuse(self, message: str) -> NoReturn:
        raise HandlerError([0, message])

    def _note(self, *args: Any) -> None:
        self.notes.append(list(args))

    def _poke(self, text: str) -> None:
        """Send the caller a notification before answering."""
        [proto] = self.protocols
        proto.notify("event", text)

    def _hold(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        return d

    def _release(self, value: Any) -> None:
        for d in self.waiting:
            d.callback(value)
        self.waiting.clear()

    async def pynvim(self, work: Callable[[Any], T], rawErrors: bool = True) -> T:
        return await deferToThread(withPynvim, self.port, work, rawErrors)


ROUND_TRIP: list[Any] = [
    "text",
    "größe ✓ 🚀",
    "",
    "x" * 70_000,
    b"\x00\x01\xff",
    b"",
    bytes(range(256)) * 300,
    1.5,
    -2.25,
    0.1,
    1e300,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    True,
    False,
    None,
    [],
    {},
    [1, [2, [3, [4, "five"]]]],
    {"a": {"b": [1, 2.5, {"c": "d", "e": b"f"}]}, "g": [], "h": None},
]


class PynvimClientTests(_RcpServer):
    """pynvim's msgpack-rpc client calling an rcp server."""

    async def test_roundTrip(self) -> None:
        """Values come back equal and of the same type: str stays str, bytes bytes."""

        def work(session: Any) -> list[Any]:
            return [session.request("echo", value) for value in ROUND_TRIP]

        results = await self.pynvim(work)
        self.assertEqual(results, ROUND_TRIP)
        for sent, got in zip(ROUND_TRIP, results, strict=True):
            self.assertIs(type(got), type(sent), sent)

    async def test_results(self) -> None:
        def work(session: Any) -> list[Any]:
            return [
                session.request("add", 2, 3),
                session.request("void"),
                session.request("later", "x"),
                session.request("double", 21),
            ]

        self.assertEqual(await self.pynvim(work), [5, None, "later x", 42])

    async def test_manyCalls(self) -> None:
        def work(session: Any) -> list[Any]:
            return [session.request("add", i, i) for i in range(300)]

        self.assertEqual(await self.pynvim(work), [2 * i for i in range(300)])

    async def test_errorTexts(self) -> None:
        """rpclib's texts arrive as plain strings, and the session goes on."""

        def work(session: Any) -> list[Any]:
            errors = [
                requestError(session, "nosuch", 1, 2),
                requestError(session, "add", 1),
                requestError(session, "fail", "nope"),
                requestError(session, "refuse", "refused"),
            ]
            return [cast(RawError, e).error for e in errors] + [session.request("add", 1, 1)]

        self.assertEqual(
            await self.pynvim(work),
            [UNKNOWN_NOSUCH_2, ADD_GOT_1, FAIL_NOPE, [0, "refused"], 2],
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_defaultErrorWrapper(self) -> None:
        """
        pynvim expects nvim's [type, message] errors: its default wrapper
        raises C{Exception(error[1])}.  A L{HandlerError} with that shape reads
        well; rpclib's plain-string texts lose all but their second character.
        """

        def work(session: Any) -> list[Exception]:
            return [requestError(session, "refuse", "refused"), requestError(session, "nosuch")]

        refused, nosuch = await self.pynvim(work, rawErrors=False)
        self.assertEqual(refused.args, ("refused",))
        self.assertEqual(nosuch.args, ("p",))  # "rpclib: server could not ..."[1]

    async def test_notificationFromClient(self) -> None:
        def work(session: Any) -> Any:
            session.request("note", 1, "x", async_=True)
            session.request("note", async_=True)
            # Handled in order: once this is answered, the notes were handled.
            return session.request("void")

        self.assertIsNone(await self.pynvim(work))
        self.assertEqual(self.notes, [[1, "x"], []])

    async def test_notificationToClient(self) -> None:
        def work(session: Any) -> tuple[Any, Any, Any]:
            result = session.request("poke", "hello")
            message = session.next_message()
            return result, message.name, message.args

        self.assertEqual(await self.pynvim(work), (None, "event", ["hello"]))

    async def test_defaultSession(self) -> None:
        """
        pynvim's own C{tcp_session()} opens with C{nvim_set_client_info} as a
        notification whose method name is packed as msgpack bin.  rpclib's
        server reads a bin method name like a str one (msgpack-c converts both
        to C{std::string}), and an unknown notification is dropped.
        """

        def work() -> Any:
            session = tcp_session(LOCALHOST, self.port)
            try:
                return session.request("add", 2, 3)
            finally:
                session.close()

        self.assertEqual(await deferToThread(work), 5)


def rawExchange(port: int, data: bytes, count: int) -> list[bytes]:
    """
    Send C{data} in one write on a blocking socket and read C{count}
    msgpack messages back, each as its exact bytes.
    """
    with socket.create_connection((LOCALHOST, port), timeout=10) as s:
        s.sendall(data)
        unpacker = msgpack.Unpacker()
        received = b""
        frames: list[bytes] = []
        while len(frames) < count:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {frames!r}")
            received += chunk
            unpacker.feed(chunk)
            while True:
                start = unpacker.tell()
                try:
                    unpacker.skip()
                except msgpack.OutOfData:
                    break
                frames.append(received[start : unpacker.tell()])
        return frames


class RawClientTests(_RcpServer):
    """A blocking client built on msgpack and a socket, in a worker thread."""

    async def test_pipelinedAnsweredOutOfOrder(self) -> None:
        """
        Requests 1 to 4 in one write.  1 waits until 3 releases it, so the
        answers come as 2, 1, 3, 4, each with its own msgid, in rpclib's
        exact bytes.
        """
        data = (
            bytes.fromhex("94 00 01 a4 77616974 90")  # wait()
            + bytes.fromhex("94 00 02 a3 616464 92 02 03")  # add(2, 3)
            + bytes.fromhex("94 00 03 a7 72656c65617365 91 a2 6f6b")  # release("ok")
            + bytes.fromhex("94 00 cc c8 a6 6e6f73756368 92 01 02")  # nosuch(1, 2), msgid 200
        )
        frames = await deferToThread(rawExchange, self.port, data, 4)
        self.assertEqual(
            frames,
            [
                bytes.fromhex("94 01 02 c0 05"),
                bytes.fromhex("94 01 01 c0 a2 6f6b"),
                bytes.fromhex("94 01 03 c0 c0"),
                bytes.fromhex("94 01 cc c8 d9")
                + bytes([len(UNKNOWN_NOSUCH_2)])
                + UNKNOWN_NOSUCH_2.encode()
                + bytes.fromhex("c0"),
            ],
        )

    async def test_oneRequestPerByte(self) -> None:
        """A request written one byte at a time is answered once, at the end."""
        request = bytes.fromhex("94 00 07 a3 616464 92 02 03")

        def work() -> bytes:
            with socket.create_connection((LOCALHOST, self.port), timeout=10) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(request)):
                    s.sendall(request[i : i + 1])
                return s.recv(100)

        self.assertEqual(await deferToThread(work), bytes.fromhex("94 01 07 c0 05"))
