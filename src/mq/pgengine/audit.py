"""The audit log as a table (``mq_audit``): the file engine's events (``audit.jsonl``), with the
same names and fields, so ``events()``, ``mq history``, ``mq stats`` and ``status``'s hold times
work unchanged. The server's functions write it (``queue.sql``: ``mq_audit_add``), in the
transaction of what each record tells of; clients read it through ``mq_events``."""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Optional

from mq.engine.core.protocol import MAX_EVENTS


def read(conn: Any, since: Optional[float] = None, names: Optional[Collection[str]] = None,
         limit: int = MAX_EVENTS) -> List[Dict[str, Any]]:
    """Events from ``since`` on about ``names`` (boards or pools; None: all), oldest first, the
    newest ``limit`` of them, each as the file engine writes it."""
    rows = conn.execute("SELECT * FROM mq_events(%s, %s, %s)",
                        (since, None if names is None else list(names), int(limit))).fetchall()
    events = []
    for _id, time, event, user, board, target, fields in rows:
        entry: Dict[str, Any] = {"time": time, "event": event, "user": user}
        if board is not None:
            entry["board"] = board
        if target is not None:
            entry["target"] = target
        entry.update(fields)
        events.append(entry)
    return events


__all__ = ["read"]
