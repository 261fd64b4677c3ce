"""
rcp's tests: an everestpy module on the main board that sees a whole
station: for every satellite, whether its link is connected (the
satellite interface's is_connected) and whether its EvseManager's
variables arrive (ready).  Everything goes to its report.
"""

import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samples
from everest.framework import Module, RuntimeSession, log


class Station:
    def __init__(self) -> None:
        self.session = RuntimeSession()
        self.module = Module(self.session)
        self.setup = self.module.say_hello()
        self.report = samples.Report(os.environ["EV_MODULE"])
        for (impl, command), (_, result) in samples.AGENT_COMMANDS.items():
            if impl == "auth":
                self.module.implement_command(impl, command, lambda args, r=result: r)
        for index, evse in enumerate(self.setup.connections["evse_manager"]):
            self.module.subscribe_variable(evse, "ready", self.received(index, "ready"))
        self.module.init_done(self.ready)

    def received(self, index: int, var: str) -> Any:
        def seen(value: object) -> None:
            self.report.add(event="var", index=index, var=var, value=value)

        return seen

    def ready(self) -> None:
        self.report.add(event="ready")
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        for index, satellite in enumerate(self.setup.connections["satellite"]):
            try:
                connected = self.module.call_command(satellite, "is_connected", {})
                remote = self.module.call_command(satellite, "get_remote_endpoint_address", {})
            except Exception as e:
                self.report.add(event="failed", index=index, error=str(e))
                continue
            self.report.add(event="satellite", index=index, connected=connected, remote=remote)
        log.info("rcp test station done")
        self.report.add(event="done")


Station()
while True:
    time.sleep(3600)
