"""A child process's stdin/stdout as the protocol stream (``ssh``, or a local engine)."""

from __future__ import annotations

import os
import select
import subprocess

from ..engine.signals import GUARD


class PipeStream:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        self._err = proc.stderr.fileno()

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def recv(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._out, *GUARD.wake_fds], [], [], timeout)
        GUARD.check()
        if self._out not in ready:
            return None
        return os.read(self._out, 65536)

    def diagnose(self) -> str:
        try:
            status = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            status = None
        err = b""
        while select.select([self._err], [], [], 0)[0]:
            chunk = os.read(self._err, 65536)
            if not chunk:
                break
            err += chunk
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return (f"exit status {status}" if status is not None else "") + (f"; {lines[-1]}" if lines else "")

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
