"""
The lowest log level a twistd command writes (setting C{log_level}, option
C{--debug}).

twistd writes every event, debug ones included, and chooses its log
observer before the service exists.  So the options of an rcp command,
once parsed, hand twistd (through its own C{--logger} option) a factory
that makes twistd's usual observer behind a level filter.  C{twist} has
its own C{--log-level} and is left alone.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
)

from .logtext import CuttingObserver

#: the twistd options of the command being started, and its level
_pending: list[tuple[Any, LogLevel]] = []

_FACTORY = f"{__name__}.twistdObserver"


def levelNamed(name: str) -> LogLevel:
    level: LogLevel = LogLevel.levelWithName(name)
    return level


def filtered(observer: Any, level: LogLevel) -> ILogObserver:
    """
    C{observer} (new or legacy style), seeing only events at C{level} or
    above, with long field values cut (L{CuttingObserver}).
    """
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)
    return FilteringLogObserver(
        CuttingObserver(observer), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )


def install(twistdOptions: Any, level: LogLevel) -> None:
    """
    Make twistd log through L{twistdObserver} at C{level}, unless its
    C{--logger} option names an observer of the user's.

    @param twistdOptions: the parent (twistd) options of the command, or
        L{None} when the options are parsed outside twistd.
    """
    from twisted.application.app import ServerOptions

    if not isinstance(twistdOptions, ServerOptions):
        return  # twist (its own --log-level), or no command line at all
    if twistdOptions.get("logger") is not None:
        return
    _pending[:] = [(twistdOptions, level)]
    twistdOptions["logger"] = _FACTORY


def twistdObserver() -> ILogObserver:
    """twistd's usual observer (file, stdout or syslog), filtered by level."""
    options, level = _pending[-1]
    if sys.platform == "win32":  # pragma: no cover
        from twisted.application.app import AppLogger as Logger
    else:
        from twisted.scripts._twistd_unix import UnixAppLogger as Logger
    plain = dict(options)
    plain["logger"] = None
    return filtered(Logger(plain)._getLogObserver(), level)
