"""
Mutual TLS for the rcp link, layered on any stream endpoint.

The endpoint strings in a config say *where* (``tcp:4129``,
``systemd:domain=INET:index=0``, ``tcp:host=10.0.0.2:port=4129``); this
module adds *who*: the agent accepts only clients whose certificate the
station CA signed, the controller accepts only an agent whose certificate
the station CA signed for the name it expects.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from .logtext import cut


class TlsFileError(Exception):
    """
    A certificate or key file is unusable.

    @ivar which: C{"ca"}, C{"certificate"} or C{"key"}.
    """

    def __init__(self, which: str, problem: str) -> None:
        super().__init__(problem)
        self.which = which
        self.problem = problem


@dataclass(frozen=True)
class Credentials:
    """A board's identity and the station CA, loaded and checked."""

    ca: Certificate
    identity: PrivateCertificate
    keyIsPrivate: bool
    #: server side: the board names a client's certificate must carry
    #: (empty: any certificate of the station CA)
    allowedClients: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """The board name: the certificate's common name."""
        cn = self.identity.getSubject().commonName
        return cn.decode("utf-8", "replace") if isinstance(cn, bytes) else str(cn)


def _read(which: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsFileError(which, f"cannot read {path}: {e.strerror}") from None


def loadCredentials(ca: str, certificate: str, key: str) -> Credentials:
    """
    Load and cross-check the PEM files of one board.

    @raise TlsFileError: a file cannot be read or parsed, the key does not
        belong to the certificate, or the CA did not sign the certificate.
    """
    caPem = _read("ca", ca)
    certPem = _read("certificate", certificate)
    keyPem = _read("key", key)
    try:
        caCert = Certificate.loadPEM(caPem)
    except Exception:
        raise TlsFileError("ca", f"{ca} holds no PEM certificate") from None
    try:
        cert = Certificate.loadPEM(certPem)
    except Exception:
        raise TlsFileError("certificate", f"{certificate} holds no PEM certificate") from None
    try:
        keyPair = KeyPair.load(keyPem, FILETYPE_PEM)
    except Exception:
        raise TlsFileError("key", f"{key} holds no unencrypted PEM private key") from None
    try:
        identity = PrivateCertificate.fromCertificateAndKeyPair(cert, keyPair)
    except VerifyError:
        raise TlsFileError("key", f"{key} is not the key of {certificate}") from None
    try:
        cert.original.to_cryptography().verify_directly_issued_by(caCert.original.to_cryptography())
    except (ValueError, TypeError, InvalidSignature):
        raise TlsFileError(
            "certificate", f"{certificate} is not signed by the CA in {ca}"
        ) from None
    mode = os.stat(key).st_mode
    private = not (mode & (stat.S_IRWXG | stat.S_IRWXO))
    return Credentials(caCert, identity, private)


def certificateNames(certificate: Certificate) -> list[str]:
    """The DNS names a certificate is valid for (its subjectAltName)."""
    from cryptography.x509 import DNSName, SubjectAlternativeName

    crypto = certificate.original.to_cryptography()
    try:
        san = crypto.extensions.get_extension_for_class(SubjectAlternativeName)
    except Exception:
        return []
    return list(san.value.get_values_for_type(DNSName))


def presentedNames(certificate: Certificate) -> list[str]:
    """The names a certificate presents: its subjectAltNames, then its common name."""
    names = certificateNames(certificate)
    cn = certificate.getSubject().commonName
    if cn is not None:
        text = cn.decode("utf-8", "replace") if isinstance(cn, bytes) else str(cn)
        if text not in names:
            names.append(text)
    return names


def _shownNames(names: list[str]) -> str:
    # the peer chose these: cut, and not too many
    if not names:
        return "no name"
    shown = ", ".join(cut(name, 64) for name in names[:4])
    return shown + (f" (and {len(names) - 4} more)" if len(names) > 4 else "")


def _peerOf(connection: SSL.Connection) -> str:
    try:
        address = connection.get_app_data().getPeer()
        return f"{address.host}:{address.port}"
    except Exception:
        return "a peer"


class _ServerOptions(CertificateOptions):
    """
    Client certificates of the station CA, and, when a list is given, only
    those that name an allowed board (a satellite's own certificate is of
    the same CA, but must not control another satellite).
    """

    log = Logger()

    def __init__(self, allowedClients: frozenset[str], **options: Any) -> None:
        super().__init__(**options)
        self.allowedClients = allowedClients
        self._checking = False

    def getContext(self) -> SSL.Context:
        context: SSL.Context = super().getContext()
        # once, on the new context: a context in use cannot be changed
        if self.allowedClients and not self._checking:
            self._checking = True
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._checkClient)
        return context

    def _checkClient(
        self, connection: SSL.Connection, x509: Any, errno: int, depth: int, ok: int
    ) -> bool:
        if not ok:
            return False
        if depth > 0:
            return True  # the CA: OpenSSL has checked it
        names = presentedNames(Certificate(x509))
        if set(names) & self.allowedClients:
            return True
        self.log.warn(
            "{peer}: TLS name mismatch: expected {expected} (tls.allowed_clients),"
            " the peer presented {presented}; refused",
            peer=_peerOf(connection),
            expected=" or ".join(sorted(self.allowedClients)),
            presented=_shownNames(names),
        )
        return False


