"""
A station wire with faults, in user space: two TAP devices, one in each
test namespace, and this process passing Ethernet frames between them with
a delay, jitter, random loss or a partition (everything dropped).

The tests use it where the kernel has no ``sch_netem`` (``tc qdisc add ...
netem`` answers "Specified qdisc kind is unknown"); the namespaces' kernels
still run real TCP over it, with real retransmissions.  Frames keep their
order in each direction (as netem with a rate or a FIFO child does).

Run by the tests::

    python tests/wire.py NS_A IF_A ADDRESS_A/24 NS_B IF_B ADDRESS_B/24

It prints ``ready`` once both ends are up, then takes orders on stdin, one
per line, each answered with ``ok``::

    set DELAY JITTER LOSS     seconds, seconds, fraction (0 to 1)
    partition on|off          drop everything, or not

and ends at the end of stdin.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def openTap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def main(argv: list[str]) -> None:
    nsA, ifA, addrA, nsB, ifB, addrB = argv
    fds = {}
    for ns, name, address in ((nsA, ifA, addrA), (nsB, ifB, addrB)):
        fds[name] = openTap(name)
        ip("link", "set", name, "netns", ns)
        ip("-n", ns, "addr", "add", address, "dev", name)
        ip("-n", ns, "link", "set", name, "up")
        ip("-n", ns, "link", "set", "lo", "up")
    other = {fds[ifA]: fds[ifB], fds[ifB]: fds[ifA]}
    delay = jitter = loss = 0.0
    partitioned = False
    rng = random.Random(1)
    #: (send time, sequence, fd, frame)
    queue: list[tuple[float, int, int, bytes]] = []
    last = {fd: 0.0 for fd in other}
    sequence = 0
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        readable, _, _ = select.select([stdin, *other], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            if fd == stdin:
                line = sys.stdin.readline()
                if not line:
                    return
                words = line.split()
                if words[:1] == ["set"]:
                    delay, jitter, loss = (float(w) for w in words[1:4])
                elif words[:1] == ["partition"]:
                    partitioned = words[1] == "on"
                print("ok", flush=True)
                continue
            try:
                frame = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if partitioned or (loss and rng.random() < loss):
                continue
            out = other[fd]
            due = max(last[out], now + max(0.0, delay + rng.uniform(-jitter, jitter)))
            last[out] = due
            sequence += 1
            heapq.heappush(queue, (due, sequence, out, frame))
        while queue and queue[0][0] <= time.monotonic():
            _, _, out, frame = heapq.heappop(queue)
            if partitioned:
                continue
            try:
                os.write(out, frame)
            except OSError:
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
