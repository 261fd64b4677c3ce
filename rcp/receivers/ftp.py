"""
The FTP receiver on C{twisted.protocols.ftp}: upload only (STOR), login
with the board name and a one-time token, passive mode on the address the
client reached; no listing, reading, deleting, renaming or SITE, no PORT
or EPRT to any address but the client's own (no FTP bounce).
"""

from __future__ import annotations

import threading
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import ftp
from twisted.python.failure import Failure
from zope.interface import implementer

from ..logtext import cut
from .disk import SPLICE, SpliceIdle, SpliceStopped, SpliceUnsupported
from .grants import Grant, GrantBook, Refused
from .store import GrantEnded, IncomingFile, NoSpace, Store, StoreError

#: commands answered "502 not implemented" with a log line
REFUSED = frozenset(
    [
        "LIST",
        "NLST",
        "RETR",
        "DELE",
        "MKD",
        "XMKD",
        "RMD",
        "XRMD",
        "RNFR",
        "RNTO",
        "SITE",
        "APPE",
        "STOU",
        "MDTM",
        "CDUP",
        "XCUP",
        "ABOR",
        "REST",
    ]
)
ANONYMOUS = frozenset(["anonymous", "ftp"])


class ExceededStorage(ftp.FTPCmdError):
    errorCode = ftp.EXCEEDED_STORAGE_ALLOC


class InsufficientStorage(ftp.FTPCmdError):
    errorCode = ftp.REQ_ACTN_ABRTD_INSUFF_STORAGE


class TransferAborted(ftp.FTPCmdError):
    errorCode = ftp.CNX_CLOSED_TXFR_ABORTED


def _storageError(error: object) -> ftp.FTPCmdError:
    """The FTP reply for a file the store refused: 452 no room, 552 too large."""
    return InsufficientStorage() if isinstance(error, NoSpace) else ExceededStorage()


