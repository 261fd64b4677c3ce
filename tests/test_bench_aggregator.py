"""
A smoke run of C{bench/aggregator.py --quick}: it runs to the end and prints
only well-formed measurement lines.  No timing is checked: speed is for the
full run to report, not for the test suite to assert.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from .benchsmoke import quickRun
from .common import requireProgram


class QuickAggregatorBenchTests(TestCase):
    timeout = 180

    async def test_quickRun(self) -> None:
        requireProgram("curl")
        records, err = await quickRun(self, "aggregator.py")
        self.assertEqual(
            {r["name"] for r in records},
            {
                "log_collection_throughput",
                "firmware_backend_bytes_ratio",
                "firmware_update_wall",
                "firmware_update_wall_unthrottled",
                "receiver_rss_growth",
            },
        )
        self.assertIn(b"goal firmware_backend_bytes_ratio", err)
