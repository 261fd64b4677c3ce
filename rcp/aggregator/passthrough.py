"""
The station's SystemAggregator module (C{etc/everest/modules/SystemAggregator}),
as an interim pass-through.

THIS IS NOT THE AGGREGATOR YET.  Firmware fan-out to the satellites, the
combination of their firmware and log statuses, and the collection of
their log files are not implemented.  Until they are, the module only
passes through to the main board's own System:

  - every command of its C{system} implementation (C{update_firmware},
    C{allow_firmware_installation}, C{upload_logs}, C{is_reset_allowed},
    C{reset}, C{set_system_time}, C{get_boot_reason}) is called, with the
    arguments as received (C{{}} when sent as null), on its requirement
    C{system} index 0, and that call's result or error is the answer;
  - that System's C{firmware_update_status} and C{log_status} are
    published again, unchanged, on its own C{system} implementation.

The requirement C{system} from index 1 on (the satellites' systems) and
the requirement C{satellite} are not used.

The module has no link of its own, so it signals ready as soon as it has
offered its commands and subscribed the variables; the station's global
ready still waits for the SatelliteController modules, whose links must
synchronise first.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..everest.interface import CommandHandler, IEverestModule, VarCallback

#: the implementation id of the manifest, and its requirement of the boards' systems
SYSTEM: Final = "system"

#: the index of the main board's own System among the requirement's connections
MAIN_BOARD: Final = 0

#: the commands of interface system
COMMANDS: Final = (
    "update_firmware",
    "allow_firmware_installation",
    "upload_logs",
    "is_reset_allowed",
    "reset",
    "set_system_time",
    "get_boot_reason",
)

#: the variables of interface system
VARS: Final = ("firmware_update_status", "log_status")


class SystemAggregatorModule:
    """
    The interim SystemAggregator: a pass-through to the main board's System
    (see the module docstring).

    @param module: the SystemAggregator module (configuration received).
    """

    log = Logger()

    def __init__(self, module: IEverestModule) -> None:
        self.module = module
        self._started = False

    def start(self) -> None:
        """
        Offer the commands, subscribe the main System's variables, then
        signal ready.

        @raise ValueError: no System is connected to the requirement C{system}.
        """
        if self._started:
            raise RuntimeError("SystemAggregatorModule started twice")
        if self.module.connections(SYSTEM) <= MAIN_BOARD:
            raise ValueError(
                f"{self.module.moduleId}: no System connected to the requirement {SYSTEM}"
            )
        self._started = True
        self.log.info(
            "{module}: interim SystemAggregator: passes everything through to"
            " {requirement}[{index}] (no fan-out to the satellites yet)",
            module=self.module.moduleId,
            requirement=SYSTEM,
            index=MAIN_BOARD,
        )
        for command in COMMANDS:
            self.module.provideCommand(SYSTEM, command, self._passCommand(command))
        for var in VARS:
            self.module.subscribeVar(SYSTEM, var, self._passVar(var), MAIN_BOARD)
        self.module.signalReady().addErrback(
            lambda f: self.log.failure("{module}: ready failed", f, module=self.module.moduleId)
        )

    def _passCommand(self, command: str) -> CommandHandler:
        def handler(args: dict[str, Any] | None) -> Deferred[Any]:
            return self.module.call(SYSTEM, command, dict(args or {}), MAIN_BOARD)

        return handler

    def _passVar(self, var: str) -> VarCallback:
        def received(value: Any) -> None:
            self.module.publishVar(SYSTEM, var, value)

        return received