@implementer(IConsumer)
class _Incoming:
    """The data connection's consumer: writes to the store, aborts on errors or idleness."""

    def __init__(self, proto: UploadFTP, upload: IncomingFile) -> None:
        self.proto = proto
        self.upload: IncomingFile | None = upload
        self.error: ftp.FTPCmdError | None = None
        self._idle: IDelayedCall | None = None
        self._throttled = False
        self._stop: threading.Event | None = None
        self._dtp: Any = None
        self._arm()

    def _arm(self) -> None:
        clock = self.proto.factory.clock
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.proto.factory.dataTimeout)
        else:
            self._idle = clock.callLater(self.proto.factory.dataTimeout, self._timedOut)

    def _disarm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _timedOut(self) -> None:
        self._idle = None
        self.proto.book.refuse("FTP", self.proto.peerHost(), "data connection idle too long")
        self.abort(TransferAborted())

    def splice(self, dtp: Any) -> None:
        """
        Receive the rest of the file in the kernel (L{rcp.receivers.disk.spliceInto},
        Linux), where it can: Twisted stops reading the data connection, a
        disk thread moves its bytes into the file until the end of the
        stream, and then Twisted reads on and sees the end as usual.
        """
        transport = dtp.transport
        if not self.proto.factory.splice or self.upload is None or transport is None:
            return
        if self.proto.store.receive is None:
            return  # no reception threads here: never block the reactor on a socket
        if not hasattr(transport, "fileno") or not hasattr(transport, "stopReading"):
            return
        self.upload.throttles(None)  # nothing may resume reading while the thread reads
        transport.stopReading()
        self._disarm()  # the thread watches idleness
        self._stop = threading.Event()
        d = self.upload.spliceFrom(transport.fileno(), self.proto.factory.dataTimeout, self._stop)
        d.addCallbacks(
            lambda count: self._spliced(count, transport),
            lambda failure: self._spliceFailed(failure, transport),
        )

    def _spliced(self, count: int, transport: Any) -> None:
        self._stop = None
        if self.error is not None:  # aborted while the thread ran
            self._failUpload()
            transport.loseConnection()
            return
        transport.startReading()  # Twisted sees the end of the stream: the DTP ends as usual

    def _spliceFailed(self, failure: Failure, transport: Any) -> None:
        self._stop = None
        peer = self.proto.peerHost()
        if failure.check(SpliceUnsupported) and self.error is None:
            self._arm()
            if self.upload is not None:
                self.upload.throttles(_Throttle(self, transport))
            transport.startReading()  # the usual way
            return
        if failure.check(StoreError):
            self.upload = None  # removed by the store
            self.proto.book.refuse("FTP", peer, str(failure.value))
            self.abort(_storageError(failure.value))
        elif failure.check(SpliceIdle):
            self.proto.book.refuse("FTP", peer, "data connection idle too long")
            self.abort(TransferAborted())
        elif failure.check(SpliceStopped):
            self.abort(self.error or TransferAborted())
        else:
            self.proto.log.info(
                "FTP receiver: upload from {peer} cut off: {why}",
                peer=peer,
                why=cut(str(failure.value)),
            )
            self.abort(TransferAborted())

    def _failUpload(self) -> None:
        if self.upload is not None:
            self.upload.fail()
            self.upload = None

    def abort(self, error: ftp.FTPCmdError) -> None:
        self._disarm()
        if self.error is None:
            self.error = error
        if self._stop is not None:
            # a disk thread still reads the socket and writes the file: both
            # are closed once it stopped (within 0.2 s), never under it
            self._stop.set()
            return
        self._failUpload()
        transport = self._dataTransport()
        if transport is not None:
            transport.loseConnection()

    def _dataTransport(self) -> Any:
        """Its own data connection's transport (the control connection may be gone already)."""
        dtp = self._dtp if self._dtp is not None else self.proto.dtpInstance
        return dtp.transport if dtp is not None else None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._dtp = producer  # the data connection (L{ftp.DTP})

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if self.upload is None:
            return
        if not self._throttled:
            # the data connection waits while the disk falls behind
            self._throttled = True
            transport = self._dataTransport()
            if transport is not None:
                self.upload.throttles(_Throttle(self, transport))
        self._arm()
        try:
            self.upload.write(data)
        except StoreError as e:
            self.upload = None
            self.proto.book.refuse("FTP", self.proto.peerHost(), str(e))
            self.abort(_storageError(e))

    def close(self) -> Deferred[None]:
        self._disarm()
        if self.error is not None:
            return fail(self.error)
        upload, self.upload = self.upload, None
        if upload is None:
            return fail(TransferAborted())

        def failed(failure: Failure) -> Failure:
            self.proto.book.refuse("FTP", self.proto.peerHost(), str(failure.value))
            if failure.check(GrantEnded):
                return Failure(TransferAborted())
            return Failure(InsufficientStorage())

        return upload.finish().addCallbacks(lambda _: None, failed)


@implementer(IPushProducer)
class _Throttle:
    """
    The data connection as the disk writer pauses it: no idleness is counted
    while the receiver itself holds the sender back.
    """

    def __init__(self, incoming: _Incoming, transport: Any) -> None:
        self.incoming = incoming
        self.transport = transport

    def pauseProducing(self) -> None:
        self.incoming._disarm()
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.incoming.upload is not None and self.incoming.error is None:
            self.incoming._arm()
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()


@implementer(ftp.IWriteFile)
class _WriteFile:
    def __init__(self, consumer: _Incoming) -> None:
        self.consumer = consumer

    def receive(self) -> Deferred[_Incoming]:
        return succeed(self.consumer)

    def close(self) -> Deferred[None]:
        return self.consumer.close()


