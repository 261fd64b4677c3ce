"""
Give memory freed by closed connections back to the system.

Connections come and go in bursts (a scan, a flood of idle sockets); every
object of a closed connection is freed, but the C library keeps the freed
pages, scattered between live ones, so the process grows by tens of
megabytes per thousand connections and never shrinks (measured: 1000
connections opened and closed four times, 56 MB to 208 MB; glibc's
C{malloc_trim(0)} took it back to its start).  L{Trimmer} calls
C{malloc_trim} a moment after connections were released, at most once per
interval.  Where there is no glibc it does nothing.

Trimming gives back only what is free: a closed connection's objects are
held in reference cycles until Python's cyclic collector runs, so what a
connection allocates before it is admitted must stay small (see
L{rcp.rpc.guard}; measured on the flood of C{tests/test_flood.py}: some
150 KiB per idle socket, 90 MB in use between two collections, before the
guard built the protocol inside lazily).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


def _glibcTrim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: function(0) and None


class Trimmer:
    """
    @param trim: gives freed memory back (default: glibc's C{malloc_trim(0)},
        or nothing).
    @param interval: seconds between two trims, at least.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = 2.0,
        trim: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self._trim = trim if trim is not None else _glibcTrim()
        self._call: IDelayedCall | None = None
        self._stopped = False

    def released(self) -> None:
        """Memory was released (a connection closed): trim soon."""
        if self._trim is None or self._call is not None or self._stopped:
            return
        self._call = self.clock.callLater(self.interval, self._run)

    def _run(self) -> None:
        self._call = None
        assert self._trim is not None
        self._trim()

    def stop(self) -> None:
        """No more trims (the listening port closed)."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
