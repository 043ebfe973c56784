"""The client end of a board's console: live to stdout and to ``-l LOGFILE``."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import BinaryIO

from mq.settings.errors import BadInputError, DiskError, Interrupted


class ConsoleSink:
    """Opened before anything is locked, so an unwritable ``-l`` costs nothing."""

    def __init__(self, log_path: str | None, to_stderr: bool = False) -> None:
        self._out: BinaryIO = sys.stderr.buffer if to_stderr else sys.stdout.buffer
        self._log: BinaryIO | None = None
        self._log_path = log_path or ""
        if log_path:
            try:
                self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise BadInputError(f"-l {log_path}: cannot write the log file: {exc.strerror}") from None
        self.bytes = 0
        self.at_line_start = True  # the console so far ends with a newline (or is empty)

    def write(self, data: bytes) -> None:
        """A reader that went away (``mq run ... | head``) ends the job like SIGPIPE would."""
        self.bytes += len(data)
        if data:
            self.at_line_start = data.endswith(b"\n")
        try:
            self._out.write(data)
            self._out.flush()
        except BrokenPipeError:
            raise Interrupted(signal.SIGPIPE) from None
        self._to_log(data)

    def line(self, text: str) -> None:
        """``text`` as a line of its own after the console, on stdout and in the log.

        For a marker written once the job is over (``[[Timeout]]``): a reader
        that went away only misses it, the job's exit code stands.
        """
        data = (b"" if self.at_line_start else b"\n") + text.encode() + b"\n"
        self.at_line_start = True
        with contextlib.suppress(BrokenPipeError):
            self._out.write(data)
            self._out.flush()
        self._to_log(data)

    def _to_log(self, data: bytes) -> None:
        if self._log is not None:
            try:
                self._log.write(data)
                self._log.flush()
            except OSError as exc:
                self._abandon_log()
                raise self._log_error(exc) from None

    def close(self) -> None:
        """Never raises (it runs while other errors propagate); see ``finish``."""
        self._abandon_log()

    def finish(self) -> None:
        """Close the log after a job that ended normally; a failed final write is an error."""
        if self._log is not None:
            log, self._log = self._log, None
            try:
                log.close()
            except OSError as exc:
                raise self._log_error(exc) from None

    def _abandon_log(self) -> None:
        if self._log is not None:
            log, self._log = self._log, None
            with contextlib.suppress(OSError):
                log.close()

    def _log_error(self, exc: OSError) -> DiskError:
        return DiskError(self._log_path, f"-l: writing the log failed ({exc.strerror or exc})")
