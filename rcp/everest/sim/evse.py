"""
A simulated EvseManager: one EVSE with one connector, its energy node and
its token provider.

It answers every command of the C{evse_manager}, C{energy} and
C{auth_token_provider} interfaces with the result types EVerest's own
EvseManager gives, and plays realistic charging sessions, driven by
L{EvseManagerSim.plugIn}, L{EvseManagerSim.unplug} and
L{EvseManagerSim.swipeCard} (what a car and a driver would do) and by the
commands it receives.  All time comes from the injected clock.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interface import IEverestModule, cleared, makeError
from .common import timestamp

#: implementation ids of the manifest
EVSE: Final = "evse"
ENERGY_GRID: Final = "energy_grid"
TOKEN_PROVIDER: Final = "token_provider"

#: session states
IDLE: Final = "Idle"  # no car
WAITING_FOR_AUTH: Final = "WaitingForAuthorization"  # plugged in, session open
CHARGING: Final = "Charging"  # transaction running, energy flowing
PAUSED: Final = "ChargingPausedEVSE"  # transaction running, paused by the EVSE
FINISHED: Final = "Finished"  # transaction over, car still plugged in

#: the states in which a transaction runs
TRANSACTION_STATES: Final = frozenset({CHARGING, PAUSED})

#: the connector every simulated EVSE has
CONNECTOR_ID: Final = 1

ERROR_NAMESPACE: Final = "evse_manager/"


def _number(value: Any) -> float | None:
    """A limit as EVerest writes it: a number, or C{{"value": n, "source": ...}}."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class EvseManagerSim:
    """
    One simulated EVSE.

    @param module: how the simulation reaches EVerest; it provides the
        implementations C{evse} (evse_manager), C{energy_grid} (energy) and
        C{token_provider} (auth_token_provider).
    @param clock: the only source of time.
    @param evseId: the EVSE id C{get_evse} reports; by default the module's
        mapping, else 1.
    @param evseIdText: the C{evse_id} variable (the EMAID-style EVSE id).
    @param connectorType: the connector type C{get_evse} reports.
    @param meterInterval: seconds between two power meter readings.
    @param maxCurrentA: the hardware's current limit per phase.
    @param phases: phases the hardware switches.
    @param voltageV: the grid voltage per phase.
    @param evMaxPowerW: what the simulated car draws at most.
    @param initialEnergyWh: the meter's reading at start.
    """

    log = Logger()

    def __init__(
        self,
        module: IEverestModule,
        clock: IReactorTime,
        *,
        evseId: int | None = None,
        evseIdText: str | None = None,
        connectorType: str = "cCCS2",
        meterInterval: float = 1.0,
        maxCurrentA: float = 32.0,
        phases: int = 3,
        voltageV: float = 230.0,
        evMaxPowerW: float = 11000.0,
        initialEnergyWh: float = 0.0,
    ) -> None:
        if meterInterval <= 0:
            raise ValueError("meterInterval must be positive")
        self.module = module
        self.clock = clock
        if evseId is None:
            mapping = module.mapping() or {}
            evseId = int(mapping.get("evse", 1))
        self.evseId = evseId
        self.evseIdText = evseIdText if evseIdText is not None else f"DE*RCP*E{evseId}"
        self.connectorType = connectorType
        self.meterInterval = meterInterval
        self.maxCurrentA = maxCurrentA
        self.phases = phases
        self.voltageV = voltageV
        self.evMaxPowerW = evMaxPowerW

        #: the session state, one of the module's state constants
        self.state: str = IDLE
        #: whether new sessions are allowed
        self.enabled = True
        #: the reservation in force, if any
        self.reservationId: int | None = None
        #: the meter's import register
        self.energyWh = initialEnergyWh
        #: the last enforce_limits value
        self.enforcedLimits: dict[str, Any] | None = None
        self.plugAndChargeConfiguration: dict[str, Any] | None = None
        self.allowedEnergyTransferModes: list[str] = [self._transferMode()]
        #: the injected errors still active, by (type, sub_type)
        self.activeErrors: dict[tuple[str, str], dict[str, Any]] = {}

        self._enableClaims: dict[str, tuple[str, int]] = {}
        self._sessionUuid: str | None = None
        self._sessionToken: dict[str, Any] | None = None
        self._accruedAt = clock.seconds()
        self._loop: LoopingCall | None = None
        self._started = False
        self._stopped = False

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Offer every command, then tell EVerest this module is ready."""
        if self._started:
            raise RuntimeError("EvseManagerSim started twice")
        self._started = True
        provide = self.module.provideCommand
        for name, handler in (
            ("get_evse", self._getEvse),
            ("enable_disable", self._enableDisable),
            ("authorize_response", self._authorizeResponse),
            ("withdraw_authorization", self._withdrawAuthorization),
            ("reserve", self._reserve),
            ("cancel_reservation", self._cancelReservation),
            ("pause_charging", self._pauseCharging),
            ("resume_charging", self._resumeCharging),
            ("stop_transaction", self._stopTransaction),
            ("force_unlock", self._forceUnlock),
            ("external_ready_to_start_charging", self._externalReady),
            ("set_plug_and_charge_configuration", self._setPlugAndCharge),
            ("update_allowed_energy_transfer_modes", self._updateTransferModes),
        ):
            provide(EVSE, name, handler)
        provide(ENERGY_GRID, "enforce_limits", self._enforceLimits)
        self.module.signalReady().addCallbacks(self._globallyReady, self._readyFailed)

    def stop(self) -> None:
        """Stop the clock-driven publications (the board goes down)."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _globallyReady(self, _: object) -> None:
        if self._stopped:
            return
        # Variables are not retained: publish what a consumer needs once
        # everyone listens, as the real module does in its ready().
        publish = self.module.publishVar
        publish(EVSE, "evse_id", self.evseIdText)
        publish(EVSE, "hw_capabilities", self.hardwareCapabilities())
        publish(EVSE, "supported_energy_transfer_modes", [self._transferMode()])
        publish(EVSE, "waiting_for_external_ready", False)
        publish(EVSE, "limits", self.limits())
        publish(EVSE, "ready", True)
        self._accrue()
        loop = LoopingCall(self._tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.meterInterval, now=False).addErrback(self._loopFailed)

    def _readyFailed(self, failure: Failure) -> None:
        self.log.failure("{module}: ready failed", failure, module=self.module.moduleId)

    def _loopFailed(self, failure: Failure) -> None:
        self.log.failure("{module}: meter loop stopped", failure, module=self.module.moduleId)

    # -- what the car and the driver do ---------------------------------------

    def plugIn(self) -> bool:
        """
        A car is plugged in: a session starts and waits for authorization.

        @return: C{False} when refused (disabled, or a car is plugged in).
        """
        if not self.enabled or self.state != IDLE:
            return False
        self._sessionUuid = str(uuid.uuid4())
        started: dict[str, Any] = {"reason": "EVConnected", "meter_value": self.powermeter()}
        if self.reservationId is not None:
            started["reservation_id"] = self.reservationId
        self.state = WAITING_FOR_AUTH
        self._event("SessionStarted", session_started=started)
        self._event("AuthRequired")
        return True

    def unplug(self) -> bool:
        """
        The car is unplugged: a running transaction ends (EVDisconnected),
        then the session.

        @return: C{False} when no car was plugged in.
        """
        if self.state == IDLE:
            return False
        if self.state in TRANSACTION_STATES:
            self._finishTransaction("EVDisconnected", None)
        self._accrue()
        self.state = IDLE
        self._event("SessionFinished", session_finished={"meter_value": self.powermeter()})
        self._sessionUuid = None
        self._sessionToken = None
        return True

    def swipeCard(self, token: str, connectors: list[int] | None = None) -> dict[str, Any]:
        """
        An RFID card is presented: publish it as C{provided_token}.

        @param connectors: the EVSE ids the token is meant for, if the reader
            knows.
        @return: the published token.
        """
        provided: dict[str, Any] = {
            "id_token": {"value": token, "type": "ISO14443"},
            "authorization_type": "RFID",
        }
        if connectors is not None:
            provided["connectors"] = list(connectors)
        self.module.publishVar(TOKEN_PROVIDER, "provided_token", provided)
        return provided

    def injectError(self, type: str, sub_type: str = "", message: str = "") -> dict[str, Any]:
        """
        Raise an error on C{evse}; a type without a namespace is taken from
        C{evse_manager/}.

        @return: the raised error object.
        """
        fullType = type if "/" in type else ERROR_NAMESPACE + type
        error = makeError(
            fullType,
            self.module.moduleId,
            EVSE,
            message=message or f"simulated {fullType}",
            subType=sub_type,
            severity="High",
            mapping=self.module.mapping(),
            timestamp=timestamp(self.clock),
        )
        self.activeErrors[(fullType, sub_type)] = error
        self.module.raiseError(EVSE, error)
        return error

    def clearInjected(self, type: str, sub_type: str = "") -> bool:
        """
        Clear an error raised with L{injectError}.

        @return: C{False} when no such error is active.
        """
        fullType = type if "/" in type else ERROR_NAMESPACE + type
        error = self.activeErrors.pop((fullType, sub_type), None)
        if error is None:
            return False
        self.module.clearError(EVSE, cleared(error))
        return True

    # -- readings -------------------------------------------------------------

    @property
    def powerW(self) -> float:
        """What flows now."""
        return self.powerCapW() if self.state == CHARGING else 0.0

    def powerCapW(self) -> float:
        """The most the EVSE delivers: car, hardware and enforced limits."""
        cap = min(self.evMaxPowerW, self.maxCurrentA * self.voltageV * self.phases)
        limits = (self.enforcedLimits or {}).get("limits_root_side")
        if isinstance(limits, dict):
            total = _number(limits.get("total_power_W"))
            if total is not None:
                cap = min(cap, total)
            current = _number(limits.get("ac_max_current_A"))
            if current is not None:
                phases = _number(limits.get("ac_max_phase_count"))
                used = self.phases if phases is None else max(1, min(int(phases), self.phases))
                cap = min(cap, current * self.voltageV * used)
        return max(0.0, cap)

    def powermeter(self) -> dict[str, Any]:
        """A powermeter#/Powermeter reading of now."""
        self._accrue()
        power = self.powerW
        current = power / (self.voltageV * self.phases)
        phases = [f"L{n}" for n in range(1, 4)]
        active = phases[: self.phases]
        return {
            "timestamp": timestamp(self.clock),
            "meter_id": f"{self.module.moduleId}/powermeter",
            "energy_Wh_import": {
                "total": round(self.energyWh, 3),
                **{p: round(self.energyWh / self.phases, 3) for p in active},
            },
            "energy_Wh_export": {"total": 0.0},
            "power_W": {
                "total": round(power, 3),
                **{p: round(power / self.phases, 3) for p in active},
            },
            "current_A": {p: round(current if p in active else 0.0, 3) for p in phases},
            "voltage_V": {p: self.voltageV for p in phases},
            "frequency_Hz": {p: 50.0 for p in phases},
        }

    def telemetry(self) -> dict[str, Any]:
        """An evse_board_support#/Telemetry reading of now."""
        load = self.powerW / max(1.0, self.maxCurrentA * self.voltageV * self.phases)
        return {
            "evse_temperature_C": round(25.0 + 20.0 * load, 1),
            "fan_rpm": round(1200 + 1800 * load) if self.state == CHARGING else 0,
            "supply_voltage_12V": 12.0,
            "supply_voltage_minus_12V": -12.0,
            "relais_on": self.state == CHARGING,
        }

    def hardwareCapabilities(self) -> dict[str, Any]:
        """The evse_board_support#/HardwareCapabilities of the simulated board."""
        return {
            "max_current_A_import": self.maxCurrentA,
            "min_current_A_import": 6.0,
            "max_phase_count_import": self.phases,
            "min_phase_count_import": 1,
            "max_current_A_export": 0.0,
            "min_current_A_export": 0.0,
            "max_phase_count_export": self.phases,
            "min_phase_count_export": 1,
            "supports_changing_phases_during_charging": False,
            "connector_type": "IEC62196Type2Cable",
        }

    def limits(self) -> dict[str, Any]:
        """The evse_manager#/Limits in force."""
        return {
            "uuid": self.module.moduleId,
            "max_current": round(self.powerCapW() / (self.voltageV * self.phases), 3),
            "nr_of_phases_available": self.phases,
        }

    def energyFlowRequest(self) -> dict[str, Any]:
        """The energy#/EnergyFlowRequest this EVSE sends its energy manager."""
        now = timestamp(self.clock)

        def entry(current: float) -> dict[str, Any]:
            limits = {
                "ac_max_current_A": {"value": current, "source": self.module.moduleId},
                "ac_max_phase_count": {"value": self.phases, "source": self.module.moduleId},
            }
            return {"timestamp": now, "limits_to_root": limits, "limits_to_leaves": limits}

        return {
            "children": [],
            "uuid": self.module.moduleId,
            "node_type": "Evse",
            "schedule_import": [entry(self.maxCurrentA)],
            "schedule_export": [entry(0.0)],
            "schedule_setpoints": [],
        }

    # -- commands -------------------------------------------------------------

    def _getEvse(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.evseId, "connectors": [{"id": CONNECTOR_ID, "type": self.connectorType}]}

    def _enableDisable(self, args: dict[str, Any]) -> bool:
        source = args.get("cmd_source")
        if not isinstance(source, dict):
            return False
        name = str(source.get("enable_source", "Unspecified"))
        state = str(source.get("enable_state"))
        priority = source.get("enable_priority", 0)
        if state not in ("Enable", "Disable", "Unassigned") or not isinstance(priority, int):
            return False
        if state == "Unassigned":
            self._enableClaims.pop(name, None)
        else:
            self._enableClaims[name] = (state, priority)
        # EVerest's rule: the claim with the lowest priority number wins;
        # with none left the EVSE is enabled.
        winner = min(self._enableClaims.values(), key=lambda claim: claim[1], default=None)
        enabled = winner is None or winner[0] == "Enable"
        if enabled != self.enabled:
            self.enabled = enabled
            self._event("Enabled" if enabled else "Disabled", source=dict(source))
        return state == "Unassigned" or enabled == (state == "Enable")

    def _authorizeResponse(self, args: dict[str, Any]) -> None:
        token = args.get("provided_token")
        result = args.get("validation_result")
        status = result.get("authorization_status") if isinstance(result, dict) else None
        if status != "Accepted" or not isinstance(token, dict):
            self.log.info(
                "{module}: authorization {status} not used",
                module=self.module.moduleId,
                status=status,
            )
            return
        if self.state != WAITING_FOR_AUTH:
            self.log.info(
                "{module}: no session waits for authorization ({state})",
                module=self.module.moduleId,
                state=self.state,
            )
            return
        self._sessionToken = token
        self._accrue()
        self._event("Authorized", authorization_event={"meter_value": self.powermeter()})
        started: dict[str, Any] = {"id_tag": token, "meter_value": self.powermeter()}
        if self.reservationId is not None:
            # the reservation is used up by the transaction it was made for
            started["reservation_id"] = self.reservationId
            self.reservationId = None
        self._event("TransactionStarted", transaction_started=started)
        self._event("PrepareCharging", charging_state_changed_event=self._meterEvent())
        self.state = CHARGING
        self._accruedAt = self.clock.seconds()
        self._event("ChargingStarted", charging_state_changed_event=self._meterEvent())

    def _withdrawAuthorization(self, args: dict[str, Any]) -> None:
        # EvseManager withdraws only an authorization no transaction uses
        # yet; the simulation starts the transaction as soon as it is
        # authorized, so there is never one to withdraw.
        self.log.info(
            "{module}: withdraw_authorization in state {state}: nothing to withdraw",
            module=self.module.moduleId,
            state=self.state,
        )

    def _reserve(self, args: dict[str, Any]) -> bool:
        reservationId = args.get("reservation_id")
        if not isinstance(reservationId, int) or isinstance(reservationId, bool):
            return False
        if not self.enabled or self.state != IDLE or self.reservationId is not None:
            return False
        self.reservationId = reservationId
        self._event("ReservationStart")
        return True

    def _cancelReservation(self, args: dict[str, Any]) -> None:
        if self.reservationId is not None:
            self.reservationId = None
            self._event("ReservationEnd")

    def _pauseCharging(self, args: dict[str, Any]) -> bool:
        if self.state != CHARGING:
            return False
        self._accrue()
        self.state = PAUSED
        self._event("ChargingPausedEVSE", charging_paused_evse={"reasons": ["UserPause"]})
        return True

    def _resumeCharging(self, args: dict[str, Any]) -> bool:
        if self.state != PAUSED:
            return False
        self._accrue()
        self.state = CHARGING
        self._event("ChargingStarted", charging_state_changed_event=self._meterEvent())
        return True

    def _stopTransaction(self, args: dict[str, Any]) -> bool:
        if self.state not in TRANSACTION_STATES:
            return False
        request = args.get("request")
        request = request if isinstance(request, dict) else {}
        reason = request.get("reason")
        idTag = request.get("id_tag")
        self._event("StoppingCharging", charging_state_changed_event=self._meterEvent())
        self._finishTransaction(
            reason if isinstance(reason, str) else "Other",
            idTag if isinstance(idTag, dict) else None,
        )
        self.state = FINISHED
        return True

    def _forceUnlock(self, args: dict[str, Any]) -> bool:
        return args.get("connector_id", CONNECTOR_ID) in (0, CONNECTOR_ID)

    def _externalReady(self, args: dict[str, Any]) -> bool:
        return True

    def _setPlugAndCharge(self, args: dict[str, Any]) -> None:
        configuration = args.get("plug_and_charge_configuration")
        if isinstance(configuration, dict):
            self.plugAndChargeConfiguration = configuration

    def _updateTransferModes(self, args: dict[str, Any]) -> str:
        modes = args.get("allowed_energy_transfer_modes")
        if isinstance(modes, list) and modes:
            self.allowedEnergyTransferModes = [str(m) for m in modes]
        return "Accepted"

    def _enforceLimits(self, args: dict[str, Any]) -> None:
        value = args.get("value")
        if not isinstance(value, dict):
            return
        self._accrue()
        self.enforcedLimits = value
        self.module.publishVar(EVSE, "enforced_limits", value)
        self.module.publishVar(EVSE, "limits", self.limits())

    # -- internals ------------------------------------------------------------

    def _transferMode(self) -> str:
        return "AC_three_phase_core" if self.phases == 3 else "AC_single_phase_core"

    def _accrue(self) -> None:
        """Bring the meter's register up to the clock's now."""
        at = self.clock.seconds()
        if self.state == CHARGING:
            self.energyWh += self.powerCapW() * max(0.0, at - self._accruedAt) / 3600.0
        self._accruedAt = at

    def _meterEvent(self) -> dict[str, Any]:
        return {"meter_value": self.powermeter()}

    def _finishTransaction(self, reason: str, idTag: dict[str, Any] | None) -> None:
        self._accrue()
        finished: dict[str, Any] = {"meter_value": self.powermeter(), "reason": reason}
        if idTag is not None:
            finished["id_tag"] = idTag
        self.state = FINISHED
        self._event("TransactionFinished", transaction_finished=finished)

    def _event(self, event: str, **details: Any) -> None:
        value: dict[str, Any] = {
            "uuid": self._sessionUuid or str(uuid.uuid4()),
            "timestamp": timestamp(self.clock),
            "event": event,
            "connector_id": CONNECTOR_ID,
            **details,
        }
        self.module.publishVar(EVSE, "session_event", value)

    def _tick(self) -> None:
        try:
            if self.state == CHARGING:
                self.module.publishVar(EVSE, "powermeter", self.powermeter())
                self.module.publishVar(EVSE, "telemetry", self.telemetry())
            else:
                self._accrue()
            self.module.publishVar(ENERGY_GRID, "energy_flow_request", self.energyFlowRequest())
        except Exception:
            self.log.failure("{module}: meter tick failed", module=self.module.moduleId)