@implementer(ftp.IFTPShell)
class UploadShell:
    """One grant's view: an empty, write-only root directory."""

    def __init__(self, proto: UploadFTP, grant: Grant) -> None:
        self.proto = proto
        self.grant = grant
        self.running: _Incoming | None = None

    def openForWriting(self, path: list[str]) -> Deferred[_WriteFile]:
        name = path[-1] if path else ""
        try:
            upload = self.proto.store.openUpload(self.grant, name)
        except StoreError as e:
            self.proto.book.refuse("FTP", self.proto.peerHost(), str(e))
            return fail(ftp.PermissionDeniedError(name))
        self.running = _Incoming(self.proto, upload)
        return succeed(_WriteFile(self.running))

    def access(self, path: list[str]) -> Deferred[None]:
        if path:
            return fail(ftp.FileNotFoundError("/".join(path)))
        return succeed(None)

    def stat(self, path: list[str], keys: Any = ()) -> Deferred[Any]:
        return fail(ftp.FileNotFoundError("/".join(path)))

    def list(self, path: list[str], keys: Any = ()) -> Deferred[Any]:
        return fail(ftp.PermissionDeniedError("/".join(path)))

    def _denied(self, *paths: Any) -> Deferred[None]:
        return fail(ftp.PermissionDeniedError("/".join(str(p) for p in paths)))

    makeDirectory = removeDirectory = removeFile = rename = openForReading = _denied


