"""
rcp's tests: an everestpy module on the main board that drives a
SatelliteController: every tunnelled command, then the trigger that makes
the satellite publish every variable and raise its errors, then the one that
clears them.  Everything it sees goes to its report; "done" ends it.
"""

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samples
from everest.framework import Module, RuntimeSession, log

VARS = {
    "evse_manager": [var for (impl, var) in samples.VARS if impl == "evse"],
    "energy": ["energy_flow_request"],
    "rfid_token_provider": ["provided_token"],
    "dc_external_derate": ["plug_temperature_C"],
    "uk_random_delay": ["countdown"],
    "system": list(samples.SYSTEM_VARS),
}
TRIGGER = ("evse_manager", "external_ready_to_start_charging")
CLEAR = ("evse_manager", "resume_charging")
WAIT = 20.0


class Consumer:
    def __init__(self) -> None:
        self.session = RuntimeSession()
        self.module = Module(self.session)
        self.setup = self.module.say_hello()
        self.report = samples.Report(os.environ["EV_MODULE"])
        self.seen: set[tuple[str, str]] = set()
        self.raised: set[tuple[str, str]] = set()
        self.cleared: set[tuple[str, str]] = set()
        for (impl, command), (_, result) in samples.AGENT_COMMANDS.items():
            self.module.implement_command(impl, command, lambda args, r=result: r)
        self.module.implement_command("system", "reset", lambda args: None)
        for requirement, names in VARS.items():
            for var in names:
                self.subscribe(requirement, var)
        [satellite] = self.setup.connections["satellite"]
        self.module.subscribe_all_errors(satellite, self.errorRaised, self.errorCleared)
        self.module.init_done(self.ready)

    def subscribe(self, requirement: str, var: str) -> None:
        [fulfillment] = self.setup.connections[requirement]

        def received(value: object) -> None:
            self.seen.add((requirement, var))
            self.report.add(event="var", requirement=requirement, var=var, value=value)

        self.module.subscribe_variable(fulfillment, var, received)

    def errorRaised(self, error: Any) -> None:
        self.raised.add((error.type, error.sub_type))
        self.report.add(event="raised", type=error.type, sub_type=error.sub_type,
                        message=error.message, state=error.state.name)  # fmt: skip

    def errorCleared(self, error: Any) -> None:
        self.cleared.add((error.type, error.sub_type))
        self.report.add(event="cleared", type=error.type, sub_type=error.sub_type,
                        state=error.state.name)  # fmt: skip

    def call(self, requirement: str, command: str, args: dict[str, Any]) -> None:
        [fulfillment] = self.setup.connections[requirement]
        try:
            result = self.module.call_command(fulfillment, command, args)
        except Exception as e:
            self.report.add(event="failed", requirement=requirement, cmd=command, error=str(e))
            return
        self.report.add(event="result", requirement=requirement, cmd=command, result=result)

    def ready(self) -> None:
        self.report.add(event="ready")
        threading.Thread(target=self.run, daemon=True).start()

    def waitFor(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            if time.monotonic() > deadline:
                self.report.add(event="timeout", what=what)
                return
            time.sleep(0.05)

    def run(self) -> None:
        for (requirement, command), (args, _) in samples.COMMANDS.items():
            if (requirement, command) not in (TRIGGER, CLEAR):
                self.call(requirement, command, args)
        for command in ("is_connected", "get_local_endpoint_address",
                        "get_remote_endpoint_address"):  # fmt: skip
            self.call("satellite", command, {})
        for (impl, var), value in samples.PUSHED.items():
            self.module.publish_variable(impl, var, value)
        expected = {(r, v) for r, names in VARS.items() for v in names}
        errors = set(samples.ERRORS)
        self.call(*TRIGGER, {})
        self.waitFor("vars", lambda: expected <= self.seen)
        self.waitFor("raised", lambda: errors <= self.raised)
        self.call(*CLEAR, {})
        self.waitFor("cleared", lambda: errors <= self.cleared)
        log.info("rcp test consumer done")
        self.report.add(event="done")


Consumer()
while True:
    time.sleep(3600)
