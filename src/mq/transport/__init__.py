"""How the client reaches the lab's engine: in-process (local) or over SSH.

Every transport offers the same ``Transport`` interface; the service layer
never knows which one it has.
"""

from __future__ import annotations

import threading

from ..config import Config
from .base import Transport

_early: dict[Config, _Early] = {}


class _Early:
    """A remote transport being opened in the background while the CLI starts up."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.result: Transport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mq-connect", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = _open_remote(self.config)
        except BaseException as exc:
            self.error = exc

    def take(self) -> Transport:
        while self.thread.is_alive():
            self.thread.join(0.05)  # short joins: Ctrl+C is handled at once
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def start_early(config: Config) -> None:
    """Begin connecting now (SSH handshake, host start-up) so it overlaps the CLI's own start."""
    if not (config.is_local or _is_this_host(config)) and config not in _early:
        _early[config] = _Early(config)


def open_transport(config: Config) -> Transport:
    early = _early.pop(config, None)
    if early is not None:
        return early.take()
    if config.is_local or _is_this_host(config):
        from .local import LocalTransport

        return LocalTransport(config.base, config.lab if config.is_local else None)
    return _open_remote(config)


def _open_remote(config: Config) -> Transport:
    if config.transport == "openssh":
        from .openssh import OpenSshTransport

        return OpenSshTransport(config)
    from .paramiko_ssh import ParamikoTransport

    return ParamikoTransport(config)


def _is_this_host(config: Config) -> bool:
    """Running on the lab host itself (same name, no other user asked): skip SSH."""
    import getpass
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    if config.host_name not in names or _named_in_ssh_config(config):
        return False
    user = config.host_user
    return user is None or user == getpass.getuser()


def _named_in_ssh_config(config: Config) -> bool:
    """The user's ssh config has a ``Host`` entry for this very name: it says how to reach
    it (another User, Port, a jump host ...), so SSH is used even though the name is ours."""
    import os

    path = os.path.expanduser(config.ssh_config or "~/.ssh/config")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    for line in lines:
        words = line.replace("=", " ").split()
        if len(words) > 1 and words[0].lower() == "host" and config.host_name in words[1:]:
            return True
    return False


__all__ = ["Transport", "open_transport"]
