"""A child process's stdin/stdout as the protocol stream (``ssh``, or a local engine)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time

from mq.engine.core.signals import GUARD

SSH_FAILED = 255


class PipeStream:
    """stdin/stdout carry the protocol; stderr is read as it comes (so the child never
    blocks on a full pipe) and its tail kept for ``last_error``, which works after ``close``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        self._err = proc.stderr.fileno()
        self._err_tail = b""
        self._err_open = True
        self._closed = False

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            watched = [self._out, *([self._err] if self._err_open else []), *GUARD.wake_fds]
            ready, _, _ = select.select(watched, [], [], max(0.0, deadline - time.monotonic()))
            GUARD.check()
            if self._err_open and self._err in ready:
                self._read_err()
            if self._out in ready:
                return os.read(self._out, 65536)
            if not ready or time.monotonic() >= deadline:
                return None

    def _read_err(self) -> None:
        chunk = os.read(self._err, 65536)
        if chunk:
            self._err_tail = (self._err_tail + chunk)[-4096:]
        else:
            self._err_open = False

    def _drain_err(self) -> None:
        while self._err_open and select.select([self._err], [], [], 0)[0]:
            self._read_err()

    def exit_status(self) -> int | None:
        if not self._closed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
            self._drain_err()
        return self.proc.returncode

    def last_error(self) -> str:
        if not self._closed:
            self._drain_err()
        lines = self._err_tail.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def lost(self) -> bool:
        """``ssh`` exits 255 for its own failures (the connection); a local engine never does."""
        return self.proc.returncode == SSH_FAILED

    def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._drain_err()
        self._closed = True
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
