"""What one rcp process reports about itself and its links (pure)."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IReactorTime

from .link import SYNCHRONISED, LinkHealth
from .versions import Versions


class ProcessHealth:
    """
    @ivar role: C{rcp-agent} or C{rcp-controller}.
    @ivar links: the process's links, in the order they were added.
    """

    def __init__(self, clock: IReactorTime, role: str, versions: Versions) -> None:
        self.clock = clock
        self.role = role
        self.versions = versions
        self.started = clock.seconds()
        self.links: list[LinkHealth] = []

    def link(self, name: str) -> LinkHealth:
        """A new link's figures, reported from now on."""
        health = LinkHealth(self.clock, name)
        self.links.append(health)
        return health

    def document(self) -> dict[str, Any]:
        """The whole report (what C{rcp status --json} prints for this process)."""
        links = [link.snapshot() for link in self.links]
        return {
            "process": {
                "role": self.role,
                "board": self.versions.board,
                "pid": os.getpid(),
                "uptime_s": round(self.clock.seconds() - self.started, 3),
                "versions": self.versions.asDict(),
            },
            "links": links,
            "healthy": bool(links) and all(link["state"] == SYNCHRONISED for link in links),
        }


def _label(value: object) -> str:
    # the text format's escapes; peer values are untrusted, so cut too
    text = str(value)[:128]
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheusText(document: dict[str, Any]) -> str:
    """The report in Prometheus' text exposition format (version 0.0.4)."""
    process = document["process"]
    base = f'process="{_label(process["role"])}",board="{_label(process["board"])}"'
    out = [
        "# HELP rcp_build_info rcp's version on this board.",
        "# TYPE rcp_build_info gauge",
        f'rcp_build_info{{{base},version="{_label(process["versions"]["rcp"])}"}} 1',
        "# HELP rcp_process_uptime_seconds Seconds since the process started.",
        "# TYPE rcp_process_uptime_seconds gauge",
        f"rcp_process_uptime_seconds{{{base}}} {process['uptime_s']}",
    ]
    metrics: list[tuple[str, str, str, str]] = [
        ("rcp_link_up", "gauge", "1 while the link is synchronised.", "up"),
        ("rcp_link_state_seconds", "gauge", "Seconds in the current state.", "for_s"),
        ("rcp_link_events_total", "counter", "Events forwarded over the link.", "events"),
        (
            "rcp_link_coalesced_total",
            "counter",
            "Measurements superseded before they were sent.",
            "coalesced",
        ),
        ("rcp_link_queue_depth", "gauge", "Events waiting to be sent.", "queue_depth"),
        ("rcp_link_reconnects_total", "counter", "Connections after the first.", "reconnects"),
        (
            "rcp_link_last_poll_age_seconds",
            "gauge",
            "Seconds since the last poll.",
            "last_poll_s_ago",
        ),
        (
            "rcp_link_version_mismatch",
            "gauge",
            "1 while the peer's versions do not match.",
            "mismatch",
        ),
    ]
    for name, kind, help, key in metrics:
        out += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
        for link in document["links"]:
            value: Any
            if key == "up":
                value = 1 if link["state"] == "synchronised" else 0
            elif key == "mismatch":
                value = 1 if link["version_mismatches"] else 0
            else:
                value = link[key]
            if value is None:
                continue
            labels = f'{base},link="{_label(link["name"])}",peer="{_label(link["peer_name"])}"'
            out.append(f"{name}{{{labels}}} {value}")
    out += [
        "# HELP rcp_link_rtt_seconds Round-trip time over the link, recent samples.",
        "# TYPE rcp_link_rtt_seconds summary",
    ]
    for link in document["links"]:
        labels = f'{base},link="{_label(link["name"])}",peer="{_label(link["peer_name"])}"'
        for quantile, key in (("0.5", "rtt_p50_ms"), ("0.99", "rtt_p99_ms")):
            if link[key] is not None:
                out.append(
                    f'rcp_link_rtt_seconds{{{labels},quantile="{quantile}"}} {link[key] / 1000:g}'
                )
        out.append(f"rcp_link_rtt_seconds_count{{{labels}}} {link['rtt_samples']}")
    return "\n".join(out) + "\n"
