"""
A station's certificates: one private CA, one certificate and key per board.

Every rcp link of a station is mutual TLS under that CA: the controller on
the main board checks that the agent's certificate names the satellite it
expects, the agent accepts only clients whose certificate the CA signed.

Choices made for boards in the field:

- validity starts on 1970-01-02 and, by default, never ends (RFC 5280's
  99991231235959Z): boards without a battery-backed clock boot with a time
  far in the past, and an internal certificate that expires takes a whole
  station off line years after installation;
- keys are ECDSA P-256, written with mode 0600; an existing CA is reused,
  so boards can be added to a station later; existing files are never
  overwritten unless asked.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .discovery.records import checkSerial

CA_CERT = "ca.pem"
CA_KEY = "ca.key"

NOT_BEFORE = datetime.datetime(1970, 1, 2, tzinfo=datetime.UTC)
NO_WELL_DEFINED_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)

_BOARD_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class CertError(Exception):
    """The certificates cannot be made as asked; nothing was overwritten."""


@dataclass(frozen=True)
class BoardFiles:
    name: str
    certificate: Path
    key: Path
    created: bool


def checkBoardName(name: str) -> str:
    """
    A board name is a DNS label (it is the certificate's identity and a
    file name): lower-case letters, digits and inner hyphens.
    """
    if not _BOARD_NAME.match(name) or name == "ca":
        raise CertError(
            f"bad board name {name!r}: use lower-case letters, digits and inner"
            " hyphens (at most 63), and not 'ca'"
        )
    return name


def _writeNew(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CertError(f"{path} exists; use --force to replace it") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _keyPem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(commonName: str, station: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, station),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _expiry(days: int | None) -> datetime.datetime:
    if days is None:
        return NO_WELL_DEFINED_EXPIRY
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


def _loadOrCreateCa(
    directory: Path, station: str, days: int | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    certPath, keyPath = directory / CA_CERT, directory / CA_KEY
    if certPath.exists() or keyPath.exists():
        try:
            cert = x509.load_pem_x509_certificate(certPath.read_bytes())
            key = serialization.load_pem_private_key(keyPath.read_bytes(), None)
        except (OSError, ValueError, TypeError) as e:
            raise CertError(f"cannot reuse the CA in {directory}: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != cert.public_key().public_numbers()  # type: ignore[union-attr]
        ):
            raise CertError(f"{keyPath} is not the key of {certPath}")
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{station} rcp CA", station)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(_expiry(days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _writeNew(keyPath, _keyPem(key), 0o600, overwrite=False)
    _writeNew(certPath, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite=False)
    return cert, key, True


def _issue(
    ca: x509.Certificate,
    caKey: ec.EllipticCurvePrivateKey,
    board: str,
    station: str,
    days: int | None,
    serial: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    names: list[x509.GeneralName] = [x509.DNSName(board)]
    if serial is not None and serial != board:
        names.append(x509.DNSName(serial))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(board, station))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(_expiry(days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
            critical=False,
        )
        .sign(caKey, hashes.SHA256())
    )
    return cert, key


def createStation(
    directory: Path,
    boards: Iterable[str],
    station: str = "station",
    days: int | None = None,
    force: bool = False,
    serials: Mapping[str, str] | None = None,
) -> tuple[bool, list[BoardFiles]]:
    """
    Make (or reuse) the station CA in C{directory} and a certificate and key
    per board, named C{BOARD.pem} and C{BOARD.key}.

    @param days: validity in days; L{None}: no expiry.
    @param force: replace existing board files (never the CA).
    @param serials: board serial numbers, put in the certificates as a
        second name (what a controller finding a board by serial number
        checks).
    @return: whether the CA was created, and the files of each board.
    @raise CertError: a bad name or an existing file; files written before
        the problem was found stay.
    """
    names = [checkBoardName(b) for b in boards]
    serials = dict(serials or {})
    for board, serial in serials.items():
        if board not in names:
            raise CertError(f"--serial names {board!r}, which is not among the boards")
        try:
            checkSerial(serial)
        except ValueError as e:
            raise CertError(f"--serial {board}: {e}") from None
    if len(set(names)) != len(names):
        raise CertError("a board name is given twice")
    if days is not None and days < 1:
        raise CertError("--days must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".pem", ".key"):
            if (directory / (name + suffix)).exists() and not force:
                raise CertError(f"{directory / (name + suffix)} exists; use --force to replace it")
    ca, caKey, created = _loadOrCreateCa(directory, station, days)
    result = []
    for name in names:
        cert, key = _issue(ca, caKey, name, station, days, serials.get(name))
        keyPath, certPath = directory / f"{name}.key", directory / f"{name}.pem"
        _writeNew(keyPath, _keyPem(key), 0o600, overwrite=force)
        _writeNew(certPath, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite=force)
        result.append(BoardFiles(name, certPath, keyPath, True))
    return created, result


def defaultBoards(satellites: int) -> list[str]:
    return ["main"] + [f"satellite-{i}" for i in range(1, satellites + 1)]
