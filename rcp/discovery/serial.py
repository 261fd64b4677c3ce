"""Where a board's serial number comes from: a config value or a file."""

from __future__ import annotations

from pathlib import Path

from .records import checkSerial

#: where Linux shows a device tree's serial number (NUL-terminated)
DEVICE_TREE_SERIAL = "/proc/device-tree/serial-number"


class SerialError(Exception):
    """The serial number cannot be read; the message says why."""


def readSerial(value: str | None, path: str | None) -> str:
    """
    The board's serial number: C{value} if given, else the content of the
    file C{path} (trailing NULs and white space removed).

    @raise SerialError: neither given, the file is unreadable, or what it
        holds is not a serial number.
    """
    if value is not None:
        try:
            return checkSerial(value)
        except ValueError as e:
            raise SerialError(str(e)) from None
    if path is None:
        raise SerialError("no serial number: set discovery.serial or discovery.serial_file")
    try:
        raw = Path(path).read_bytes()[:256]
    except OSError as e:
        raise SerialError(f"cannot read the serial number from {path}: {e.strerror}") from None
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
    try:
        return checkSerial(text)
    except ValueError as e:
        raise SerialError(f"{path}: {e}") from None
