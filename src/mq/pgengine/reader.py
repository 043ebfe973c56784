"""A look at the queue without psycopg: the read-only ``LockEngine`` of the commands that only
look (``sem -info``, ``-mr-info``, ``dumpall``, ``status``, ``history``), on libpq itself
(``libpq``): one connection, ``mq_hello`` (versions, identity, inventory) and one call per look.
A command that changes the queue opens ``PgEngine`` instead (``transport.postgres``)."""

from __future__ import annotations

import json
import os
from typing import Any, Collection, Dict, List, Optional

from mq.engine.core.errors import BoardOfflineError, EngineError, LockDirError, NotHolderError
from mq.engine.core.inventory import Inventory
from mq.engine.core.names import user_name
from mq.engine.core.protocol import MAX_EVENTS

from . import libpq, schema
from .listings import Listings
from .rows import Snapshot, snapshot_from_json

GRACE = 30.0  # as PgEngine's


class ReadEngine(Listings):
    def __init__(self, connection: libpq.Connection, hello: Dict[str, Any], inventory: Inventory,
                 database: str) -> None:
        self.connection = connection
        self.hello = hello
        self.inventory = inventory
        self.database = database
        self.user = str(hello["user"])
        self.grace = GRACE if inventory.queue.grace is None else inventory.queue.grace

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return self.connection.call(function, *args)
        except libpq.Error as exc:
            raise refusal(exc, self.database) from None

    def _snapshot(self) -> Snapshot:
        return snapshot_from_json(self._call("mq_snapshot", self.user, self.grace))

    def _read_events(self, since: Optional[float], names: Optional[Collection[str]]) -> List[Dict[str, Any]]:
        try:
            rows = self.connection.rows("SELECT * FROM mq_events($1, $2, $3)",
                                        (since, None if names is None else list(names), MAX_EVENTS))
        except libpq.Error as exc:
            raise refusal(exc, self.database) from None
        events = []
        for _id, when, event, user, board, target, fields in rows:
            entry: Dict[str, Any] = {"time": float(when or 0), "event": event, "user": user}
            if board is not None:
                entry["board"] = board
            if target is not None:
                entry["target"] = target
            entry.update(json.loads(fields or "{}"))
            events.append(entry)
        return events

    def close(self) -> None:
        self.connection.close()


def refusal(exc: libpq.Error, database: str) -> EngineError:
    """An error of the server's as the engine's (as ``link.Link.refusal`` says it)."""
    detail: Dict[str, Any] = {}
    try:
        detail = json.loads(exc.detail or "{}")
    except ValueError:
        detail = {}
    if exc.sqlstate == "MQ001":
        return NotHolderError(str(detail.get("board", "")), exc.primary)
    if exc.sqlstate == "MQ002":
        return BoardOfflineError(str(detail["board"]), str(detail["reason"]), str(detail["user"]),
                                 float(detail["since"]))
    if exc.sqlstate == "42883":
        return LockDirError(database, "the database's mq schema is older than this mq: run mq admin init")
    if exc.sqlstate is None:
        return LockDirError(database, f"the connection dropped ({exc.primary})")
    return LockDirError(database, exc.primary)


def open_reader(connection: libpq.Connection, database: str) -> ReadEngine:
    """A ``ReadEngine`` on ``connection`` and the stored inventory (``NoSchema``, ``NoInventory``:
    said by psycopg's path, as ever); the connection is closed if it fails."""
    from .inventory_store import from_hello

    try:
        try:
            hello = connection.call("mq_hello", user_name(os.getuid()))
        except libpq.Error as exc:
            if exc.sqlstate == "42501":
                role = connection.rows("SELECT session_user")[0][0]
                raise LockDirError(database, f"the database role {role} may not use this queue: ask an admin to "
                                             f"run mq admin grant-user {role}") from None
            if exc.sqlstate == "42883":
                raise NoSchema() from None
            raise refusal(exc, database) from None
        schema.check_hello(hello, database)
        inventory = from_hello(hello)
        if inventory is None:
            raise NoInventory()
        return ReadEngine(connection, hello, inventory, database)
    except BaseException:
        connection.close()
        raise


class NoSchema(Exception):
    """The database has no mq schema (of this version)."""


class NoInventory(Exception):
    """The database holds no inventory."""


__all__ = ["NoInventory", "NoSchema", "ReadEngine", "open_reader"]
