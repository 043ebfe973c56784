"""The client end of a board's console: live to stdout and to ``-l LOGFILE``."""

from __future__ import annotations

import signal
import sys
from typing import BinaryIO

from .errors import BadInputError, Interrupted


class ConsoleSink:
    """Opened before anything is locked, so an unwritable ``-l`` costs nothing."""

    def __init__(self, log_path: str | None) -> None:
        self._out: BinaryIO = sys.stdout.buffer
        self._log: BinaryIO | None = None
        if log_path:
            try:
                self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise BadInputError(f"-l {log_path}: cannot write the log file: {exc.strerror}") from None
        self.bytes = 0

    def write(self, data: bytes) -> None:
        """A reader that went away (``mq run ... | head``) ends the job like SIGPIPE would."""
        self.bytes += len(data)
        try:
            self._out.write(data)
            self._out.flush()
        except BrokenPipeError:
            raise Interrupted(signal.SIGPIPE) from None
        if self._log is not None:
            try:
                self._log.write(data)
                self._log.flush()
            except OSError as exc:
                raise BadInputError(f"the log file: {exc.strerror}") from None

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
