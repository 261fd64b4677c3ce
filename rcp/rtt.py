"""The round-trip time of a TCP connection, as the kernel measures it."""

from __future__ import annotations

import socket
import struct
from typing import Any

# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32 fields;
# tcpi_rtt (microseconds, smoothed) is the 16th u32.
_TCP_INFO_SIZE = 104
_RTT_OFFSET = 8 + 15 * 4


def tcpRoundTrip(transport: Any) -> float | None:
    """
    The smoothed round-trip time in seconds of the TCP connection under
    C{transport} (through TLS), or L{None} where it cannot be read (not
    TCP, not Linux, closed).
    """
    for _ in range(4):
        if transport is None:
            return None
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return _rtt(handle)
        transport = getattr(transport, "transport", None)
    return None


def _rtt(sock: socket.socket) -> float | None:
    option = getattr(socket, "TCP_INFO", None)
    if option is None or sock.fileno() < 0 or sock.type != socket.SOCK_STREAM:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _RTT_OFFSET + 4:
        return None
    (micros,) = struct.unpack_from("I", info, _RTT_OFFSET)
    return micros / 1e6 if micros else None
