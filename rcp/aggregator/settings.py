"""The SystemAggregator's module config: upstream's keys and rcp's optional ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class AggregatorSettings:
    """
    @ivar default_retries: attempts of a backend transfer when the request
        gives none (upstream's key; 0 counts as 1).
    @ivar default_retry_interval: seconds between two attempts.
    @ivar upload_url_template: where boards upload their logs; C{{my-ip}}
        (or C{<my-ip>}) is the main board's address towards the board.
    @ivar incoming_uploads_dir: where archives are packed (None: a
        temporary directory).
    @ivar incoming_upload_timeout: seconds a log collection waits for the boards.
    @ivar command_timeout: seconds a board has to answer a command (rcp).
    @ivar silence_timeout: seconds without a firmware status before a board
        counts as failed (rcp).
    @ivar firmware_download_timeout: seconds a board's firmware download
        grant is valid (rcp).
    @ivar install_hold_timeout: seconds the boards that have the firmware
        image wait, from the first of them, for the boards still
        downloading before they install anyway; the late ones are
        reported failed (rcp).  Never longer than the download grants.
    @ivar max_upload_bytes: the most a board may upload for one log request (rcp).
    @ivar link_check_interval: seconds between two checks of the satellites'
        links during a log collection (rcp).
    """

    default_retries: int = 0
    default_retry_interval: float = 180.0
    upload_url_template: str = "ftp://{my-ip}:2121/"
    incoming_uploads_dir: str | None = None
    incoming_upload_timeout: float = 120.0
    command_timeout: float = 30.0
    silence_timeout: float = 900.0
    firmware_download_timeout: float = 3600.0
    install_hold_timeout: float = 900.0
    max_upload_bytes: int = 256 * 1024 * 1024
    link_check_interval: float = 5.0

    @property
    def attempts(self) -> int:
        return max(1, self.default_retries)

    @classmethod
    def fromConfig(cls, moduleId: str, config: Mapping[str, Any]) -> AggregatorSettings:
        """
        The settings of a module config; unknown keys are ignored.

        @raise ValueError: a key of the wrong type or out of range (one line).
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in config:
                continue
            value = config[f.name]
            default = getattr(cls, f.name)
            if f.name in ("upload_url_template", "incoming_uploads_dir"):
                if not isinstance(value, str) or not value or len(value) > 1024:
                    raise ValueError(f"{moduleId}: config {f.name}: {value!r:.80} is not a text")
            elif (
                isinstance(default, int)
                and not isinstance(default, bool)
                and f.name
                in (
                    "default_retries",
                    "max_upload_bytes",
                )
            ):
                if type(value) is not int or value < 0:
                    raise ValueError(f"{moduleId}: config {f.name}: {value!r:.80} is not a count")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(
                        f"{moduleId}: config {f.name}: {value!r:.80} is not a number of seconds"
                    )
                value = float(value)
            values[f.name] = value
        settings = cls(**values)
        if settings.install_hold_timeout >= settings.firmware_download_timeout:
            raise ValueError(
                f"{moduleId}: config install_hold_timeout ({settings.install_hold_timeout:g} s)"
                f" must be shorter than firmware_download_timeout"
                f" ({settings.firmware_download_timeout:g} s)"
            )
        return settings

    @property
    def installHoldEnd(self) -> float:
        """
        Seconds from the update's start by which the install hold ends at the
        latest: a margin before the download grants end, so that the boards
        released still get their last byte (and a resume) under their grant.
        """
        grants = self.firmware_download_timeout
        return grants - min(max(60.0, grants / 10), grants / 2)
