"""The PostgreSQL lock engine: the queue, the locks, the inventory and the audit log of a lab
in one database, shared by clients on many hosts (``PgEngine``, an ``interface.LockEngine``).

``schema.init`` creates or migrates the tables (``mq admin init``);
``inventory_store.store`` loads a lab inventory into them (``mq admin load-inventory``).
Needs ``psycopg`` 3 (the ``pg`` extra); the file engine stays the default.

May import: ``mq.engine.core`` (the interface, results, rules it shares with the file
engine), ``psycopg`` and the standard library; never the lock-directory engine, the host
side, the transports or the CLI.
"""

from __future__ import annotations

from typing import Any

from .schema import VERSION, init

__all__ = ["GRACE", "VERSION", "PgEngine", "init"]


def __getattr__(name: str) -> Any:
    """``PgEngine`` (and psycopg with it) is loaded when first asked for: a command that only looks
    at the queue reads it through libpq itself (``reader``) and never loads psycopg."""
    if name in ("PgEngine", "GRACE"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
