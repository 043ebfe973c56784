"""The PostgreSQL backend string (``backend =``, ``MQ_BACKEND``, ``mq admin --backend``), checked
before anything connects: well formed (else exit 6 naming the part that is wrong), and no
password where others can read it (a command line: ``ps``; a config file readable by others).
A password belongs in ``~/.pgpass``, ``PGPASSWORD`` or a service file (``service=mq``)."""

from __future__ import annotations

import os
import stat
from typing import Dict

from .errors import ConfigError

WHERE_PASSWORDS_GO = "put it in ~/.pgpass (mode 0600), PGPASSWORD, or a service file (pg_service.conf, service=NAME)"


def parse(value: str, source: str) -> Dict[str, str]:
    """The libpq parameters of ``value`` (ConfigError, exit 6, naming what is wrong)."""
    from mq.pgengine import libpq  # (libpq itself: psycopg is loaded only by a command that changes the queue)

    try:
        params = libpq.parse_conninfo(value)
    except libpq.Unavailable:  # the engine says so, when it is used
        return {}
    except libpq.Error as exc:
        raise ConfigError(source, "backend", f"not a valid libpq connection string: {exc.primary}") from None
    for name, text in params.items():  # what libpq checks only when it connects (then as "cannot reach")
        wrong = _wrong_value(name, text)
        if wrong:
            raise ConfigError(source, "backend", f"not a valid libpq connection string: {wrong}")
    return params


INTEGERS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
            "tcp_user_timeout")
CHOICES = {"sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
           "gssencmode": ("disable", "prefer", "require"),
           "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")}


def _wrong_value(name: str, text: str) -> str:
    """libpq's words for a value it would refuse at connect time ("" when it is fine)."""
    if name == "port":
        for port in text.split(","):
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                return f'invalid integer value "{port}" for connection option "port"'
    elif name in INTEGERS and not text.lstrip("-").isdigit():
        return f'invalid integer value "{text}" for connection option "{name}"'
    elif name in CHOICES and text not in CHOICES[name]:
        return f'invalid {name} value: "{text}" (expected one of {", ".join(CHOICES[name])})'
    return ""


def check(value: str, source: str, on_command_line: bool = False) -> None:
    """``value`` from ``source`` (an option, an environment variable, or a config file's path)."""
    params = parse(value, source)
    if "password" not in params:
        return
    if on_command_line:
        raise ConfigError(source, "backend", "a password on the command line is visible to every local user "
                                             f"(ps): {WHERE_PASSWORDS_GO}")
    try:
        mode = os.stat(source).st_mode
    except OSError:  # an environment variable: readable by this user alone
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(source, "backend", f"this file holds a database password and is readable by others "
                                             f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {source}, or "
                                             f"{WHERE_PASSWORDS_GO}")


__all__ = ["check", "parse"]
