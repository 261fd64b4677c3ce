"""
Version consistency across a link.

Before ``i_am_here``, an rcp controller calls L{HELLO} with its own
versions; an rcp agent answers with its own.  A C++ agent has no such
method and answers rpclib's "could not find function" error: the
controller then knows its peer is not rcp and keeps upstream's behaviour
(timings included).  A C++ controller never calls it, so an agent that sees
``i_am_here`` without a hello knows the same.

Everything here is pure: the L{Versions} of each side, their wire form
(untrusted when it comes from the peer), and L{compare}, which lists the
mismatches a policy cares about.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal

from .. import __version__

#: the RPC method of the version exchange (rcp peers only)
HELLO: Final = "rcp_hello"

#: an rcp agent's method that answers at once (the link's round-trip time)
PING: Final = "rcp_ping"

#: seconds between two pings of a synchronised rcp-rcp link
PING_INTERVAL: Final = 5.0

#: the wire protocol generation: upstream's methods and encodings, plus rcp_hello
WIRE_PROTOCOL: Final = "1"

#: what a policy may compare
Field = Literal["rcp", "wire", "firmware", "everest"]
FIELDS: Final[tuple[Field, ...]] = ("rcp", "wire", "firmware", "everest")

Policy = Literal["warn", "refuse"]

#: the longest text kept of a peer's value
_LIMIT: Final = 64


class VersionsError(ValueError):
    """The peer's versions are unusable; the message says why."""


@dataclass(frozen=True)
class Versions:
    """
    What one end of a link runs.

    @ivar rcp: rcp's version.
    @ivar wire: the wire protocol generation.
    @ivar firmware: the board's firmware (image) version, if known.
    @ivar everest: the board's EVerest version, if known.
    @ivar board: the board's name.
    @ivar bootReason: why the board last started, if known.
    @ivar started: wall-clock time (seconds since the epoch) the process started.
    """

    rcp: str
    wire: str = WIRE_PROTOCOL
    firmware: str = ""
    everest: str = ""
    board: str = ""
    bootReason: str = ""
    started: float = 0.0

    def toWire(self) -> dict[str, Any]:
        return {
            "rcp": self.rcp,
            "wire": self.wire,
            "firmware": self.firmware,
            "everest": self.everest,
            "board": self.board,
            "boot_reason": self.bootReason,
            "started": self.started,
        }

    @classmethod
    def fromWire(cls, value: object) -> Versions:
        """
        The peer's versions, as it sent them.

        @raise VersionsError: not a map, or C{rcp} missing; other keys that
            are missing or unusable are left empty (a later rcp may send
            more, or less).
        """
        if not isinstance(value, Mapping):
            raise VersionsError(f"versions are not a map but {type(value).__name__}")

        def text(key: str) -> str:
            raw = value.get(key, "")
            if not isinstance(raw, str):
                return ""
            cleaned = "".join(c for c in raw if c.isprintable())
            return cleaned[:_LIMIT]

        rcp = text("rcp")
        if not rcp:
            raise VersionsError("versions without rcp's version")
        started = value.get("started", 0.0)
        if not isinstance(started, (int, float)) or isinstance(started, bool):
            started = 0.0
        if started != started or not 0 <= started < 1e11:  # NaN, or nonsense
            started = 0.0
        return cls(
            rcp=rcp,
            wire=text("wire"),
            firmware=text("firmware"),
            everest=text("everest"),
            board=text("board"),
            bootReason=text("boot_reason"),
            started=float(started),
        )

    def describe(self) -> str:
        parts = [f"rcp {self.rcp}", f"wire {self.wire or '?'}"]
        if self.firmware:
            parts.append(f"firmware {self.firmware}")
        if self.everest:
            parts.append(f"EVerest {self.everest}")
        return ", ".join(parts)

    def asDict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Mismatch:
    field: Field
    ours: str
    theirs: str

    def __str__(self) -> str:
        return f"{self.field} {self.ours or '?'} here, {self.theirs or '?'} on the peer"


def compare(ours: Versions, theirs: Versions, which: Iterable[Field]) -> list[Mismatch]:
    """
    The mismatches among C{which}; a value one side does not know (empty)
    is no mismatch, except for the wire protocol.
    """
    found = []
    for name in which:
        mine, peer = getattr(ours, name), getattr(theirs, name)
        if mine == peer:
            continue
        if name != "wire" and (not mine or not peer):
            continue
        found.append(Mismatch(name, mine, peer))
    return found


def firmwareVersion(osRelease: str = "/etc/os-release") -> str:
    """The board's image version from os-release (Yocto writes VERSION_ID and BUILD_ID)."""
    try:
        lines = Path(osRelease).read_text(errors="replace").splitlines()[:100]
    except OSError:
        return ""
    keys: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            keys[key.strip()] = value.strip().strip("\"'")[:_LIMIT]
    version = keys.get("VERSION_ID") or keys.get("VERSION") or ""
    build = keys.get("BUILD_ID", "")
    name = keys.get("ID", "")
    text = " ".join(part for part in (name, version) if part)
    return f"{text} ({build})" if build and text else text or build


def localVersions(
    board: str, firmware: str | None, everest: str, started: float, bootReason: str = ""
) -> Versions:
    """This process's versions; C{firmware} L{None}: read from os-release."""
    return Versions(
        rcp=__version__,
        wire=WIRE_PROTOCOL,
        firmware=firmwareVersion() if firmware is None else firmware,
        everest=everest,
        board=board,
        bootReason=bootReason,
        started=started,
    )


def _checkFields() -> None:  # the wire names and the dataclass stay in step
    assert {f.name for f in fields(Versions)} >= set(FIELDS)


_checkFields()


@dataclass(frozen=True)
class Hello:
    """
    One end's part in the version exchange.

    @ivar ours: this end's versions.
    @ivar policy: what a mismatch of C{compare} does.
    @ivar compare: what must match.
    @ivar liveness: the liveness limit when the peer is rcp: the
        controller's poll timeout, the agent's poll watchdog (seconds).
    """

    ours: Versions
    policy: Policy = "warn"
    compare: tuple[Field, ...] = ("wire", "rcp")
    liveness: float = 5.0

    def mismatches(self, theirs: Versions) -> list[Mismatch]:
        return compare(self.ours, theirs, self.compare)


def isMissingMethod(error: object) -> bool:
    """Whether an RPC error answer says the peer has no such method (rpclib's text)."""
    return isinstance(error, str) and "could not find function" in error


def helloFrom(settings: Any, liveness: float, board: str, started: float) -> Hello:
    """
    This end's part in the exchange, from its settings.

    @param settings: the L{rcp.settings.VersionSettings} of the process.
    """
    return Hello(
        ours=localVersions(board, settings.firmware, settings.everest, started),
        policy=settings.policy,
        compare=tuple(settings.compare),
        liveness=liveness,
    )
