"""
Benchmark of the main board's receivers and the station-wide firmware
update, on loopback, against baselines measured in the same run.

Run from the checkout::

    python bench/aggregator.py            # 8 boards of 20 MB, a 256 MB file
    python bench/aggregator.py --quick    # 4 boards of 4 MB, a 32 MB file

The receivers run in a child process of their own (``--serve``): the
benchmark asks it for grants on stdin and reads its memory in /proc.
Clients are curl, as EVerest's System module uses.

Measured (stdout: one JSON object per line, ``name``, ``value``, ``unit``,
``baseline``, ``ratio``):

- ``log_collection_throughput``: MB/s of N boards uploading their log files
  at once through the FTP receiver (``curl -T``, each with its own grant),
  against the same bytes copied at once over raw loopback TCP sockets into
  files (goal ratio >= 0.8); the median of three rounds of each;
- ``firmware_backend_bytes_ratio``: bytes the backend served for an update of
  N boards, divided by the image size (goal 1.0);
- ``firmware_update_wall``: seconds from the start of the backend fetch to
  the last board having the whole image, against one direct download of the
  image from the backend (goal ratio <= 1.5), with the backend behind an
  uplink of ``--backend-rate`` MB/s (10: the station's WAN is slower than
  its boards' LAN, here loopback; the goal is that the boards are done when
  the one fetch is);
- ``firmware_update_wall_unthrottled``: the same with the backend on
  loopback at full speed (no goal: serving N boards N times the bytes on
  the same cores cannot take 1.5 times one download);
- ``receiver_rss_growth``: resident memory the receiving process gained
  while it received one large file (goal < 10 MB), against the file's size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Final

_ROOT: Final = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

PLANS: Final = {"full": (8, 20, 256), "quick": (4, 4, 32)}  # boards, MB each, MB large file

#: the backend's speed for the firmware goal, MB/s: a station's uplink (80 Mbit/s)
#: is slower than its boards' LAN; the goal is that N boards are done about
#: when the one fetch over that uplink is
BACKEND_MB_S: Final = 10.0


def progress(text: str) -> None:
    print(f"[bench-aggregator] {text}", file=sys.stderr, flush=True)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rssMb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the receivers' process -------------------------------------------------------


def serve(directory: str, ftpPort: int, httpPort: int) -> None:
    """
    The receivers on loopback; orders on stdin, one JSON line each, answered
    by one JSON line: C{{"upload": BOARD}} gives an FTP upload URL,
    C{{"image": URL, "boards": N}} fetches URL into a new image and gives N
    download URLs at once, C{{"fetched": true}} waits for that fetch.
    """
    from twisted.internet import reactor as _reactor
    from twisted.internet.stdio import StandardIO
    from twisted.protocols.basic import LineReceiver

    from rcp.receivers.service import ReceiverService
    from rcp.settings import ReceiverSettings
    from rcp.transfer import CurlTransfers

    reactor: Any = _reactor
    settings = replace(
        ReceiverSettings(),
        ftp_port=ftpPort,
        http_port=httpPort,
        directory=directory,
        min_free_bytes=0,
        max_upload_bytes=2**40,
    )
    service = ReceiverService(reactor, settings)
    service.startService()
    receivers = service.receivers
    state: dict[str, Any] = {}

    class Orders(LineReceiver):
        delimiter = b"\n"

        def answer(self, value: Any) -> None:
            self.sendLine(json.dumps(value).encode())

        def lineReceived(self, line: bytes) -> None:
            order = json.loads(line)
            deadline = reactor.seconds() + 3600
            if "upload" in order:
                grant = receivers.grantUpload(order["upload"], "127.0.0.1", 1, deadline, 2**40)
                self.answer({"url": grant.urlFor(f"ftp://{{my-ip}}:{ftpPort}/", "127.0.0.1")})
            elif "image" in order:
                image = receivers.newImage("image.bin")
                urls = [
                    receivers.grantDownload(f"b{i}", "127.0.0.1", image, 2, deadline).url(
                        "127.0.0.1"
                    )
                    for i in range(order["boards"])
                ]
                state["fetch"] = CurlTransfers(reactor).fetch(order["image"], image, 1, 1)
                self.answer({"urls": urls})
            elif "fetched" in order:
                state["fetch"].addBoth(lambda size: self.answer({"size": size}))

        def connectionLost(self, reason: Any = None) -> None:
            reactor.stop()

    reactor.callWhenRunning(lambda: StandardIO(Orders(), reactor=reactor))
    reactor.callWhenRunning(lambda: print(json.dumps({"ready": os.getpid()}), flush=True))
    reactor.run()


class Receivers:
    """The receivers' child process, seen from the benchmark."""

    def __init__(self, directory: Path) -> None:
        self.ftpPort, self.httpPort = freePort(), freePort()
        command = [sys.executable, __file__, "--serve", str(directory)]
        command += [str(self.ftpPort), str(self.httpPort)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self.ask(None)["ready"]

    def ask(self, order: dict[str, Any] | None) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        if order is not None:
            self.process.stdin.write(json.dumps(order) + "\n")
            self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


# -- the backend and the baselines --------------------------------------------------


class _Counting(BaseHTTPRequestHandler):
    """The backend: serves the image at C{rate} bytes a second (0: as fast as it can)."""

    image = b""
    served: ClassVar[dict[str, int]] = {}  # bytes by path
    rate = 0.0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.image)))
        self.end_headers()
        step = len(self.image) if not self.rate else 1 << 16
        started = time.monotonic()
        for offset in range(0, len(self.image), step):
            chunk = self.image[offset : offset + step]
            self.wfile.write(chunk)
            self.served[self.path] = self.served.get(self.path, 0) + len(chunk)
            if self.rate:
                due = started + (offset + len(chunk)) / self.rate
                time.sleep(max(0.0, due - time.monotonic()))

    def log_message(self, format: str, *args: Any) -> None:
        pass


