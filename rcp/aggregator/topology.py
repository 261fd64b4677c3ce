"""
Which boards make the station, from the SystemAggregator's connections.

The requirement C{system} lists the main board's own System first, then
each satellite's C{system} as its SatelliteController offers it on the
main board; the requirement C{satellite} lists the SatelliteControllers.
One SatelliteController offers both, under one module id (see
C{etc/everest/config-main-*.yaml}: C{satellite_1} provides C{system} and
C{satellite}), so a satellite's system is matched to its link by that
module id, never by list order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: the requirement ids of the manifest
SYSTEM: Final = "system"
SATELLITE: Final = "satellite"


class TopologyError(ValueError):
    """The connections do not describe a station (one line naming the module ids)."""


@dataclass(frozen=True)
class Board:
    """
    One board of the station.

    @ivar name: the module id of its system provider: the main board's
        System, or the satellite's SatelliteController.
    @ivar systemIndex: its index in the requirement C{system}.
    @ivar satelliteIndex: its index in the requirement C{satellite}; None
        for the main board.
    """

    name: str
    systemIndex: int
    satelliteIndex: int | None

    @property
    def isMain(self) -> bool:
        return self.satelliteIndex is None


@dataclass(frozen=True)
class Topology:
    """The main board and the satellites, in the order of the requirement C{system}."""

    main: Board
    satellites: tuple[Board, ...]

    @property
    def boards(self) -> tuple[Board, ...]:
        """Every board, the main board first."""
        return (self.main, *self.satellites)

    def board(self, name: str) -> Board:
        """The board whose module id is C{name}; KeyError if none."""
        for board in self.boards:
            if board.name == name:
                return board
        raise KeyError(name)


def _names(ids: Sequence[str]) -> str:
    return ", ".join(ids) if ids else "(none)"


def topologyOf(moduleId: str, systems: Sequence[str], satellites: Sequence[str]) -> Topology:
    """
    The station described by the module ids connected to C{system} and
    C{satellite}.

    @param moduleId: the SystemAggregator's module id, for the error.
    @raise TopologyError: no main board, a module id twice, a satellite
        system without its link or a link without its system.
    """
    where = f"requirement {SYSTEM}: {_names(systems)}; {SATELLITE}: {_names(satellites)}"
    if not systems:
        raise TopologyError(
            f"{moduleId}: no System connected to the requirement {SYSTEM} ({where})"
        )
    for requirement, ids in ((SYSTEM, systems), (SATELLITE, satellites)):
        twice = sorted(name for name, n in Counter(ids).items() if n > 1)
        if twice:
            raise TopologyError(
                f"{moduleId}: connected twice to the requirement {requirement}:"
                f" {_names(twice)} ({where})"
            )
    mainName, satelliteSystems = systems[0], list(systems[1:])
    if mainName in satellites:
        raise TopologyError(
            f"{moduleId}: the first {SYSTEM} ({mainName}) must be the main board's own System,"
            f" not a satellite ({where})"
        )
    unlinked = [name for name in satelliteSystems if name not in satellites]
    orphans = [name for name in satellites if name not in satelliteSystems]
    if unlinked or orphans:
        problems = []
        if unlinked:
            problems.append(f"no {SATELLITE} link for the {SYSTEM} of {_names(unlinked)}")
        if orphans:
            problems.append(f"no {SYSTEM} for the {SATELLITE} link {_names(orphans)}")
        raise TopologyError(f"{moduleId}: {'; '.join(problems)} ({where})")
    linkIndex = {name: index for index, name in enumerate(satellites)}
    return Topology(
        Board(mainName, 0, None),
        tuple(
            Board(name, index, linkIndex[name]) for index, name in enumerate(systems) if index > 0
        ),
    )
