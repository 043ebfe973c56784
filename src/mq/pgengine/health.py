"""Board health in the database: the rule is ``mq.engine.core.health`` (``judge``, ``Row``), the row
of board failures is ``mq_health`` (``queue.sql``: ``mq_health_note``); at the system's
``health_limit`` the board goes offline (``mq_health_offline``: allowed to any member once the
row has reached the limit)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from mq.engine.core.health import HISTORY, Failure, Row
from mq.engine.core.inventory import Inventory

from .link import Link


def note(link: Link, user: str, inventory: Inventory, board: str, failure: Optional[Failure]
         ) -> Tuple[int, Optional[Row]]:
    """Count ``failure`` against ``board`` (None: a healthy run ends the row): (the row's length,
    the row when it reached the limit now, for the caller to take the board offline)."""
    limit = inventory.systems[board].health_limit
    if not limit:
        return 0, None
    result: Any = link.run(lambda conn: link.call(
        "mq_health_note", user, board, limit, None if failure is None else failure.kind,
        None if failure is None else failure.detail, HISTORY, conn=conn))
    count = int(result["count"])
    if failure is None:
        return 0, None
    row = Row(count, tuple((str(k), str(d), float(t)) for k, d, t in result["failures"]))
    return count, row if count >= limit else None


__all__ = ["note"]
