"""Running a benchmark's smoke run (C{--quick}) and reading its measurement lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent

#: the keys of every measurement line
KEYS = {"name", "value", "unit", "baseline", "ratio"}


async def quickRun(case: TestCase, bench: str) -> tuple[list[dict[str, Any]], bytes]:
    """The measurement lines and the stderr of C{bench/BENCH --quick}, checked for shape."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        [str(ROOT / "bench" / bench), "--quick"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        path=str(ROOT),
        reactor=reactor,
    )
    case.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
    records = [json.loads(line) for line in out.decode().splitlines()]
    for r in records:
        case.assertEqual(set(r), KEYS, r)
        case.assertIsInstance(r["value"], (int, float))
    return records, err
