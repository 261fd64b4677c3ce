"""rcp's tests: an everestpy stand-in for the satellite's EvseManager."""

import os
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samples
from everest.framework import Module, RuntimeSession, log

#: the consumer's requirement (rcp's channel) of each of our implementations
CHANNEL = {
    "evse": "evse_manager",
    "energy_grid": "energy",
    "dc_external_derate": "dc_external_derate",
    "random_delay": "uk_random_delay",
}


class Evse:
    def __init__(self) -> None:
        self.session = RuntimeSession()
        self.module = Module(self.session)
        self.setup = self.module.say_hello()
        self.report = samples.Report(os.environ["EV_MODULE"])
        for impl, channel in CHANNEL.items():
            for (requirement, command), (_, result) in samples.COMMANDS.items():
                if requirement == channel:
                    self.module.implement_command(
                        impl, command, self.handler(impl, command, result)
                    )
        for var in ("token_validation_status",):
            self.subscribe("agent_auth", var)
        for var in ("firmware_update_status", "log_status"):
            self.subscribe("agent_system", var)
        self.module.init_done(self.ready)

    def subscribe(self, requirement: str, var: str) -> None:
        [fulfillment] = self.setup.connections[requirement]

        def received(value: object) -> None:
            self.report.add(event="var", requirement=requirement, var=var, value=value)

        self.module.subscribe_variable(fulfillment, var, received)

    def handler(self, impl: str, command: str, result: object) -> Callable[[object], object]:
        def handle(args: object) -> object:
            self.report.add(event="call", impl=impl, cmd=command, args=args)
            if command == "external_ready_to_start_charging":
                threading.Thread(target=self.publishAll, daemon=True).start()
            elif command == "resume_charging":
                threading.Thread(target=self.clearAll, daemon=True).start()
            return result

        return handle

    def ready(self) -> None:
        self.report.add(event="ready")
        threading.Thread(target=self.callAgent, daemon=True).start()

    def callAgent(self) -> None:
        """The agent's own auth and system commands, with their fixed answers."""
        for (impl, command), (args, _) in samples.AGENT_COMMANDS.items():
            [fulfillment] = self.setup.connections[f"agent_{impl}"]
            try:
                result = self.module.call_command(fulfillment, command, args)
            except Exception as e:  # the test fails on it
                self.report.add(event="failed", impl=impl, cmd=command, error=str(e))
                continue
            self.report.add(event="result", impl=impl, cmd=command, result=result)

    def publishAll(self) -> None:
        time.sleep(0.2)  # after the command's answer
        for (impl, var), value in samples.VARS.items():
            self.module.publish_variable(impl, var, value)
        error = samples.ERRORS[0]
        factory = self.module.get_error_factory("evse")
        self.module.raise_error("evse", factory.create_error(error[0], error[1], "rcp test error"))
        self.meter("raise")
        log.info("published every variable and raised the errors")

    def clearAll(self) -> None:
        time.sleep(0.2)
        error = samples.ERRORS[0]
        self.module.clear_error("evse", error[0], error[1])
        self.meter("clear")
        log.info("cleared the errors")

    def meter(self, what: str) -> None:
        [fulfillment] = self.setup.connections["meter"]
        self.module.call_command(fulfillment, "stop_transaction", {"transaction_id": what})


Evse()
while True:
    time.sleep(3600)
