"""
A smoke run of C{bench/aggregator.py --quick}: it runs to the end and prints
only well-formed measurement lines.  No timing is checked: speed is for the
full run to report, not for the test suite to assert.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "aggregator.py"

KEYS = {"name", "value", "unit", "baseline", "ratio"}


class QuickAggregatorBenchTests(TestCase):
    timeout = 180

    async def test_quickRun(self) -> None:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [str(BENCH), "--quick"],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            path=str(ROOT),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        records = [json.loads(line) for line in out.decode().splitlines()]
        names = {r["name"] for r in records}
        self.assertEqual(
            names,
            {
                "log_collection_throughput",
                "firmware_backend_bytes_ratio",
                "firmware_update_wall",
                "receiver_rss_growth",
            },
        )
        for r in records:
            self.assertEqual(set(r), KEYS, r)
            self.assertIsInstance(r["value"], (int, float))
        self.assertIn(b"goal firmware_backend_bytes_ratio", err)
