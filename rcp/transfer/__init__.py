"""
Transfers between the main board and the backend, outside the station:
fetching a firmware image once (streamed into the image the receivers
serve to the boards) and uploading the station's log archive.

  - L{curl}: both with curl, the tool EVerest's own System module uses, so
    that every scheme a backend may name works as it does on a board (http,
    https, ftp, ftps), driven from the reactor as a child process.
"""

from .curl import CurlTransfers, TransferError, redact

__all__ = ["CurlTransfers", "TransferError", "redact"]
