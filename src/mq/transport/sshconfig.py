"""The user's OpenSSH client configuration, resolved for one host alias."""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from mq.settings.config import Config


@dataclass(frozen=True)
class HostSettings:
    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    proxy_jump: tuple[str, ...] = ()
    proxy_command: str | None = None
    known_hosts: tuple[str, ...] = field(default=())
    strict_host_keys: str = "ask"  # yes | ask | accept-new | no
    alive_interval: float = 15.0
    alive_count: int = 3
    connect_timeout: float = 15.0
    config_path: str = ""  # the ssh config these came from (for advice: ``ssh -F``)

    def ssh_command(self) -> str:
        """How the user reaches this host with OpenSSH and the same config."""
        default = os.path.expanduser("~/.ssh/config")
        config = "" if not self.config_path or self.config_path == default else f"-F {shlex.quote(self.config_path)} "
        return f"ssh {config}{shlex.quote(self.alias)}"


def import_paramiko(config_path: str) -> Any:
    """Import paramiko without ``invoke`` (half its import time) unless ``Match exec`` needs it."""
    if "paramiko" not in sys.modules and "invoke" not in sys.modules:
        try:
            with open(config_path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            text = ""
        if not re.search(r"^\s*(match\b.*\bexec\b|include\b)", text, re.IGNORECASE | re.MULTILINE):
            sys.modules["invoke"] = None  # type: ignore[assignment]  # paramiko then skips Match exec support
    import paramiko

    # paramiko logs failures (a refused channel, a dropped banner) as warnings that
    # Python would print to stderr; mq reports them itself, in one line.
    logger = logging.getLogger("paramiko")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return paramiko


def config_file(config: Config) -> str:
    return os.path.expanduser(config.ssh_config or "~/.ssh/config")


def _expand(path: str, settings: dict[str, str], alias: str) -> str:
    home = os.path.expanduser("~")
    tokens = {"%d": home, "%u": getpass.getuser(), "%h": settings.get("hostname", alias),
              "%r": settings.get("user", getpass.getuser()), "%p": settings.get("port", "22"), "%n": alias,
              "%%": "%"}
    for token, value in tokens.items():
        path = path.replace(token, value)
    return os.path.expanduser(path)


def resolve(alias: str, path: str, user: str | None = None) -> HostSettings:
    """Settings for ``alias`` from the ssh config at ``path`` (missing file: defaults)."""
    paramiko = import_paramiko(path)
    ssh_config = paramiko.SSHConfig.from_path(path) if os.path.exists(path) else paramiko.SSHConfig()
    raw = ssh_config.lookup(alias)
    found: dict[str, str] = {k: (v if isinstance(v, str) else " ".join(v)) for k, v in raw.items()
                             if k not in ("identityfile", "userknownhostsfile")}
    identities = tuple(_expand(p, found, alias) for p in raw.get("identityfile", []))
    known = raw.get("userknownhostsfile")
    known_files = tuple(_expand(p, found, alias) for p in (known.split() if isinstance(known, str) else known or []))
    jump = found.get("proxyjump", "")
    proxy_command = found.get("proxycommand")
    return HostSettings(
        config_path=path,
        alias=alias,
        hostname=found.get("hostname", alias),
        port=int(found.get("port", 22)),
        user=user or found.get("user") or getpass.getuser(),
        identity_files=identities,
        identities_only=found.get("identitiesonly", "no").lower() == "yes",
        proxy_jump=tuple(j.strip() for j in jump.split(",") if j.strip()) if jump.lower() != "none" else (),
        proxy_command=_expand(proxy_command, found, alias) if proxy_command and proxy_command != "none" else None,
        known_hosts=known_files or (os.path.expanduser("~/.ssh/known_hosts"),),
        strict_host_keys=found.get("stricthostkeychecking", "ask").lower(),
        alive_interval=_positive(found.get("serveraliveinterval"), 15.0),  # 0 (off): mq needs them
        alive_count=int(_positive(found.get("serveralivecountmax"), 3)),
        connect_timeout=_positive(found.get("connecttimeout"), 15.0),
    )


_ANY_HOST = "mq-any-host.invalid"  # a name no config names: what it gives every host


def configured_for(alias: str, path: str) -> bool:
    """The ssh config at ``path`` says something about ``alias`` in particular: a ``Host`` or
    ``Match`` block gives it a setting that it does not give every host (``Host *``), so it
    says how to reach that host (a User, Port, ProxyJump ...). A config that cannot be read:
    True (connecting reports why)."""
    if not os.path.exists(path):
        return False
    paramiko = import_paramiko(path)
    try:
        ssh_config = paramiko.SSHConfig.from_path(path)

        def applied(name: str) -> dict[str, Any]:
            """The settings for ``name``, with the name itself (``%h``, ``%n``) taken out."""
            found = ssh_config.lookup(name)
            return {key: [v.replace(name, "%h") for v in value] if isinstance(value, list)
                    else str(value).replace(name, "%h") for key, value in found.items()}

        own, anyone = applied(alias), applied(_ANY_HOST)
        return any(anyone.get(key) != value for key, value in own.items())
    except (paramiko.SSHException, OSError, ValueError):
        return True


def _positive(value: str | None, default: float) -> float:
    """A number from the ssh config; missing, invalid or <= 0 gives ``default``."""
    try:
        number = float(value) if value is not None else default
    except ValueError:
        return default
    return number if number > 0 else default


def split_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` of a ProxyJump entry."""
    user, _, rest = spec.rpartition("@")
    host, port = rest, None
    if rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        port = int(port_text)
    return (user or None), host, port
