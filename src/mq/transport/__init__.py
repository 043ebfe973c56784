"""How the client reaches the lab's engine: in-process (local) or over SSH.

Every transport offers the same ``Transport`` interface; the service layer
never knows which one it has.

May import: ``mq.settings``, ``mq.pgengine`` (the PostgreSQL queue's transport), the
engine's host agent (in-process, for a local lab) and ``mq.engine.core``; paramiko only
in ``paramiko_ssh``; never the client, the views or the CLI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mq.engine.core.signals import GUARD
from mq.settings.config import Config

from .base import Transport

_early: dict[Config, _Early] = {}


class _Early:
    """A remote transport being opened in the background while the CLI starts up."""

    def __init__(self, config: Config, opener: Callable[[Config], Transport]) -> None:
        self.config = config
        self.opener = opener
        self.result: Transport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mq-connect", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.opener(self.config)
        except BaseException as exc:
            self.error = exc

    def take(self) -> Transport:
        while self.thread.is_alive():
            self.thread.join(0.05)  # short joins: Ctrl+C is handled at once
        GUARD.raise_pending()  # Ctrl+C also ends a ProxyCommand: say interrupted, not "unable to ssh"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def start_early(config: Config) -> None:
    """Begin connecting now (SSH handshake, host start-up) so it overlaps the CLI's own start.

    The transport's modules are loaded first, in this thread: imports run under the
    interpreter lock, and taking turns with the CLI's own (typer) would delay the
    connection by as much. The handshake and the host's start-up then overlap those.
    """
    if not (config.is_local or config.backend or _is_this_host(config)) and config not in _early:
        _early[config] = _Early(config, _remote_opener(config))


def open_transport(config: Config) -> Transport:
    early = _early.pop(config, None)
    if early is not None:
        return early.take()
    if config.backend:  # the queue is in PostgreSQL: no lab host for the locks
        from .postgres import PostgresTransport

        return PostgresTransport(config, open_transport)
    if config.is_local or _is_this_host(config):
        from .local import LocalTransport

        return LocalTransport(config.base, config.lab if config.is_local else None)
    return _remote_opener(config)(config)


def _remote_opener(config: Config) -> Callable[[Config], Transport]:
    """The SSH transport ``config`` asks for, its modules loaded (paramiko: the slowest)."""
    if config.transport == "openssh":
        from .openssh import OpenSshTransport

        return OpenSshTransport
    from .paramiko_ssh import ParamikoTransport
    from .sshconfig import config_file, import_paramiko

    import_paramiko(config_file(config))
    return ParamikoTransport


def _is_this_host(config: Config) -> bool:
    """Running on the lab host itself (same name, no other user asked, nothing in the ssh
    config for this name): skip SSH."""
    import getpass
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    if config.host_name not in names:
        return False
    from .sshconfig import config_file, configured_for  # paramiko: only for this machine's own name

    if configured_for(config.host_name, config_file(config)):
        return False
    user = config.host_user
    return user is None or user == getpass.getuser()


__all__ = ["Transport", "open_transport"]
