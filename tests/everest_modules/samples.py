"""
Schema-valid sample values (EVerest core 2026.02.0 types) shared by the
test's everestpy modules and the tests that check what arrived: the
arguments the main board's consumer sends, the results the satellite's
modules answer, and the variables they publish.

Standard library only: the modules run under the manager's python3.
"""

from __future__ import annotations

from typing import Any

TIMESTAMP = "2026-03-01T12:00:00.000Z"
TOKEN: dict[str, Any] = {
    "id_token": {"value": "CARD1", "type": "ISO14443"},
    "authorization_type": "RFID",
}
LIMITS_RES: dict[str, Any] = {"ac_max_current_A": {"value": 16.0, "source": "rcp-test"}}
ENFORCED_LIMITS: dict[str, Any] = {
    "uuid": "evse_2",
    "valid_for": 10,
    "limits_root_side": LIMITS_RES,
    "schedule": [{"timestamp": TIMESTAMP, "limits_to_root": LIMITS_RES}],
}

#: (requirement of the consumer, command) -> (arguments, the satellite's result)
COMMANDS: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {
    ("evse_manager", "get_evse"): ({}, {"id": 1, "connectors": [{"id": 1}]}),
    ("evse_manager", "enable_disable"): (
        {
            "connector_id": 1,
            "cmd_source": {
                "enable_source": "LocalAPI",
                "enable_state": "Enable",
                "enable_priority": 5,
            },
        },
        True,
    ),
    ("evse_manager", "authorize_response"): (
        {
            "provided_token": TOKEN,
            "validation_result": {"authorization_status": "Accepted", "tariff_messages": []},
        },
        None,
    ),
    ("evse_manager", "withdraw_authorization"): ({}, None),
    ("evse_manager", "reserve"): ({"reservation_id": 42}, True),
    ("evse_manager", "cancel_reservation"): ({}, None),
    ("evse_manager", "pause_charging"): ({}, True),
    ("evse_manager", "stop_transaction"): ({"request": {"reason": "Remote"}}, False),
    ("evse_manager", "force_unlock"): ({"connector_id": 1}, True),
    ("evse_manager", "set_plug_and_charge_configuration"): (
        {"plug_and_charge_configuration": {"pnc_enabled": True}},
        None,
    ),
    ("evse_manager", "update_allowed_energy_transfer_modes"): (
        {"allowed_energy_transfer_modes": ["AC_three_phase_core"]},
        "Accepted",
    ),
    # the trigger: the satellite publishes every variable and raises its errors
    ("evse_manager", "external_ready_to_start_charging"): ({}, True),
    # and clears them
    ("evse_manager", "resume_charging"): ({}, True),
    ("energy", "enforce_limits"): ({"value": ENFORCED_LIMITS}, None),
    ("dc_external_derate", "set_external_derating"): (
        {"derate": {"max_export_power_W": 1.0}},
        None,
    ),
    ("uk_random_delay", "enable"): ({}, None),
    ("uk_random_delay", "disable"): ({}, None),
    ("uk_random_delay", "cancel"): ({}, None),
    ("uk_random_delay", "set_duration_s"): ({"value": 600}, None),
    ("system", "update_firmware"): (
        {"firmware_update_request": {"location": "ftp://127.0.0.1/fw.bin", "request_id": 7}},
        # Accepted would end the link (the satellite installs and restarts)
        "Rejected",
    ),
    ("system", "allow_firmware_installation"): ({}, None),
    ("system", "upload_logs"): (
        {"upload_logs_request": {"location": "ftp://127.0.0.1/logs/", "request_id": 3}},
        {"upload_logs_status": "Accepted", "file_name": "diagnostics-rcp.tar.gz"},
    ),
    ("system", "is_reset_allowed"): ({"type": "Soft"}, True),
    ("system", "set_system_time"): ({"timestamp": TIMESTAMP}, True),
    ("system", "get_boot_reason"): ({}, "PowerUp"),
    # not connected on the satellite: the table's absent answers
    ("display_message", "set_display_message"): (
        {"request": [{"message": {"content": "hello"}}]},
        {"status": "Rejected"},
    ),
    ("display_message", "get_display_messages"): ({"request": {}}, {"messages": []}),
    ("display_message", "clear_display_message"): ({"request": {"id": 1}}, {"status": "Unknown"}),
    ("iso15118_extensions", "set_get_certificate_response"): (
        {"certificate_response": {"status": "Accepted", "certificate_action": "Install"}},
        None,
    ),
    ("ocpp_data_transfer", "data_transfer"): (
        {"request": {"vendor_id": "rcp"}},
        {"status": "Rejected"},
    ),
}

#: channels the satellite does not connect (the agent answers for them)
ABSENT = ("display_message", "iso15118_extensions", "ocpp_data_transfer")

