"""The audit log as a table: the file engine's events (``audit.jsonl``), with the same names and
fields, so ``events()``, ``mq history``, ``mq stats`` and ``status``'s hold times work unchanged."""

from __future__ import annotations

import json
from typing import Any, Collection, Dict, List, Optional

from mq.engine.history import MAX_EVENTS

NOW = "extract(epoch FROM clock_timestamp())"


def record(conn: Any, user: str, event: str, **fields: Any) -> None:
    """Append one event (inside the caller's transaction: it is logged exactly when what it
    tells of is committed)."""
    board = fields.pop("board", None)
    target = fields.pop("target", None)
    conn.execute(f"INSERT INTO mq_audit (time, event, username, board, target, fields) "  # noqa: S608
                 f"VALUES (round({NOW}::numeric, 3)::float8, %s, %s, %s, %s, %s)",
                 (event, user, board, target, json.dumps(fields, sort_keys=True)))


def read(conn: Any, since: Optional[float] = None, names: Optional[Collection[str]] = None,
         limit: int = MAX_EVENTS) -> List[Dict[str, Any]]:
    """Events from ``since`` on about ``names`` (boards or pools; None: all), oldest first, the
    newest ``limit`` of them, each as the file engine writes it."""
    query = "SELECT id, time, event, username, board, target, fields FROM mq_audit WHERE true"
    params: List[Any] = []
    if since is not None:
        query += " AND time >= %s"
        params.append(since)
    if names is not None:
        query += " AND (board = ANY(%s) OR target = ANY(%s))"
        params += [list(names), list(names)]
    query = f"SELECT * FROM ({query} ORDER BY id DESC LIMIT {int(limit)}) newest ORDER BY id"  # noqa: S608
    events = []
    for _id, time, event, user, board, target, fields in conn.execute(query, params):
        entry: Dict[str, Any] = {"time": time, "event": event, "user": user}
        if board is not None:
            entry["board"] = board
        if target is not None:
            entry["target"] = target
        entry.update(fields)
        events.append(entry)
    return events


__all__ = ["record", "read"]
