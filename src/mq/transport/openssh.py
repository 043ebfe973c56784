"""The system ``ssh`` binary as transport: ControlMaster, Kerberos, certificates, all of it."""

from __future__ import annotations

import os
import subprocess

from mq.settings.config import Config

from .base import SshError, describe_end
from .bundle import remote_command
from .pipe import SSH_FAILED, PipeStream
from .remote import RemoteTransport, start_agent


def _alive(config: Config) -> tuple[float, int]:
    """ServerAliveInterval and ServerAliveCountMax as ssh itself resolves them (``ssh -G``,
    no connection made); mq's 15 s when keepalives are off (0), since the host needs them."""
    argv = ["ssh", "-G"] + (["-F", os.path.expanduser(config.ssh_config)] if config.ssh_config else [])
    try:
        out = subprocess.run([*argv, "--", config.host], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    values = dict(line.partition(" ")[::2] for line in out.splitlines())
    interval, count = values.get("serveraliveinterval", "").strip(), values.get("serveralivecountmax", "").strip()
    return (float(interval) if interval.isdigit() and int(interval) > 0 else 15.0,
            int(count) if count.isdigit() and int(count) > 0 else 3)


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
            self.client = start_agent(stream, self.host, *_alive(config))
        except SshError:
            stream.close()
            raise
        except Exception as exc:
            stream.close()  # first: the exit status and stderr are collected, then kept
            if proc.returncode == SSH_FAILED:  # ssh's own failure: connecting, authenticating
                raise SshError(self.host, stream.last_error() or describe_end(proc.returncode, "")) from None
            raise exc