class UploadFTP(ftp.FTP):
    """The FTP protocol with one-time grants as logins."""

    log = Logger()
    factory: FtpReceiver
    grant: Grant | None = None

    @property
    def book(self) -> GrantBook:
        return self.factory.book

    @property
    def store(self) -> Store:
        return self.factory.store

    _peerHost = ""
    _gone = False

    def connectionMade(self) -> None:
        self._peerHost = str(getattr(cast(Any, self.transport).getPeer(), "host", ""))
        super().connectionMade()

    def peerHost(self) -> str:
        """The client's address (kept from the start: also known once it is gone)."""
        return self._peerHost

    def processCommand(self, cmd: str, *params: str) -> Any:
        upper = cmd.upper()
        if upper in REFUSED or (upper == "PASS" and self.state == self.UNAUTH):
            self.book.refuse("FTP", self.peerHost(), f"command {cut(upper, 16)}")
            if upper in REFUSED:
                return fail(ftp.CmdNotImplementedError(upper))
        if upper == "EPSV" and params and params[0].upper() == "ALL":
            return ftp.CMD_OK, "EPSV ALL"
        return super().processCommand(cmd, *params)

    def ftp_USER(self, username: str) -> Any:
        if username.lower() in ANONYMOUS:
            self.book.refuse("FTP", self.peerHost(), "anonymous login")
        return super().ftp_USER(username)

    def ftp_PASS(self, password: str) -> Any:
        board = getattr(self, "_user", "")
        self._user = ""
        try:
            grant = self.book.check("FTP", password, self.peerHost(), "upload", board=board)
        except Refused:
            self.state = self.UNAUTH
            return fail(ftp.AuthorizationError())
        if self.grant is not None:
            self.book.finishSession(self.grant)
        self.book.begin(grant)
        self.grant = grant
        grant.onEnd.append(self._grantEnded)
        self.shell = cast(Any, UploadShell(self, grant))
        self.workingDirectory: list[str] = []
        self.state = self.AUTHED
        return ftp.USR_LOGGED_IN_PROCEED

    def _grantEnded(self) -> None:
        shell = self.shell
        if isinstance(shell, UploadShell) and shell.running is not None:
            if shell.running.upload is not None:
                shell.running.abort(TransferAborted())
        if self.grant is not None and self.grant.endReason != "used":
            cast(Any, self.transport).loseConnection()

    def getDTPPort(self, factory: Any, interface: str = "") -> Any:
        # only on the address the client reached, never on every interface
        return super().getDTPPort(factory, interface=cast(Any, self.transport).getHost().host)

    def _ownAddress(self, host: str, command: str) -> bool:
        peer = self.peerHost().removeprefix("::ffff:")
        if host == peer:
            return True
        self.book.refuse("FTP", self.peerHost(), f"{command} to {cut(host, 64)} (not the client)")
        return False

    def ftp_PORT(self, address: str) -> Any:
        try:
            numbers = [int(n) for n in address.split(",")]
            host = ".".join(str(n) for n in numbers[:4])
        except (ValueError, TypeError):
            return fail(ftp.CmdArgSyntaxError(cut(address, 64)))
        if len(numbers) != 6 or not self._ownAddress(host, "PORT"):
            return fail(ftp.CmdNotImplementedForArgError(cut(address, 64)))
        return super().ftp_PORT(address)

    def ftp_EPRT(self, extendedAddress: str) -> Any:
        fields = extendedAddress.split(extendedAddress[:1] or "|")
        host = fields[2] if len(fields) > 3 else ""
        if not self._ownAddress(host, "EPRT"):
            return fail(ftp.CmdNotImplementedForArgError(cut(extendedAddress, 64)))
        return super().ftp_EPRT(extendedAddress)

    def ftp_STOR(self, path: str) -> Any:
        if not self.store.hasRoom(0):
            self.book.refuse("FTP", self.peerHost(), "disk (almost) full")
            return fail(InsufficientStorage())
        if self.grant is not None and self.grant.remaining() <= 0:
            self.book.refuse("FTP", self.peerHost(), f"{self.grant.describe()} has no room left")
            return fail(ExceededStorage())
        if self.dtpInstance is None:
            return fail(ftp.BadCmdSequenceError("PASV or EPSV required before STOR"))
        # the name is reduced to one safe component by the store
        self.setTimeout(None)
        d = cast(UploadShell, self.shell).openForWriting([path])

        def opened(file: _WriteFile) -> Deferred[None]:
            dtp: Any = self.dtpInstance
            done: Deferred[None] = dtp.registerConsumer(file.consumer)
            if dtp.isConnected:
                self.reply(ftp.DATA_CNX_ALREADY_OPEN_START_XFR)
                file.consumer.splice(dtp)
            else:
                self.reply(ftp.FILE_STATUS_OK_OPEN_DATA_CNX)
            done.addCallback(lambda _: file.close())
            return done

        def failed(failure: Failure) -> Any:
            if failure.check(ftp.FTPCmdError):
                return failure
            self.log.failure("FTP receiver: STOR failed", failure)
            return (ftp.CNX_CLOSED_TXFR_ABORTED,)

        def timeoutBack(result: object) -> object:
            if self._gone:
                # the control connection ended meanwhile: nobody to answer
                if isinstance(result, Failure):
                    self.log.info(
                        "FTP receiver: upload from {peer} ended with its control connection",
                        peer=self.peerHost(),
                    )
                return None
            self.setTimeout(self.factory.timeOut)
            return result

        d.addCallback(opened)
        d.addCallback(lambda _: (ftp.TXFR_COMPLETE_OK,))
        d.addErrback(failed)
        d.addBoth(timeoutBack)
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        # twisted.protocols.ftp reads this when a command ends after the
        # connection did (it only sets it on QUIT)
        self.disconnected = True
        shell = self.shell
        if isinstance(shell, UploadShell) and shell.running is not None:
            shell.running.abort(TransferAborted())
        if self.grant is not None:
            self.book.finishSession(self.grant)
        super().connectionLost(reason)


class FtpReceiver(ftp.FTPFactory):
    """The factory of L{UploadFTP}; no portal: the grants are the logins."""

    protocol = UploadFTP
    allowAnonymous = False
    noisy = False

    def __init__(
        self,
        book: GrantBook,
        store: Store,
        clock: IReactorTime,
        idleTimeout: float,
        dataTimeout: float,
    ) -> None:
        super().__init__(portal=None)
        self.book = book
        self.store = store
        self.clock = clock
        #: receive files in the kernel where it can (L{rcp.receivers.disk.SPLICE})
        self.splice = SPLICE
        self.timeOut = cast(Any, idleTimeout)
        self.dataTimeout = dataTimeout
        self.welcomeMessage = "rcp receiver ready (upload only)"
