"""
A smoke run of C{bench/station.py --quick}: it runs to the end and prints
only well-formed measurement lines.  No timing is checked: speed is for the
full run to report, not for the test suite to assert.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from .benchsmoke import quickRun


class QuickStationBenchTests(TestCase):
    timeout = 180

    async def test_quickRun(self) -> None:
        records, err = await quickRun(self, "station.py")
        names = {r["name"] for r in records}
        for n in (1, 4):
            for name in (
                "var_latency_p50",
                "var_latency_p99",
                "main_cpu_per_satellite",
                "main_rss",
            ):
                self.assertIn(f"{name}_{n}", names)
        self.assertIn("main_rss_per_added_satellite", names)
        self.assertIn(b"goal: p99 under", err)
