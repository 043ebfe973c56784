"""Board health in the database: the rule is ``mq.engine.health`` (``judge``, ``Row``), the row
of board failures is ``mq_health``; at the system's ``health_limit`` the board goes offline."""

from __future__ import annotations

import json
import time
from typing import Any, List, Optional, Tuple

from mq.engine.health import HISTORY, Failure, Row
from mq.engine.inventory import Inventory
from mq.engine.results import Offline

from . import audit
from .link import Link


def note(link: Link, user: str, inventory: Inventory, board: str, failure: Optional[Failure]
         ) -> Tuple[int, Optional[Row]]:
    """Count ``failure`` against ``board`` (None: a healthy run ends the row): (the row's length,
    the row when it reached the limit now, for the caller to take the board offline)."""
    limit = inventory.systems[board].health_limit
    if not limit:
        return 0, None

    def count(conn: Any) -> Tuple[int, Optional[Row]]:
        with link.mutex(conn):
            found = conn.execute("DELETE FROM mq_health WHERE board = %s RETURNING count, failures",
                                 (board,)).fetchone()
            had, failures = (found[0], found[1]) if found else (0, [])
            if failure is None:
                if had:
                    audit.record(conn, user, "health", board=board, outcome="healthy", ended_row=had)
                return 0, None
            kept: List[Any] = [*failures, [failure.kind, failure.detail, time.time()]][-HISTORY:]
            row = Row(had + 1, tuple((str(k), str(d), float(t)) for k, d, t in kept))
            conn.execute("INSERT INTO mq_health (board, count, failures) VALUES (%s, %s, %s)",
                         (board, row.count, json.dumps(kept)))
            audit.record(conn, user, "health", board=board, outcome=failure.kind, detail=failure.detail,
                         count=row.count, limit=limit)
            return row.count, row if row.count >= limit else None

    result: Tuple[int, Optional[Row]] = link.run(count)
    return result


def reset(conn: Any, board: str) -> None:
    """``mq online``: the board's row starts again (inside the caller's transaction)."""
    conn.execute("DELETE FROM mq_health WHERE board = %s", (board,))


__all__ = ["Offline", "note", "reset"]
