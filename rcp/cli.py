"""The ``rcp`` command: tools around the twistd services (``rcp certs``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet.defer import Deferred

from . import __version__
from .certs import CA_CERT, CertError, createStation, defaultBoards


def _certs(args: argparse.Namespace) -> int:
    boards = args.board or defaultBoards(args.satellites)
    serials: dict[str, str] = {}
    for given in args.serial or []:
        board, sep, serial = given.partition("=")
        if not sep or not board or not serial:
            print(f"rcp certs: --serial {given}: expected BOARD=SERIAL", file=sys.stderr)
            return 1
        serials[board] = serial
    try:
        caCreated, files = createStation(
            Path(args.dir),
            boards,
            station=args.station,
            days=args.days,
            force=args.force,
            serials=serials,
        )
    except CertError as e:
        print(f"rcp certs: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"rcp certs: {e.filename or args.dir}: {e.strerror}", file=sys.stderr)
        return 1
    directory = Path(args.dir)
    ca = directory / CA_CERT
    verb = "created" if caCreated else "reused"
    print(f"{verb} station CA {ca} (its key, ca.key, stays off the boards)")
    for board in files:
        print(f"{board.name}: copy {ca}, {board.certificate} and {board.key} to the board")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .health.report import main as report

    return report(args.sockets, args.json, sys.stdout, sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    if not 1 <= args.satellites <= 16:
        print("rcp demo: --satellites must be between 1 and 16", file=sys.stderr)
        return 2
    from twisted.internet import task

    from .demo import run

    outcome: list[bool] = []

    def main(reactor: Any) -> Deferred[None]:
        return run(reactor, args.satellites).addCallback(outcome.append)

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            return 1
    return 0 if outcome == [True] else 1


class _Parser(argparse.ArgumentParser):
    """A usage error is the error and a hint, not the usage text first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\ntry: {self.prog} --help\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="rcp",
        description="Tools for rcp, the satellite link of a distributed EVerest station.",
    )
    top.add_argument("--version", action="version", version=f"rcp {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    certs = commands.add_parser(
        "certs",
        help="create the station CA and a certificate and key per board",
        description=(
            "Create (or reuse) the station CA in DIR and a certificate and key per"
            " board, for mutual TLS on every rcp link. Board names are the identities"
            " the links check: by default main, satellite-1, ..."
        ),
    )
    certs.add_argument("--dir", "-d", default=".", help="where to write the files (default: .)")
    certs.add_argument(
        "--satellites",
        "-n",
        type=int,
        default=3,
        help="number of satellites when no --board is given (default: 3)",
    )
    certs.add_argument(
        "--board",
        "-b",
        action="append",
        help="make a certificate for this board name (repeatable); replaces the default list",
    )
    certs.add_argument(
        "--station", default="station", help="station name written in the certificates"
    )
    certs.add_argument(
        "--days",
        type=int,
        default=None,
        help="validity in days (default: no expiry; boards may have no real-time clock)",
    )
    certs.add_argument(
        "--force", action="store_true", help="replace existing board files (never the CA)"
    )
    certs.add_argument(
        "--serial",
        action="append",
        metavar="BOARD=SERIAL",
        help=(
            "put the board's serial number in its certificate (repeatable), so that a"
            " controller finding it by serial number (discovery.serial) can check it"
        ),
    )
    certs.set_defaults(run=_certs)

    demo = commands.add_parser(
        "demo",
        help="run a main board and satellites on this machine through a scripted scenario",
        description=(
            "Start one main board and several satellites, each with a simulated EVerest,"
            " linked by rcp over loopback with mutual TLS; run charging sessions, pause,"
            " resume, remote stop, an error and a satellite reset; print a timeline and"
            " exit 0 only if every step was observed."
        ),
    )
    demo.add_argument(
        "--satellites", "-n", type=int, default=3, help="number of satellites (default: 3)"
    )
    demo.set_defaults(run=_demo)

    status = commands.add_parser(
        "status",
        help="show every rcp link of this board at a glance",
        description=(
            "Ask the rcp processes of this board (their status sockets in /run/rcp, or"
            " the sockets given) how their links are: state, peer, round-trip time,"
            " polls, events, reconnects, versions. Exit status 0 when every link is"
            " synchronised, 1 when one is not or a process does not answer, 2 when no"
            " rcp process is found."
        ),
    )
    status.add_argument("sockets", nargs="*", metavar="SOCKET", help="status sockets to ask")
    status.add_argument("--json", action="store_true", help="the full reports, as JSON")
    status.set_defaults(run=_status)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