#: (implementation of the satellite's EVSE module, variable) -> value
VARS: dict[tuple[str, str], Any] = {
    ("evse", "session_event"): {
        "uuid": "s1",
        "event": "SessionStarted",
        "timestamp": TIMESTAMP,
        "session_started": {
            "reason": "EVConnected",
            "meter_value": {"timestamp": TIMESTAMP, "energy_Wh_import": {"total": 0.0}},
        },
    },
    ("evse", "hlc_session_failed"): {"uuid": "s1", "reason": "ProtocolNegotiationFailed"},
    ("evse", "limits"): {"max_current": 16.0, "nr_of_phases_available": 3},
    ("evse", "ev_info"): {"soc": 50.0},
    ("evse", "car_manufacturer"): "Unknown",
    ("evse", "telemetry"): {
        "evse_temperature_C": 30.0,
        "fan_rpm": 0.0,
        "supply_voltage_12V": 12.0,
        "supply_voltage_minus_12V": -12.0,
        "relais_on": False,
    },
    ("evse", "powermeter"): {"timestamp": TIMESTAMP, "energy_Wh_import": {"total": 1234.5}},
    ("evse", "powermeter_public_key_ocmf"): "rcp-test-key",
    ("evse", "evse_id"): "DE*RCP*E2",
    ("evse", "hw_capabilities"): {
        "max_current_A_import": 32.0,
        "min_current_A_import": 6.0,
        "max_phase_count_import": 3,
        "min_phase_count_import": 1,
        "max_current_A_export": 0.0,
        "min_current_A_export": 0.0,
        "max_phase_count_export": 3,
        "min_phase_count_export": 1,
        "supports_changing_phases_during_charging": False,
        "supports_cp_state_E": False,
        "connector_type": "IEC62196Type2Cable",
    },
    ("evse", "enforced_limits"): ENFORCED_LIMITS,
    ("evse", "waiting_for_external_ready"): False,
    ("evse", "ready"): True,
    ("evse", "selected_protocol"): "IEC61851-1",
    ("evse", "supported_energy_transfer_modes"): ["AC_three_phase_core"],
    ("energy_grid", "energy_flow_request"): {
        "uuid": "evse_2",
        "children": [],
        "node_type": "Evse",
        "schedule_import": [],
        "schedule_export": [],
        "schedule_setpoints": [],
    },
    ("token_provider", "provided_token"): TOKEN,
    ("dc_external_derate", "plug_temperature_C"): 25.5,
    ("random_delay", "countdown"): {
        "countdown_s": 60,
        "current_limit_after_delay_A": 16.0,
        "current_limit_during_delay_A": 0.0,
    },
}

#: the satellite's System's variables
SYSTEM_VARS: dict[str, Any] = {
    "firmware_update_status": {"firmware_update_status": "Downloading", "request_id": 7},
    "log_status": {"log_status": "Uploading", "request_id": 3},
}

#: what the main board pushes to the satellite (the consumer publishes these)
PUSHED: dict[tuple[str, str], Any] = {
    ("auth", "token_validation_status"): {"token": TOKEN, "status": "Accepted"},
    ("system", "firmware_update_status"): {"firmware_update_status": "Installed", "request_id": 9},
    ("system", "log_status"): {"log_status": "Uploaded", "request_id": 4},
}

#: the agent's own auth/system commands (fixed answers), called on the satellite
AGENT_COMMANDS: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {
    ("auth", "set_connection_timeout"): ({"connection_timeout": 30}, None),
    ("auth", "set_master_pass_group_id"): ({"master_pass_group_id": "g"}, None),
    ("auth", "withdraw_authorization"): ({"request": {}}, "Rejected"),
    ("system", "update_firmware"): (
        {"firmware_update_request": {"location": "ftp://x/", "request_id": 1}},
        "Rejected",
    ),
    ("system", "allow_firmware_installation"): ({}, None),
    ("system", "upload_logs"): (
        {"upload_logs_request": {"location": "ftp://x/"}},
        {"upload_logs_status": "Rejected"},
    ),
    ("system", "is_reset_allowed"): ({"type": "Soft"}, False),
    ("system", "set_system_time"): ({"timestamp": TIMESTAMP}, False),
    ("system", "get_boot_reason"): ({}, "Unknown"),
}

#: the errors the satellite raises (type, sub_type), then clears
ERRORS = (
    ("evse_manager/MREC4OverCurrentFailure", "rcp-test-evse"),
    ("generic/CommunicationFault", "rcp-test-meter"),  # the power meter's
)


class Report:
    """
    What a test module saw, one JSON object a line, in
    C{$RCP_TEST_REPORT_DIR/<module id>.jsonl} (the test reads it).
    """

    def __init__(self, moduleId: str) -> None:
        import os
        import threading

        self.path = os.path.join(os.environ["RCP_TEST_REPORT_DIR"], f"{moduleId}.jsonl")
        self._lock = threading.Lock()

    def add(self, **event: Any) -> None:
        import json

        line = json.dumps(event, sort_keys=True)
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")


def readReport(path: str) -> list[dict[str, Any]]:
    """The events of a report file so far."""
    import json
    import os

    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]
