"""
A smoke run of C{bench/rpc.py --quick}: it runs to the end and prints only
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

BENCH = Path(__file__).resolve().parent.parent / "bench" / "rpc.py"

KEYS = {"name", "p50_us", "p99_us", "calls_per_s", "ratio_to_floor"}


class QuickBenchTests(TestCase):
    timeout = 120

    async def test_quickRun(self) -> None:
        """
        C{bench/rpc.py --quick} exits 0 and every stdout line is a JSON
        object with exactly the documented keys, for rcp and the floor,
        plain and TLS.
        """
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [str(BENCH), "--quick"],
            env=dict(os.environ),
            path=str(BENCH.parent.parent),
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
            names.add(record["name"])
            if record["name"].startswith("floor/"):
                self.assertIsNone(record["ratio_to_floor"], text)
            else:
                self.assertIsNotNone(record["ratio_to_floor"], text)
            if record["name"].endswith("/sequential"):
                self.assertIsNotNone(record["p50_us"], text)
                self.assertIsNotNone(record["p99_us"], text)
            else:
                self.assertIsNotNone(record["calls_per_s"], text)
        expected = {
            f"{impl}/{transport}/{arg}/{kind}"
            for impl in ("rcp", "floor")
            for transport in ("plain", "tls")
            for arg in ("int", "json1k")
            for kind in ("sequential", "pipelined")
        }
        self.assertEqual(names, expected)