def serverOptions(credentials: Credentials) -> CertificateOptions:
    """Agent side: present our certificate, require one from the station CA."""
    return _ServerOptions(
        credentials.allowedClients,
        privateKey=credentials.identity.privateKey.original,
        certificate=credentials.identity.original,
        verify=True,
        caCerts=[credentials.ca.original],
        requireCertificate=True,
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


class _ServerFactory(TLSMemoryBIOFactory):
    """
    A TLS server factory that keeps the wrapped factory's refusals: when it
    builds no protocol (C{None}), the connection is refused, as without TLS.
    (L{TLSMemoryBIOFactory} would wrap C{None} and fail on every event of
    that connection.)
    """

    def buildProtocol(self, addr: IAddress | None) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


def serverFactory(credentials: Credentials, factory: IProtocolFactory) -> TLSMemoryBIOFactory:
    """Wrap a server factory so every connection is mutual TLS."""
    return _ServerFactory(serverOptions(credentials), False, factory)


@implementer(IOpenSSLClientConnectionCreator)
class _NameCheckingCreator:
    """
    Twisted's client options, plus a check of the agent's name while its
    certificate is verified, so that a mismatch is logged as what it is:
    the name expected and the names the peer presented.  (Twisted's own
    check after the handshake stays, and only says that it failed.)
    """

    log = Logger()

    def __init__(self, inner: IOpenSSLClientConnectionCreator, peerName: str) -> None:
        self.inner = inner
        self.peerName = peerName

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection: SSL.Connection = self.inner.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._check)
        return connection

    def _check(
        self, connection: SSL.Connection, x509: Any, errno: int, depth: int, ok: int
    ) -> bool:
        if not ok:
            return False
        if depth > 0:
            return True  # the CA: OpenSSL has checked it
        names = presentedNames(Certificate(x509))
        if self.peerName.lower() in (name.lower() for name in names):
            return True
        self.log.warn(
            "{peer}: TLS name mismatch: expected {expected}, the peer presented {presented};"
            " check tls.peer_name (or the peer's host) and the agent's certificate",
            peer=_peerOf(connection),
            expected=self.peerName,
            presented=_shownNames(names),
        )
        return False


def clientCreator(credentials: Credentials, peerName: str) -> IOpenSSLClientConnectionCreator:
    """Controller side: accept only the agent the CA signed for C{peerName}."""
    return _NameCheckingCreator(
        optionsForClientTLS(
            peerName,
            trustRoot=credentials.ca,
            clientCertificate=credentials.identity,
            extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
        ),
        peerName,
    )


def clientEndpoint(
    credentials: Credentials, peerName: str, endpoint: IStreamClientEndpoint
) -> IStreamClientEndpoint:
    """Wrap a client endpoint so its connections are mutual TLS."""
    return wrapClientTLS(clientCreator(credentials, peerName), endpoint)
