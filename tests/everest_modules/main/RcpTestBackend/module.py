"""
rcp's tests: an everestpy module in the backend's place, calling the
station's system (the SystemAggregator) and reporting every answer and
status, so the test can check them against the framework's schemas.
"""

import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samples
from everest.framework import Module, RuntimeSession

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get_boot_reason", {}),
    ("is_reset_allowed", {"type": "Soft"}),
    ("set_system_time", {"timestamp": samples.TIMESTAMP}),
    ("allow_firmware_installation", {}),
    (
        "update_firmware",
        {"firmware_update_request": {"location": "http://127.0.0.1:1/fw.bin", "request_id": 41}},
    ),
    (
        "upload_logs",
        {
            "upload_logs_request": {
                "location": "ftp://127.0.0.1:1/",
                "request_id": 42,
                "retries": 1,
                "retry_interval_s": 1,
            }
        },
    ),
]


class Backend:
    def __init__(self) -> None:
        self.session = RuntimeSession()
        self.module = Module(self.session)
        self.setup = self.module.say_hello()
        self.report = samples.Report(os.environ["EV_MODULE"])
        [self.system] = self.setup.connections["system"]
        self.final = threading.Event()
        for var in ("firmware_update_status", "log_status"):
            self.module.subscribe_variable(self.system, var, self.received(var))
        self.module.init_done(self.ready)

    def received(self, var: str) -> Any:
        def seen(value: Any) -> None:
            self.report.add(event="var", var=var, value=value)
            if var == "log_status" and value.get("log_status") in ("Uploaded", "UploadFailure"):
                self.final.set()

        return seen

    def ready(self) -> None:
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        for command, args in CALLS:
            try:
                result = self.module.call_command(self.system, command, args)
            except Exception as e:
                self.report.add(event="failed", cmd=command, error=str(e))
                continue
            self.report.add(event="result", cmd=command, result=result)
        self.final.wait(60)
        # last: the station's reset (the stand-in Systems only record it)
        try:
            result = self.module.call_command(
                self.system, "reset", {"type": "Soft", "scheduled": False}
            )
        except Exception as e:
            self.report.add(event="failed", cmd="reset", error=str(e))
        else:
            self.report.add(event="result", cmd="reset", result=result)
        self.report.add(event="done")


Backend()
while True:
    time.sleep(3600)
