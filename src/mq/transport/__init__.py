"""How the client reaches the lab's engine: in-process (local) or over SSH.

Every transport offers the same ``Transport`` interface; the service layer
never knows which one it has.
"""

from __future__ import annotations

from ..config import Config
from .base import Transport


def open_transport(config: Config) -> Transport:
    if config.is_local or _is_this_host(config):
        from .local import LocalTransport

        return LocalTransport(config.base, config.lab if config.is_local else None)
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
    if config.host_name not in names:
        return False
    user = config.host_user
    return user is None or user == getpass.getuser()


__all__ = ["Transport", "open_transport"]
