"""What rcp logs of a peer's strings: cut to one sane line."""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rcp.loglevel import filtered
from rcp.logtext import CuttingObserver, cut, cutEvent


@implementer(ILogObserver)
class _Seen(list[Any]):
    def __call__(self, event: Any) -> None:
        self.append(event)


class CutTests(SynchronousTestCase):
    def test_shortTextIsKept(self) -> None:
        self.assertEqual(cut("satellite-1"), "satellite-1")
        self.assertEqual(cut("x" * 200), "x" * 200)

    def test_longTextIsCutAndSaysHowLong(self) -> None:
        self.assertEqual(cut("x" * 500_000, 10), "xxxxxxxxxx... (500000 characters)")

    def test_oneLine(self) -> None:
        self.assertEqual(cut("a\nb\x00c"), "a\\nb\\x00c")
        self.assertEqual(cut("\n" * 100, 10), "\\n\\n\\n\\n\\n... (100 characters)")

    def test_anyValue(self) -> None:
        self.assertEqual(cut(b"\x00" * 3), "b'\\x00\\x00\\x00'")
        self.assertEqual(cut(None), "None")


class EventTests(SynchronousTestCase):
    def test_everyLongFieldIsCut(self) -> None:
        event = {
            "log_format": "{peer}: ignored {method} {args!r}",
            "log_level": LogLevel.warn,
            "peer": "127.0.0.1:4129",
            "method": "m" * 500_000,
            "args": ["a" * 500_000],
        }
        text = formatEvent(cutEvent(event))
        self.assertLess(len(text), 2500)
        self.assertTrue(text.startswith("127.0.0.1:4129: ignored mmm"), text[:40])
        self.assertIn("(500000 characters)", text)
        self.assertEqual(len(event["method"]), 500_000)  # the original is untouched

    def test_observerPassesCutEvents(self) -> None:
        seen = _Seen()
        CuttingObserver(seen, limit=5)({"log_format": "{x}", "x": "123456789"})
        self.assertEqual(seen[0]["x"], "12345... (9 characters)")

    def test_levelFilter(self) -> None:
        seen = _Seen()
        observer = filtered(seen, LogLevel.info)
        for level in (LogLevel.debug, LogLevel.info, LogLevel.error):
            observer({"log_level": level, "log_namespace": "rcp", "log_format": "x"})
        self.assertEqual([e["log_level"] for e in seen], [LogLevel.info, LogLevel.error])
