"""
The archive of one log collection: C{TYPE_YYYY-MM-DDTHH-MM-SSZ.tar.gz} with
one folder per board and C{manifest.json}, which lists every board (module
id, outcome, files with size and sha256) and names the boards that are
missing and why.

Packing reads and compresses files: it runs in a thread
(L{twisted.internet.threads.deferToThread} by default), never in the
reactor's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from .logs import UPLOADED

MANIFEST: Final = "manifest.json"
_CHUNK: Final = 1 << 16
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")

ThreadRunner = Callable[..., Deferred[Any]]
"""C{run(f, *args)}: C{f(*args)} away from the reactor's thread, as a Deferred."""


def archiveName(logType: object, moment: float) -> str:
    """C{TYPE_YYYY-MM-DDTHH-MM-SSZ.tar.gz}; C{logType} reduced to safe characters."""
    kind = _UNSAFE.sub("", logType)[:64] if isinstance(logType, str) else ""
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    return f"{kind or 'DiagnosticsLog'}_{stamp}.tar.gz"


def safeName(name: str) -> str | None:
    """
    One harmless file name from a peer's: its last path component, control
    characters removed, cut to 128 characters; None for nothing, C{.} or C{..}.
    """
    last = re.split(r"[/\\]", name)[-1]
    last = "".join(c for c in last if c.isprintable())[:128]
    return None if last in ("", ".", "..") else last


@dataclass
class BoardLogs:
    """
    What one board contributed.

    @ivar board: its folder name in the archive.
    @ivar moduleId: the module id of its system provider.
    @ivar outcome: one of L{rcp.aggregator.logs}' outcomes.
    @ivar detail: the outcome in a few words.
    @ivar files: local paths of the files it uploaded.
    """

    board: str
    moduleId: str
    outcome: str
    detail: str = ""
    files: Sequence[str] = field(default_factory=list)


def pack(
    directory: str,
    name: str,
    boards: Sequence[BoardLogs],
    about: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """
    Write the archive C{name} into C{directory} (blocking: call it in a thread).

    @param about: more manifest entries (type, request id, times).
    @return: the archive's path and the manifest.
    """
    path = os.path.join(directory, name)
    manifest: dict[str, Any] = {**about, "archive": name, "boards": [], "missing": []}
    with tarfile.open(path, "x:gz") as tar:
        for board in boards:
            folder = safeName(board.board) or "board"
            entry: dict[str, Any] = {
                "board": board.board,
                "module_id": board.moduleId,
                "outcome": board.outcome,
                "files": [],
            }
            used: set[str] = set()
            for local in board.files:
                base = safeName(os.path.basename(local)) or "file"
                arcname, n = base, 1
                while arcname in used:
                    n += 1
                    arcname = f"{base}.{n}"
                used.add(arcname)
                try:
                    size, digest = _addFile(tar, local, f"{folder}/{arcname}")
                except OSError as e:
                    entry.setdefault("unreadable", []).append(
                        {"name": arcname, "error": str(e)[:200]}
                    )
                    continue
                entry["files"].append({"name": arcname, "size": size, "sha256": digest})
            manifest["boards"].append(entry)
            if board.outcome != UPLOADED or not entry["files"]:
                manifest["missing"].append(
                    {
                        "board": board.board,
                        "module_id": board.moduleId,
                        "reason": board.outcome if board.outcome != UPLOADED else "no files",
                        "detail": board.detail,
                    }
                )
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(about.get("created_epoch", 0))
        tar.addfile(info, io.BytesIO(data))
    return path, manifest


def _addFile(tar: tarfile.TarFile, local: str, arcname: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        stat = os.fstat(f.fileno())
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
        f.seek(0)
        info = tarfile.TarInfo(arcname)
        info.size = stat.st_size
        info.mtime = int(stat.st_mtime)
        info.mode = 0o644
        tar.addfile(info, f)
    return stat.st_size, digest.hexdigest()


def remove(paths: Sequence[str]) -> None:
    """Delete files (blocking: call it in a thread); missing ones are fine."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class Packer:
    """
    Packs archives and removes files away from the reactor's thread.

    @param run: how to run blocking work; C{deferToThread} by default.
    """

    def __init__(self, run: ThreadRunner | None = None) -> None:
        self._run: ThreadRunner = run or deferToThread

    def pack(
        self, directory: str, name: str, boards: Sequence[BoardLogs], about: Mapping[str, Any]
    ) -> Deferred[tuple[str, dict[str, Any]]]:
        return self._run(pack, directory, name, list(boards), dict(about))

    def remove(self, paths: Sequence[str]) -> Deferred[None]:
        return self._run(remove, list(paths))
