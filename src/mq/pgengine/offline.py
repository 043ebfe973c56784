"""Boards out of service (``mq offline`` / ``mq online``), as the file engine's ``maintenance``.

An offline board has a row in ``mq_offline`` and, whenever nothing else holds it,
a maintenance lock (a ``mq_locks`` row with ``maintenance`` set, key ``offline:
REASON``). Pools skip it, a new wait for it alone fails at once, a queued waiter
keeps its place; a holder keeps it until its release, which puts the maintenance
lock in its place (``releasing``), as does a waiter that finds the holder's lock
past its ``-T`` or its ``run`` dead (``taking.settle``). ``online`` removes both
and wakes the waiters.
"""

from __future__ import annotations

from typing import Any, Optional

from mq.engine.errors import BadInputError
from mq.engine.inventory import Inventory
from mq.engine.maintenance import check_reason, lock_key
from mq.engine.results import Offline

from . import audit, health
from .link import Link
from .rows import OfflineRow, read_snapshot
from .taking import settle


def board_of(inventory: Inventory, name: str, verb: str) -> str:
    """``name`` as a board of the inventory (UnknownTargetError; a pool is refused)."""
    members = inventory.members(name)
    if inventory.is_pool(name):
        raise BadInputError(f"mq {verb} takes a board, not a pool: {name} is a pool of {' '.join(members)}")
    return name


def set_offline(link: Link, user: str, inventory: Inventory, board: str, reason: str) -> Offline:
    board_of(inventory, board, "offline")
    reason = check_reason(reason)

    def offline(conn: Any) -> Offline:
        with link.mutex(conn):
            snap = read_snapshot(conn, link.grace)
            previous = snap.offline.get(board)
            lock = snap.locks.get(board)
            since = previous.since if previous is not None else round(snap.now, 3)
            mark = OfflineRow(reason=reason, user=user, since=since)
            conn.execute("INSERT INTO mq_offline (board, reason, username, since) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (board) DO UPDATE SET reason = excluded.reason, username = excluded.username",
                         (board, reason, user, since))
            snap.offline[board] = mark
            if lock is not None and lock.maintenance:  # again: the maintenance lock gets the new reason
                conn.execute("UPDATE mq_locks SET key = %s, username = %s WHERE board = %s",
                             (lock_key(reason), user, board))
            else:
                settle(conn, user, snap, [board], audited=False)
            current = snap.locks.get(board)
            locked = current is not None and current.maintenance
            audit.record(conn, user, "offline", board=board, reason=reason, since=since,
                         state="locked" if locked else "pending",
                         holder=None if current is None or locked else current.user,
                         previous_reason=previous.reason if previous is not None else None,
                         previous_user=previous.user if previous is not None else None)
            return Offline(reason=reason, user=user, since=since, locked=locked)

    result: Offline = link.run(offline)
    return result


def set_online(link: Link, user: str, inventory: Inventory, board: str) -> Optional[Offline]:
    board_of(inventory, board, "online")

    def online(conn: Any) -> Optional[Offline]:
        with link.mutex(conn):
            snap = read_snapshot(conn, link.grace)
            mark = snap.offline.get(board)
            if mark is None:
                return None
            lock = snap.locks.get(board)
            locked = lock is not None and lock.maintenance
            if locked:
                conn.execute("DELETE FROM mq_locks WHERE board = %s AND maintenance", (board,))
            conn.execute("DELETE FROM mq_offline WHERE board = %s", (board,))
            health.reset(conn, board)  # its row of board failures (health_limit) starts again
            audit.record(conn, user, "online", board=board, reason=mark.reason, offline_by=mark.user,
                         offline_since=mark.since, offline_for=round(snap.now - mark.since, 3),
                         holder=None if lock is None or locked else lock.user)
            link.notify(conn, f"free {board}")
            return mark.offline(lock)

    result: Optional[Offline] = link.run(online)
    return result


__all__ = ["board_of", "set_offline", "set_online"]
