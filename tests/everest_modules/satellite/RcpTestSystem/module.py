"""rcp's tests: an everestpy stand-in for the satellite's System."""

import os
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samples
from everest.framework import Module, RuntimeSession


class System:
    def __init__(self) -> None:
        self.session = RuntimeSession()
        self.module = Module(self.session)
        self.setup = self.module.say_hello()
        self.report = samples.Report(os.environ["EV_MODULE"])
        for (requirement, command), (_, result) in samples.COMMANDS.items():
            if requirement == "system":
                self.module.implement_command("main", command, self.handler(command, result))
        for command in ("reset",):
            self.module.implement_command("main", command, self.handler(command, None))
        self.module.init_done(lambda: self.report.add(event="ready"))

    def handler(self, command: str, result: object) -> Callable[[object], object]:
        def handle(args: object) -> object:
            self.report.add(event="call", impl="main", cmd=command, args=args, t=time.time())
            if command == "set_system_time":
                threading.Thread(target=self.publish, daemon=True).start()
            return result

        return handle

    def publish(self) -> None:
        time.sleep(0.2)
        for var, value in samples.SYSTEM_VARS.items():
            self.module.publish_variable("main", var, value)


System()
while True:
    time.sleep(3600)
