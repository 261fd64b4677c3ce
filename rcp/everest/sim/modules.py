"""
The simulated EVerest modules, in one place.

Each takes C{(module: IEverestModule, clock: IReactorTime, ...)}, talks to
EVerest only through that module (so it runs on a L{SimBus} as well as over
MQTT) and has a C{start()} that registers its commands and subscriptions
and signals ready:

- L{EvseManagerSim}: one EVSE (evse_manager, energy, auth_token_provider);
- L{SystemSim}: the system module of a board;
- L{AuthSim}: the main board's authorization;
- L{StationConsumer}: what OCPP or an API would be on the main board.
"""

from __future__ import annotations

from .auth import AuthSim, EvseView
from .evse import EvseManagerSim
from .station import Record, StationConsumer
from .system import SystemSim, verifySignature
from .transfer import TransferError, Transfers, checkFileName, fetch, upload

__all__ = [
    "AuthSim",
    "EvseManagerSim",
    "EvseView",
    "Record",
    "StationConsumer",
    "SystemSim",
    "TransferError",
    "Transfers",
    "checkFileName",
    "fetch",
    "upload",
    "verifySignature",
]
