"""
A stand-in for what consumes the main board's EVSEs and system: OCPP or an
API module.  It records everything it receives, for a demo's timeline and
for tests, and has helpers that call the commands OCPP would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interface import IEverestModule

#: requirement ids of the manifest
EVSE_MANAGER: Final = "evse_manager"
SYSTEM: Final = "system"

#: every variable of the evse_manager interface
EVSE_VARS: Final = (
    "session_event",
    "hlc_session_failed",
    "limits",
    "ev_info",
    "car_manufacturer",
    "telemetry",
    "powermeter",
    "powermeter_public_key_ocmf",
    "evse_id",
    "hw_capabilities",
    "enforced_limits",
    "waiting_for_external_ready",
    "ready",
    "selected_protocol",
    "supported_energy_transfer_modes",
)
#: every variable of the system interface
SYSTEM_VARS: Final = ("firmware_update_status", "log_status")


@dataclass(frozen=True)
class Record:
    """
    One thing the station received.

    @ivar time: the clock's time of arrival.
    @ivar source: C{"evse"}, C{"system"} or C{"error"}.
    @ivar index: the evse_manager connection for C{"evse"}, else None.
    @ivar name: the variable's name, or the error's type.
    @ivar value: the variable's value, or the error object.
    """

    time: float
    source: str
    index: int | None
    name: str
    value: Any


class StationConsumer:
    """
    The simulated consumer of the main board.

    @param module: requires C{evse_manager} (several connections, the index
        is the EVSE) and C{system} (one connection, optional).
    @param clock: the only source of time.
    """

    log = Logger()

    def __init__(self, module: IEverestModule, clock: IReactorTime) -> None:
        self.module = module
        self.clock = clock
        #: everything received, in order
        self.records: list[Record] = []
        self._observers: list[Callable[[Record], None]] = []
        self._started = False

    @property
    def evseCount(self) -> int:
        return self.module.connections(EVSE_MANAGER)

    def start(self) -> None:
        """Subscribe to every variable and every error, then signal ready."""
        if self._started:
            raise RuntimeError("StationConsumer started twice")
        self._started = True
        for index in range(self.evseCount):
            for var in EVSE_VARS:
                self.module.subscribeVar(
                    EVSE_MANAGER, var, self._recorder("evse", index, var), index
                )
        if self.module.connections(SYSTEM):
            for var in SYSTEM_VARS:
                self.module.subscribeVar(SYSTEM, var, self._recorder("system", None, var))
        self.module.subscribeAllErrors(self._error)
        self.module.signalReady().addErrback(self._failed)

    def observe(self, observer: Callable[[Record], None]) -> None:
        """Call C{observer} with every later record as it arrives."""
        self._observers.append(observer)

    # -- what was received ------------------------------------------------------

    def values(self, index: int | None, name: str) -> list[Any]:
        """Every value of variable C{name} of EVSE C{index} (None: the system)."""
        return [r.value for r in self.records if r.index == index and r.name == name]

    def latest(self, index: int | None, name: str) -> Any:
        """The last value of C{name}, or None."""
        found = self.values(index, name)
        return found[-1] if found else None

    def events(self, index: int) -> list[str]:
        """The session event names EVSE C{index} published, in order."""
        return [event["event"] for event in self.values(index, "session_event")]

    def sessionEvents(self, index: int) -> list[dict[str, Any]]:
        """The session events EVSE C{index} published, in order."""
        return self.values(index, "session_event")

    def errors(self) -> list[dict[str, Any]]:
        """Every error raised or cleared, in order."""
        return [r.value for r in self.records if r.source == "error"]

    # -- what OCPP would do -----------------------------------------------------

    def call(self, index: int, command: str, args: dict[str, Any] | None = None) -> Deferred[Any]:
        """Call C{command} on EVSE C{index}."""
        return self.module.call(EVSE_MANAGER, command, args or {}, index)

    def callSystem(self, command: str, args: dict[str, Any] | None = None) -> Deferred[Any]:
        """Call C{command} on the system."""
        return self.module.call(SYSTEM, command, args or {})

    def pause(self, evse: int) -> Deferred[Any]:
        """C{pause_charging} on EVSE C{evse}."""
        return self.call(evse, "pause_charging")

    def resume(self, evse: int) -> Deferred[Any]:
        """C{resume_charging} on EVSE C{evse}."""
        return self.call(evse, "resume_charging")

    def remoteStop(self, evse: int, reason: str = "Remote") -> Deferred[Any]:
        """C{stop_transaction} on EVSE C{evse}, as a RemoteStopTransaction."""
        return self.call(evse, "stop_transaction", {"request": {"reason": reason}})

    def setAvailable(
        self, evse: int, available: bool, source: str = "CSMS", priority: int = 5000
    ) -> Deferred[Any]:
        """C{enable_disable} on EVSE C{evse}, as a ChangeAvailability."""
        return self.call(
            evse,
            "enable_disable",
            {
                "connector_id": 0,
                "cmd_source": {
                    "enable_source": source,
                    "enable_state": "Enable" if available else "Disable",
                    "enable_priority": priority,
                },
            },
        )

    def updateFirmware(self, location: str, requestId: int = -1, **extra: Any) -> Deferred[Any]:
        """C{update_firmware} on the system (C{extra}: more request fields)."""
        request = {"location": location, "request_id": requestId, **extra}
        return self.callSystem("update_firmware", {"firmware_update_request": request})

    def uploadLogs(self, location: str, requestId: int = -1, **extra: Any) -> Deferred[Any]:
        """C{upload_logs} on the system (C{extra}: more request fields)."""
        request = {"location": location, "request_id": requestId, **extra}
        return self.callSystem("upload_logs", {"upload_logs_request": request})

    def reset(self, type: str = "Soft", scheduled: bool = False) -> Deferred[Any]:
        """C{reset} on the system."""
        return self.callSystem("reset", {"type": type, "scheduled": scheduled})

    # -- internals --------------------------------------------------------------

    def _recorder(self, source: str, index: int | None, name: str) -> Callable[[Any], None]:
        return lambda value: self._record(Record(self.clock.seconds(), source, index, name, value))

    def _error(self, error: dict[str, Any]) -> None:
        self._record(Record(self.clock.seconds(), "error", None, str(error.get("type")), error))

    def _record(self, record: Record) -> None:
        self.records.append(record)
        for observer in list(self._observers):
            try:
                observer(record)
            except Exception:
                self.log.failure("{module}: an observer failed", module=self.module.moduleId)

    def _failed(self, failure: Failure) -> None:
        self.log.failure("{module}: ready failed", failure, module=self.module.moduleId)
