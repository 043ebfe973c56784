"""The client end of a board's console: live to stdout and to ``-l LOGFILE``."""

from __future__ import annotations

import sys
from typing import BinaryIO


class ConsoleSink:
    def __init__(self, log_path: str | None) -> None:
        self._out: BinaryIO = sys.stdout.buffer
        self._log: BinaryIO | None = open(log_path, "wb") if log_path else None  # noqa: SIM115 - closed in close()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self._out.write(data)
        self._out.flush()
        if self._log is not None:
            self._log.write(data)
            self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
