"""
``rcp status``: the station at a glance, from the status sockets of the rcp
processes on this board (or the sockets given).

This is a command-line tool, not part of a reactor: it reads each socket
with a blocking HTTP request and a short timeout.
"""

from __future__ import annotations

import glob
import http.client
import json
import socket
from collections.abc import Iterable
from typing import Any

from ..settings import runDirectory

#: seconds to wait for one process's answer
TIMEOUT = 3.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(self.path)
        self.sock = sock


def fetch(path: str) -> dict[str, Any]:
    """One process's report; C{{"error": ...}} when it does not answer usably."""
    connection = _UnixConnection(path)
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        body = response.read(4 * 1024 * 1024)
        if response.status != 200:
            return {"socket": path, "error": f"HTTP {response.status}"}
        document = json.loads(body)
        if not isinstance(document, dict):
            return {"socket": path, "error": "not a status report"}
        document["socket"] = path
        return document
    except (OSError, ValueError, http.client.HTTPException) as e:
        return {"socket": path, "error": str(e) or type(e).__name__}
    finally:
        connection.close()


def sockets(given: Iterable[str]) -> list[str]:
    paths = list(given)
    return paths or sorted(glob.glob(f"{runDirectory()}/*.sock"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _clean(text: object, width: int = 40) -> str:
    shown = "".join(c if c.isprintable() else "?" for c in str(text))
    return shown if len(shown) <= width else shown[: width - 1] + "~"


COLUMNS = (
    "PROCESS",
    "LINK",
    "STATE",
    "FOR",
    "PEER",
    "RTT p50/p99 ms",
    "POLL",
    "EVENTS",
    "COALESCED",
    "QUEUE",
    "RECONN",
    "PEER VERSIONS",
)


def rows(reports: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for report in reports:
        if "error" in report:
            where, problem = _clean(report["socket"]), _clean(report["error"])
            out.append((where, "-", "NOT ANSWERING", "-", problem, *("-",) * 7))
            continue
        process = report.get("process", {})
        name = f"{process.get('role', '?')} ({process.get('board', '?')})"
        links = report.get("links", [])
        if not links:
            out.append((_clean(name), "-", "no link") + ("-",) * 9)
        for link in links:
            versions = link.get("peer_versions") or {}
            if link.get("peer_is_rcp") is False:
                peerVersions = "not rcp (C++)"
            elif versions:
                peerVersions = f"rcp {versions.get('rcp', '?')} wire {versions.get('wire', '?')}"
            else:
                peerVersions = "-"
            if link.get("peer_uptime_s") is not None:
                peerVersions += f", up {_duration(link['peer_uptime_s'])}"
            if link.get("peer_boot_reason"):
                peerVersions += f", booted: {link['peer_boot_reason']}"
            if link.get("version_mismatches"):
                peerVersions += " MISMATCH"
            peer = link.get("peer_address") or "-"
            if link.get("peer_name"):
                peer += f" ({link['peer_name']})"
            state = str(link.get("state", "?"))
            out.append(
                (
                    _clean(name),
                    _clean(link.get("name", "?")),
                    state if state == "synchronised" else state.upper(),
                    _duration(link.get("for_s")),
                    _clean(peer),
                    f"{_ms(link.get('rtt_p50_ms'))}/{_ms(link.get('rtt_p99_ms'))}",
                    _duration(link.get("last_poll_s_ago")) + " ago"
                    if link.get("last_poll_s_ago") is not None
                    else "-",
                    str(link.get("events", 0)),
                    str(link.get("coalesced", 0)),
                    str(link.get("queue_depth", 0)),
                    str(link.get("reconnects", 0)),
                    _clean(peerVersions),
                )
            )
    return out


def table(reports: list[dict[str, Any]]) -> str:
    body = rows(reports)
    widths = [max(len(r[i]) for r in [COLUMNS, *body]) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [COLUMNS, *body]
    ]
    return "\n".join(lines)


def healthy(reports: list[dict[str, Any]]) -> bool:
    return bool(reports) and all("error" not in r and bool(r.get("healthy")) for r in reports)


def main(paths: list[str], asJson: bool, out: Any, err: Any) -> int:
    """
    @return: the exit status: 0 every link synchronised, 1 a link down or a
        process not answering, 2 no rcp process found.
    """
    found = sockets(paths)
    if not found:
        print(f"rcp status: no rcp process here (no socket in {runDirectory()})", file=err)
        return 2
    reports = [fetch(path) for path in found]
    if asJson:
        json.dump(reports, out, indent=1)
        out.write("\n")
    else:
        print(table(reports), file=out)
    return 0 if healthy(reports) else 1
