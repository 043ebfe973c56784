"""The system ``ssh`` binary as transport: ControlMaster, Kerberos, certificates, all of it."""

from __future__ import annotations

import os
import select
import subprocess

from ..config import Config
from ..engine.signals import GUARD
from .base import SshError
from .bundle import remote_command
from .remote import RemoteTransport, start_agent

SSH_FAILED = 255


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


def _alive_interval(config: Config) -> float:
    """ServerAliveInterval as ssh itself resolves it (``ssh -G``, no connection made)."""
    argv = ["ssh", "-G"] + (["-F", os.path.expanduser(config.ssh_config)] if config.ssh_config else [])
    try:
        out = subprocess.run([*argv, "--", config.host], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 15.0
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        if name == "serveraliveinterval" and value.strip().isdigit() and int(value) > 0:
            return float(value)
    return 15.0


class OpenSshTransport(RemoteTransport):
    def __init__(self, config: Config) -> None:
        self.host = config.host
        argv = ["ssh", "-T", "-o", "BatchMode=yes"]
        if config.ssh_config:
            argv += ["-F", os.path.expanduser(config.ssh_config)]
        argv += ["--", config.host, remote_command(config.base, None if config.lab_is_default else config.lab)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        except OSError as exc:
            raise SshError(self.host, f"cannot run ssh: {exc}") from None
        stream = PipeStream(proc)
        try:
            self.client = start_agent(stream, self.host, keepalive=_alive_interval(config))
        except SshError:
            stream.close()
            raise
        except Exception as exc:
            detail = stream.diagnose()
            if proc.returncode == SSH_FAILED:
                stream.close()
                raise SshError(self.host, detail.split("; ", 1)[-1]) from None
            stream.close()
            raise exc
