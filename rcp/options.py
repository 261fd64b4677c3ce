"""Command-line options shared by the twistd commands: a config file plus overrides."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

from twisted.python import usage

from . import loglevel
from .config import ConfigError, describe, load
from .tls import Credentials


class ConfigOptions(usage.Options):
    """
    C{--config FILE} and the options that override its most-changed
    settings.  After parsing, C{self.settings} holds the checked settings
    and C{self.credentials} the loaded TLS files (L{None} for plain links).

    A bad configuration ends the process at once with one line on stderr
    naming the file (or option), the key path and the problem: the usage
    text that twistd prints for a L{usage.UsageError} would bury it.
    """

    command: ClassVar[str]
    settingsClass: ClassVar[type[Any]]
    #: option name -> dotted key path it overrides
    overrides: ClassVar[dict[str, str]]
    #: flag name -> (dotted key path, value it sets)
    flagOverrides: ClassVar[dict[str, tuple[str, object]]] = {}

    optFlags = [["debug", None, "log debug lines too (sets log_level: debug)"]]

    synopsis = "[--config FILE] [options]"
    longdesc = ""

    settings: Any
    credentials: Credentials | None

    @classmethod
    def settingsHelp(cls) -> str:
        lines = ["Settings of the YAML config file (key: default):"]
        for path, default, text in describe(cls.settingsClass):
            lines.append(f"  {path}: {default}")
            lines.extend("      " + line for line in textwrap.wrap(text, 70))
        return "\n".join(lines) + "\n"

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        An unknown option or a missing value ends the process with the
        error and a hint on one line each, not the whole help text twistd
        would print before it.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            program = self._program()
            raise SystemExit(f"{self.command}: {e}\ntry: {program} {self.command} --help") from None

    def _program(self) -> str:
        """The command the user typed: twistd, twist, or whatever ran us."""
        from twisted.application.app import ServerOptions

        name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
        if name and name not in ("-c", "__main__.py"):
            return name
        return "twistd" if isinstance(getattr(self, "parent", None), ServerOptions) else "twist"

    def getUsage(self, width: int | None = None) -> str:
        return str(super().getUsage(width)) + "\n" + self.settingsHelp()

    def postOptions(self) -> None:
        given: dict[str, tuple[str, object]] = {}
        for option, path in self.overrides.items():
            if self[option] is not None:
                given[path] = (f"--{option}", self[option])
        for flag, (path, value) in self.flagOverrides.items():
            if self[flag]:
                given[path] = (f"--{flag}", value)
        if self["debug"]:
            given["log_level"] = ("--debug", "debug")
        source = self["config"] or "defaults"
        try:
            self.settings = load(self.settingsClass, self["config"], given)
            self.credentials = self.settings.tls.credentials()
        except ConfigError as e:
            if not e.source:
                e.source = source
            raise SystemExit(f"{self.command}: {e}") from None
        loglevel.install(
            getattr(self, "parent", None), loglevel.levelNamed(self.settings.log_level)
        )
