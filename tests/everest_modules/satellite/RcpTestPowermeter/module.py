"""rcp's tests: an everestpy power meter that raises and clears an error on request."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samples
from everest.framework import Module, RuntimeSession


class Meter:
    def __init__(self) -> None:
        self.session = RuntimeSession()
        self.module = Module(self.session)
        self.setup = self.module.say_hello()
        self.report = samples.Report(os.environ["EV_MODULE"])
        self.module.implement_command("meter", "start_transaction", self.start)
        self.module.implement_command("meter", "stop_transaction", self.stop)
        self.module.init_done(lambda: self.report.add(event="ready"))

    def start(self, args: object) -> object:
        return {"status": "OK"}

    def stop(self, args: dict[str, str]) -> object:
        errorType, subType = samples.ERRORS[1]
        if args["transaction_id"] == "raise":
            factory = self.module.get_error_factory("meter")
            self.module.raise_error("meter", factory.create_error(errorType, subType, "no answer"))
        elif args["transaction_id"] == "clear":
            self.module.clear_error("meter", errorType, subType)
        self.report.add(event="call", impl="meter", cmd="stop_transaction", args=args)
        return {"status": "OK"}


Meter()
while True:
    time.sleep(3600)