def rawCopies(files: list[Path], into: Path) -> float:
    """Seconds to copy C{files} at once over loopback TCP into files: the baseline."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(len(files))
    port = server.getsockname()[1]

    def receive(index: int) -> None:
        connection, _ = server.accept()
        with connection, open(into / f"raw-{index}", "wb") as out:
            while chunk := connection.recv(1 << 16):
                out.write(chunk)

    def send(path: Path) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
            s.sendfile(f)

    started = time.monotonic()
    threads = [threading.Thread(target=receive, args=(i,)) for i in range(len(files))]
    threads += [threading.Thread(target=send, args=(p,)) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.close()
    return time.monotonic() - started


def curl(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["curl", "-sS", "--fail", *argv])


def record(name: str, unit: str, value: float, baseline: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "ratio": round(value / baseline, 4) if baseline else None,
    }


def logCollection(
    receivers: Receivers, files: list[Path], base: Path, rounds: int
) -> tuple[float, float]:
    """
    The log collection ratio: the median of C{rounds} rounds, each of the
    raw copy and the receivers one after the other (the files of a round are
    removed before the next one, so every round writes to a disk in the same
    state).
    """
    total = sum(p.stat().st_size for p in files) / (1 << 20)
    rawTimes: list[float] = []
    receiverTimes: list[float] = []
    for k in range(rounds):
        (base / "raw").mkdir()
        rawTimes.append(rawCopies(files, base / "raw"))
        urls = [receivers.ask({"upload": f"r{k}b{i}"})["url"] for i in range(len(files))]
        started = time.monotonic()
        uploads = [curl("-T", str(p), url) for p, url in zip(files, urls, strict=True)]
        if any(u.wait() != 0 for u in uploads):
            raise SystemExit("an upload to the receivers failed")
        receiverTimes.append(time.monotonic() - started)
        shutil.rmtree(base / "raw")
        for folder in (base / "receivers" / "uploads").iterdir():
            shutil.rmtree(folder)
    raw, received = statistics.median(rawTimes), statistics.median(receiverTimes)
    progress(
        f"{len(files)} boards x {total / len(files):g} MB, median of {rounds}: "
        f"receivers {received:.3f} s, raw {raw:.3f} s"
    )
    return received, raw


def firmwareUpdate(
    receivers: Receivers, base: Path, image: bytes, boards: int, rate: float
) -> tuple[float, float, float]:
    """(update wall, one direct download, backend bytes / image size), backend at C{rate}."""
    _Counting.image, _Counting.rate = image, rate
    _Counting.served.clear()
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        backendUrl = f"http://127.0.0.1:{backend.server_address[1]}"
        imageUrl = f"{backendUrl}/image.bin"
        direct = time.monotonic()
        if curl("-o", str(base / "direct.bin"), f"{backendUrl}/direct.bin").wait() != 0:
            raise SystemExit("the direct download failed")
        direct = time.monotonic() - direct
        started = time.monotonic()
        downloads = receivers.ask({"image": imageUrl, "boards": boards})["urls"]
        clients = [curl("-o", str(base / f"fw-{i}.bin"), u) for i, u in enumerate(downloads)]
        if any(c.wait() != 0 for c in clients):
            raise SystemExit("a board's download failed")
        wall = time.monotonic() - started
        receivers.ask({"fetched": True})
        digest = hashlib.sha256(image).digest()
        for i in range(boards):
            if hashlib.sha256((base / f"fw-{i}.bin").read_bytes()).digest() != digest:
                raise SystemExit(f"board {i} got other bytes")
            (base / f"fw-{i}.bin").unlink()
        return wall, direct, _Counting.served.get("/image.bin", 0) / len(image)
    finally:
        backend.shutdown()
        backend.server_close()


def run(plan: str, backendRate: float) -> None:
    boards, mbEach, largeMb = PLANS[plan]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rcp-bench-aggregator-") as tmp:
        base = Path(tmp)
        files = []
        for i in range(boards):
            path = base / f"board-{i}.log"
            path.write_bytes(os.urandom(mbEach * 1024 * 1024))
            files.append(path)
        total = boards * mbEach
        receivers = Receivers(base / "receivers")
        try:
            received, raw = logCollection(receivers, files, base, 3)
            out.append(record("log_collection_throughput", "MB/s", total / received, total / raw))

            # firmware: one backend fetch, every board downloading while it comes
            image = os.urandom(mbEach * 1024 * 1024)
            wall, direct, fetched = firmwareUpdate(receivers, base, image, boards, backendRate)
            out.append(record("firmware_backend_bytes_ratio", "x", fetched, 1.0))
            out.append(record("firmware_update_wall", "s", wall, direct))
            progress(
                f"firmware to {boards} boards {wall:.2f} s, one direct download {direct:.2f} s "
                f"(backend at {backendRate / (1 << 20):g} MB/s)"
            )
            # the same on loopback at full speed: what serving N boards costs (no goal)
            wall, direct, _ = firmwareUpdate(receivers, base, image, boards, 0.0)
            out.append(record("firmware_update_wall_unthrottled", "s", wall, direct))
            progress(
                f"firmware to {boards} boards {wall:.2f} s, one direct download {direct:.2f} s "
                "(backend on loopback at full speed)"
            )

            # memory while one large file arrives
            large = base / "large.log"
            with open(large, "wb") as f:
                for _ in range(largeMb):
                    f.write(os.urandom(1024 * 1024))
            before = rssMb(receivers.pid)
            peak = before
            url = receivers.ask({"upload": "big"})["url"]
            upload = curl("-T", str(large), url)
            while upload.poll() is None:
                peak = max(peak, rssMb(receivers.pid))
                time.sleep(0.05)
            if upload.returncode != 0:
                raise SystemExit("the large upload failed")
            out.append(record("receiver_rss_growth", "MB", peak - before, float(largeMb)))
            progress(f"{largeMb} MB received: RSS {before:.1f} MB -> peak {peak:.1f} MB")
        finally:
            receivers.stop()
    for line in out:
        print(json.dumps(line), flush=True)
    goals = {
        "log_collection_throughput": lambda r: r["ratio"] >= 0.8,
        "firmware_backend_bytes_ratio": lambda r: r["value"] == 1.0,
        "firmware_update_wall": lambda r: r["ratio"] <= 1.5,
        "receiver_rss_growth": lambda r: r["value"] < 10,
    }
    for line in out:
        if line["name"] in goals:
            met = goals[line["name"]](line)
            progress(f"goal {line['name']}: {'met' if met else 'MISSED'}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--backend-rate",
        type=float,
        default=BACKEND_MB_S,
        metavar="MB/S",
        help=f"the backend's speed for the firmware goal (default {BACKEND_MB_S:g})",
    )
    parser.add_argument("--serve", nargs=3, metavar=("DIR", "FTP", "HTTP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
    else:
        run("quick" if args.quick else "full", args.backend_rate * (1 << 20))


if __name__ == "__main__":
    main(sys.argv[1:])
