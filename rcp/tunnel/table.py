"""
Everything the link tunnels, written once: the agent and the controller are
both generated from these rows.

A L{Channel} is one EVerest connection of the satellite's agent that the
controller offers again on the main board under the same name: the agent
*requires* it (its requirement id), the controller *provides* it (its
implementation id).  Commands go from the controller to the agent, variables
from the agent to the controller.  A L{PushChannel} goes the other way: the
controller *requires* it on the main board and the agent *provides* it on
the satellite, for variables only (``push_var``).

Each argument and result names its encoding on the wire (see
``shared/docs/upstream-wire-protocol.md``): C{JSON} is a JSON text inside a
msgpack string, the others are native msgpack values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from ..untrusted import PeerValueError, loadsJson, typeName


class Codec(Enum):
    """How one value crosses the wire."""

    JSON = "json"  # JSON text in a msgpack str (nlohmann::json::dump)
    INT = "int"
    BOOL = "bool"
    STR = "str"  # a plain string, such as an enum name
    NIL = "nil"  # no value (commands without a result)

    def encode(self, value: Any) -> Any:
        """An EVerest value as it goes on the wire."""
        if self is Codec.JSON:
            return dumps(value)
        if self is Codec.NIL:
            return None
        return value

    def decode(self, value: Any) -> Any:
        """
        A value from the wire (a peer's, of any type) as EVerest wants it.

        @raise PeerValueError: the value does not have this encoding (a
            L{ValueError}); nothing else is raised.
        """
        if self is Codec.JSON:
            if not isinstance(value, str | bytes):
                raise PeerValueError(f"expected a JSON text, got {typeName(value)}")
            return loadsJson(value)
        if self is Codec.INT:
            if type(value) is not int:
                raise PeerValueError(f"expected an integer, got {typeName(value)}")
        elif self is Codec.BOOL:
            if type(value) is not bool:
                raise PeerValueError(f"expected a boolean, got {typeName(value)}")
        elif self is Codec.STR:
            if type(value) is not str:
                raise PeerValueError(f"expected a string, got {typeName(value)}")
        elif self is Codec.NIL:
            return None
        return value


def dumps(value: Any) -> str:
    """Compact JSON with sorted keys, as the C++ boards write it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


J, INT, BOOL, STR, NIL = Codec.JSON, Codec.INT, Codec.BOOL, Codec.STR, Codec.NIL

#: marks a command that has no "if absent" answer: its channel is required
REQUIRED: Final = object()


@dataclass(frozen=True)
class Arg:
    name: str  # the argument name in the EVerest interface
    codec: Codec


@dataclass(frozen=True)
class Command:
    """
    One command of a channel.

    @ivar absent: the result (EVerest value) when the agent's channel is not
        connected; L{REQUIRED} for required channels.  It must be valid for
        the command's result type: a manager with C{validate_schema} refuses
        anything else (so C{None} only for commands without a result).  The
        controller answers it too when a satellite answers C{null} (what a
        C++ agent answers for an unconnected channel).
    @ivar rpc: the RPC method name, if not C{<channel>_<name>}.
    """

    name: str
    args: tuple[Arg, ...] = ()
    result: Codec = NIL
    absent: Any = REQUIRED
    rpc: str = ""


@dataclass(frozen=True)
class Var:
    """
    One variable.

    @ivar coalesce: a newer value makes an older one still queued worthless
        (a measurement or a state), so the older one may be dropped; never
        for events.
    """

    name: str
    coalesce: bool = False


@dataclass(frozen=True)
class Channel:
    """One EVerest connection tunnelled from the satellite to the main board."""

    name: str  # agent requirement id = controller implementation id
    interface: str
    required: bool = False
    commands: tuple[Command, ...] = ()
    vars: tuple[Var, ...] = ()

    def rpcName(self, command: Command) -> str:
        return command.rpc or f"{self.name}_{command.name}"


@dataclass(frozen=True)
class PushChannel:
    """
    Variables from the main board to the satellite (``push_var``).

    @ivar answers: the agent's implementation of this interface only
        carries the variables; its commands answer these fixed values.
    """

    name: str  # controller requirement id = agent implementation id
    interface: str
    vars: tuple[Var, ...] = field(default=())
    answers: tuple[tuple[str, Any], ...] = ()


def _absent(status: str) -> dict[str, str]:
    return {"status": status}


CHANNELS: Final[tuple[Channel, ...]] = (
    Channel(
        "evse_manager",
        "evse_manager",
        required=True,
        commands=(
            Command("get_evse", result=J),
            Command(
                "enable_disable", (Arg("connector_id", INT), Arg("cmd_source", J)), result=BOOL
            ),
            Command("authorize_response", (Arg("provided_token", J), Arg("validation_result", J))),
            Command("withdraw_authorization"),
            Command("reserve", (Arg("reservation_id", INT),), result=BOOL),
            Command("cancel_reservation"),
            Command("pause_charging", result=BOOL),
            Command("resume_charging", result=BOOL),
            Command("stop_transaction", (Arg("request", J),), result=BOOL),
            Command("force_unlock", (Arg("connector_id", INT),), result=BOOL),
            Command("external_ready_to_start_charging", result=BOOL),
            Command(
                "set_plug_and_charge_configuration", (Arg("plug_and_charge_configuration", J),)
            ),
            Command(
                "update_allowed_energy_transfer_modes",
                (Arg("allowed_energy_transfer_modes", J),),
                result=J,
            ),
        ),
        vars=(
            Var("session_event"),
            Var("hlc_session_failed"),
            Var("limits", coalesce=True),
            Var("ev_info", coalesce=True),
            Var("car_manufacturer"),
            Var("telemetry", coalesce=True),
            Var("powermeter", coalesce=True),
            Var("powermeter_public_key_ocmf"),
            Var("evse_id"),
            Var("hw_capabilities", coalesce=True),
            Var("enforced_limits", coalesce=True),
            Var("waiting_for_external_ready"),
            Var("ready"),
            Var("selected_protocol"),
            Var("supported_energy_transfer_modes"),
        ),
    ),
    Channel(
        "energy",
        "energy",
        required=True,
        commands=(Command("enforce_limits", (Arg("value", J),)),),
        vars=(Var("energy_flow_request", coalesce=True),),
    ),
    Channel("auth_token_provider", "auth_token_provider", vars=(Var("provided_token"),)),
    Channel("rfid_token_provider", "auth_token_provider", vars=(Var("provided_token"),)),
    Channel(
        "dc_external_derate",
        "dc_external_derate",
        commands=(Command("set_external_derating", (Arg("derate", J),), absent=None),),
        vars=(Var("plug_temperature_C", coalesce=True),),
    ),
    Channel(
        "display_message",
        "display_message",
        commands=(
            Command(
                "set_display_message", (Arg("request", J),), result=J, absent=_absent("Rejected")
            ),
            Command(
                "get_display_messages", (Arg("request", J),), result=J, absent={"messages": []}
            ),
            Command(
                "clear_display_message", (Arg("request", J),), result=J, absent=_absent("Unknown")
            ),
        ),
    ),
    Channel(
        "iso15118_extensions",
        "iso15118_extensions",
        commands=(
            Command("set_get_certificate_response", (Arg("certificate_response", J),), absent=None),
        ),
        vars=(
            Var("iso15118_certificate_request"),
            Var("charging_needs"),
            Var("ev_info", coalesce=True),
            Var("service_renegotiation_supported"),
        ),
    ),
    Channel(
        "ocpp_data_transfer",
        "ocpp_data_transfer",
        commands=(
            Command("data_transfer", (Arg("request", J),), result=J, absent=_absent("Rejected")),
        ),
    ),
    Channel(
        "system",
        "system",
        commands=(
            Command(
                "update_firmware",
                (Arg("firmware_update_request", J),),
                result=STR,
                absent="Rejected",
            ),
            Command("allow_firmware_installation", absent=None),
            Command(
                "upload_logs",
                (Arg("upload_logs_request", J),),
                result=J,
                absent={"upload_logs_status": "Rejected"},
            ),
            Command(
                "is_reset_allowed",
                (Arg("type", STR),),
                result=BOOL,
                absent=False,
                rpc="sytem_is_reset_allowed",
            ),
            Command(
                "reset",
                (Arg("type", STR), Arg("scheduled", BOOL)),
                absent=None,
                rpc="sytem_reset",
            ),
            Command("set_system_time", (Arg("timestamp", STR),), result=BOOL, absent=False),
            Command("get_boot_reason", result=STR, absent="Unknown"),
        ),
        vars=(Var("firmware_update_status"), Var("log_status")),
    ),
    Channel(
        "uk_random_delay",
        "uk_random_delay",
        commands=(
            Command("enable", absent=None),
            Command("disable", absent=None),
            Command("cancel", absent=None),
            Command("set_duration_s", (Arg("value", INT),), absent=None),
        ),
        vars=(Var("countdown", coalesce=True),),
    ),
)

PUSH_CHANNELS: Final[tuple[PushChannel, ...]] = (
    PushChannel(
        "auth",
        "auth",
        (Var("token_validation_status"),),
        answers=(
            ("set_connection_timeout", None),
            ("set_master_pass_group_id", None),
            ("withdraw_authorization", "Rejected"),
        ),
    ),
    PushChannel(
        "system",
        "system",
        (Var("firmware_update_status"), Var("log_status")),
        answers=(
            ("update_firmware", "Rejected"),
            ("allow_firmware_installation", None),
            ("upload_logs", {"upload_logs_status": "Rejected"}),
            ("is_reset_allowed", False),
            ("reset", None),
            ("set_system_time", False),
            ("get_boot_reason", "Unknown"),
        ),
    ),
)

# The link's own methods (rpc name -> argument count), served by the agent.
I_AM_HERE: Final = "i_am_here"
I_AM_READY: Final = "i_am_ready"
EXIT: Final = "exit"
RETRIEVE: Final = "retrieve_vars_and_errors"
PUSH_VAR: Final = "push_var"


def channel(name: str) -> Channel:
    for c in CHANNELS:
        if c.name == name:
            return c
    raise KeyError(name)


def varRow(interface: str, var: str) -> tuple[Channel, Var] | None:
    """The channel and var of an event's C{interface} field (a channel name on the wire)."""
    for c in CHANNELS:
        if c.name == interface:
            for v in c.vars:
                if v.name == var:
                    return c, v
    return None


def pushRow(interface: str, var: str) -> tuple[PushChannel, Var] | None:
    for c in PUSH_CHANNELS:
        if c.name == interface:
            for v in c.vars:
                if v.name == var:
                    return c, v
    return None
