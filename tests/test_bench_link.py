"""
A smoke run of C{bench/link.py --quick}: it runs to the end and prints only
well-formed measurement lines.  No timing is checked: speed is for the full
run to report, not for the test suite to assert.
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
BENCH = ROOT / "bench" / "link.py"

KEYS = {"name", "value", "unit", "baseline", "ratio"}

NAMES = {
    "var_latency_p50",
    "var_latency_p99",
    "cmd_rtt_p50",
    "cmd_rtt_p99",
    "idle_calls_per_s",
    "idle_cpu_s_satellite",
    "idle_cpu_s_main",
    "rss_mb_satellite",
    "rss_mb_main",
}


class QuickLinkBenchTests(TestCase):
    timeout = 120

    async def test_quickRun(self) -> None:
        """
        C{bench/link.py --quick} exits 0 and every stdout line is a JSON
        object with the documented keys, one for each measurement, each
        with its baseline.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [str(BENCH), "--quick"],
            env=env,
            path=str(ROOT),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode("utf-8", "replace"))
        lines = out.decode("utf-8").splitlines()
        self.assertTrue(lines, "no output")
        names = set()
        for text in lines:
            record = json.loads(text)
            self.assertIsInstance(record, dict, text)
            self.assertEqual(set(record), KEYS, text)
            self.assertIsInstance(record["name"], str, text)
            self.assertIsInstance(record["unit"], str, text)
            self.assertIsInstance(record["value"], int | float, text)
            self.assertIsInstance(record["baseline"], int | float, text)
            names.add(record["name"])
        self.assertEqual(names, NAMES)
