"""One look at the queue and, if this ticket's turn has come, the board taken: one transaction.

Under the mutex (a transaction advisory lock, so walks and grants are serial) the
snapshot is read (``rows``: the tickets in one query, in seq order, with their
owners' liveness), dead tickets are cleared, offline boards among the waiter's get
their maintenance lock where the lock is gone or may be reclaimed, and the queue is
walked in the policy's order (``walk``). A grant reclaims what it must, inserts the
lock with a number from ``mq_grants``, drops the ticket and logs both, and commits
with the NOTIFY that wakes the waiters behind. A waiter still waiting gets its
``Outlook``: who is ahead, the boards it is at the head for, when to look again,
and whose death to watch.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import psycopg

from mq.engine import policy
from mq.engine.errors import NotAcquiredError
from mq.engine.grant import Request
from mq.engine.inventory import Inventory
from mq.engine.maintenance import lock_key
from mq.engine.results import Grant, Ticket

from . import audit
from .link import Link, PlaceLost, where
from .rows import DEAD, LIVE, SUSPECT, LockRow, OwnerState, QueuedTicket, Snapshot, read_snapshot, ticket_name
from .walk import hand_out

NOW_NS = "(extract(epoch FROM clock_timestamp()) * 1e9)::bigint"
EXPIRY_MARGIN = 0.01  # look this long after an expiry, so it has surely passed


@dataclass
class Outlook:
    """A waiter's view after a look that did not give it a board."""

    # seq -> (boards, its owner if live, else None: lost, within the grace period), in queue order
    ahead: Dict[int, Tuple[Tuple[str, ...], Optional[int]]] = field(default_factory=dict)
    head: List[str] = field(default_factory=list)  # its boards no ticket ahead wants
    wake_in: Optional[float] = None  # seconds until something may change by itself (an expiry, a grace)
    watch: Set[int] = field(default_factory=set)  # live owners of ``run`` locks on its head boards
    position: int = 1
    total: int = 1

    def nearest(self, boards: Sequence[str]) -> Dict[str, int]:
        """For each of ``boards`` some ticket ahead wants, the nearest such ticket."""
        found: Dict[str, int] = {}
        for seq, (wanted, _owner) in self.ahead.items():  # queue order: later ones overwrite
            for board in wanted:
                if board in boards:
                    found[board] = seq
        return found

    def predecessors(self, boards: Sequence[str]) -> Set[int]:
        """The owners of the tickets this waiter is directly behind on some board, where that ticket
        is the only one ahead wanting it: when such an owner dies, this waiter may be next."""
        wanting: Dict[str, List[Optional[int]]] = {}
        for _seq, (wanted, owner) in self.ahead.items():
            for board in wanted:
                if board in boards:
                    wanting.setdefault(board, []).append(owner)
        return {owners[0] for owners in wanting.values() if len(owners) == 1 and owners[0] is not None}


def ordered(tickets: Sequence[QueuedTicket], inventory: Inventory) -> List[QueuedTicket]:
    """The tickets in the order they are served (``policy``: arrival order under FIFO)."""
    return sorted(tickets, key=lambda t: policy.position_key(inventory, t.ticket))


def clear_dead(conn: Any, link: Link, user: str, snap: Snapshot) -> None:
    """Mutex held: drop the tickets whose owner is dead (each logged once), and owners that
    are dead and own nothing any more."""
    for queued in [t for t in snap.tickets if t.owner_state.state == DEAD]:
        gone = conn.execute("DELETE FROM mq_tickets WHERE seq = %s RETURNING seq", (queued.seq,)).fetchone()
        if gone is not None:
            ticket = queued.ticket
            audit.record(conn, user, "dead-waiter", target=ticket.target, key=ticket.key, waiter=ticket.user,
                         pid=ticket.pid)
            link.notify(conn, f"gone {queued.seq}")
    snap.tickets = [t for t in snap.tickets if t.owner_state.state != DEAD]
    dead_owners = [owner for owner, state in snap.owners.items() if state.state == DEAD and owner != link.owner]
    for owner in dead_owners:
        silence_owner(conn, user, owner, snap.owners[owner], snap.now)
    if dead_owners:
        conn.execute("DELETE FROM mq_owners o WHERE o.id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM mq_tickets t "
                     "WHERE t.owner = o.id) AND NOT EXISTS (SELECT 1 FROM mq_locks l WHERE l.session_owner = o.id)",
                     (dead_owners,))


def silence_owner(conn: Any, user: str, owner: int, state: OwnerState, now: float) -> None:
    """Mutex held: end the backend of an owner found silent (its connection open, no beat for
    ``SILENT_LIMIT``), audited; so its liveness lock goes, and nothing comes late through it."""
    if state.silent_pid is None:
        return
    with contextlib.suppress(psycopg.Error), conn.transaction():  # a savepoint: a refusal is not fatal
        ended = conn.execute("SELECT pg_terminate_backend(%s)", (state.silent_pid,)).fetchone()[0]
        audit.record(conn, user, "force", reason="client silent", owner=owner, pid=state.silent_pid,
                     silent=round(now - (state.lost_at or now), 3), ended=bool(ended))


def reclaim(conn: Any, user: str, lock: LockRow, now: float, maintenance: bool = False) -> str:
    """Mutex held: remove a lock past its ``-T`` or a dead ``run``'s, logged; why it could be."""
    why = ("dead-session" if lock.session else "unconfirmed") if lock.dead_session else "expired"
    conn.execute("DELETE FROM mq_locks WHERE board = %s", (lock.board,))
    fields: Dict[str, Any] = {"maintenance": True} if maintenance else {}
    audit.record(conn, user, "reclaim", reason=why, board=lock.board, previous_user=lock.user,
                 previous_key=lock.key, grant=lock.grant, timeout=lock.timeout,
                 age=round(now - lock.since_ns / 1e9, 3), **fields)
    return why


def place_maintenance(conn: Any, board: str, reason: str, offline_by: str) -> LockRow:
    """Mutex held, ``board`` unlocked: its maintenance lock (key ``offline: REASON``)."""
    since_ns = conn.execute(
        f"INSERT INTO mq_locks (board, username, uid, key, timeout, since_ns, maintenance) "  # noqa: S608
        f"VALUES (%s, %s, %s, %s, 0, {NOW_NS}, true) RETURNING since_ns",
        (board, offline_by, os.getuid(), lock_key(reason))).fetchone()[0]
    return LockRow(board, offline_by, os.getuid(), lock_key(reason), 0, since_ns, None, "", False, None, True, None)


def settle(conn: Any, user: str, snap: Snapshot, boards: Sequence[str], audited: bool = True) -> None:
    """Mutex held: offline boards among ``boards`` whose lock is gone, past its ``-T`` or a dead
    ``run``'s get their maintenance lock in its place (a board is never handed out while offline);
    ``audited``: a ``maintenance-lock`` record says so (a reclaim is logged in any case)."""
    for board in boards:
        mark = snap.offline.get(board)
        lock = snap.locks.get(board)
        if mark is None or (lock is not None and lock.maintenance):
            continue
        if lock is None:
            after = "restored"
        elif lock.reclaimable(snap.now):
            after = reclaim(conn, user, lock, snap.now, maintenance=True)
        else:
            continue
        snap.locks[board] = place_maintenance(conn, board, mark.reason, mark.user)
        if audited:
            audit.record(conn, user, "maintenance-lock", board=board, reason=mark.reason, offline_by=mark.user,
                         after=after)


class Taker:
    """Looks and grants for one engine (its link, user and inventory)."""

    def __init__(self, link: Link, user: str, inventory: Inventory) -> None:
        self.link = link
        self.user = user
        self.inventory = inventory

    def enqueue(self, conn: Any, request: Request, boards: Sequence[str], priority: int) -> QueuedTicket:
        owner = self.link.ensure_owner()
        with self.link.mutex(conn):
            self.link.seen(conn)
            # Done again after a restart swallowed the reply to its COMMIT: the ticket is there already
            # (an engine waits once at a time, so its owner has no other ticket with this key and target).
            done = conn.execute("SELECT seq, created FROM mq_tickets WHERE owner = %s AND key = %s AND target = %s "
                                "ORDER BY seq LIMIT 1", (owner, request.key, request.name)).fetchone()
            seq, created = done if done is not None else conn.execute(
                "INSERT INTO mq_tickets (username, uid, pid, host, key, target, boards, created, priority, owner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp()), %s, %s) "
                "RETURNING seq, created",
                (self.user, os.getuid(), os.getpid(), _hostname(), request.key, request.name, list(boards),
                 priority, owner)).fetchone()
        ticket = Ticket(name=ticket_name(seq, os.getpid()), seq=seq, uid=os.getuid(), user=self.user,
                        pid=os.getpid(), host=_hostname(), key=request.key, target=request.name,
                        boards=tuple(boards), created=created, priority=priority)
        return QueuedTicket(ticket, priority, owner, False, OwnerState(LIVE))

    def attempt(self, conn: Any, me: QueuedTicket, request: Request) -> Tuple[Optional[Grant], Outlook]:
        """One look under the mutex: the grant, or what to wait for."""
        with self.link.mutex(conn):
            snap = read_snapshot(conn, self.link.grace)
            mine = next((t for t in snap.tickets if t.seq == me.seq), None)
            if mine is None:
                taken = self._taken(snap, me, request)
                if taken is not None:  # this very look's grant committed, its reply swallowed by a restart
                    return taken, Outlook()
                audit.record(conn, self.user, "ticket-lost", target=me.ticket.target, key=me.ticket.key)
                raise PlaceLost(where(self.link.conninfo), "its place in the queue was cleared while it could not "
                                "be heard (cut off, or silent, for too long)")
            if mine.cancelled:
                self.leave(conn, mine)
                audit.record(conn, self.user, "cancel", target=mine.ticket.target, key=mine.ticket.key)
                raise NotAcquiredError(mine.ticket.target, "wait cancelled")
            clear_dead(conn, self.link, self.user, snap)
            settle(conn, self.user, snap, mine.boards)
            queue = ordered(snap.tickets, self.inventory)
            choice, _dead = hand_out(queue, me.seq, snap.available, snap.vacant)
            if choice is not None:
                return self._take(conn, snap, mine, choice, request), Outlook()
            return None, self._outlook(snap, queue, mine)

    def _taken(self, snap: Snapshot, me: QueuedTicket, request: Request) -> Optional[Grant]:
        """The grant an earlier try of this look made, if it committed: a lock of this engine's owner
        (every grant is bound to it until confirmed) with this wait's key on one of its boards."""
        for lock in snap.locks.values():
            if lock.session_owner == self.link.owner and lock.key == request.key and lock.board in me.boards \
                    and lock.grant is not None and lock.session == request.session:
                return Grant(board=lock.board, target=request.name, key=request.key, timeout=request.timeout,
                             grant=lock.grant, waited=round(time.monotonic() - request.started, 3))
        return None

    def leave(self, conn: Any, me: QueuedTicket) -> bool:
        """Drop this ticket (inside a transaction); False if it was gone already."""
        gone = conn.execute("DELETE FROM mq_tickets WHERE seq = %s RETURNING seq", (me.seq,)).fetchone()
        if gone is not None:
            self.link.notify(conn, f"gone {me.seq}")
        return gone is not None

    def _take(self, conn: Any, snap: Snapshot, mine: QueuedTicket, board: str, request: Request) -> Grant:
        lock = snap.locks.get(board)
        reclaimed, reclaimed_timeout = "", 0
        if lock is not None:
            why = reclaim(conn, self.user, lock, snap.now)
            reclaimed, reclaimed_timeout = lock.user, lock.timeout if why == "expired" else 0
        pool = request.name if request.name != board else ""
        owner = self.link.ensure_owner()  # every grant is bound to its client until confirmed (``confirm``)
        self.link.seen(conn)
        number = int(conn.execute(
            f"INSERT INTO mq_locks (board, username, uid, key, timeout, since_ns, grant_no, pool, session, "  # noqa: S608
            f"session_owner) VALUES (%s, %s, %s, %s, %s, {NOW_NS}, nextval('mq_grants'), %s, %s, %s) "
            f"RETURNING grant_no", (board, self.user, os.getuid(), request.key, request.timeout, pool,
                                    request.session, owner)).fetchone()[0])
        self.leave(conn, mine)
        waited = round(time.monotonic() - request.started, 3)
        audit.record(conn, self.user, "grant", board=board, pool=pool, key=request.key, grant=number,
                     timeout=request.timeout, waited=waited, session=request.session or None)
        return Grant(board=board, target=request.name, key=request.key, timeout=request.timeout, grant=number,
                     waited=waited, reclaimed_from=reclaimed, reclaimed_timeout=reclaimed_timeout)

    def _outlook(self, snap: Snapshot, queue: List[QueuedTicket], mine: QueuedTicket) -> Outlook:
        boards = set(mine.boards)
        place = next(i for i, t in enumerate(queue) if t.seq == mine.seq)
        outlook = Outlook()
        waits: List[float] = []
        for ticket in queue[:place]:
            if ticket.counted and boards.intersection(ticket.boards):
                live = ticket.owner_state.state == LIVE
                outlook.ahead[ticket.seq] = (ticket.boards, ticket.owner if live else None)
                left = ticket.owner_state.grace_left(snap.now, self.link.grace)
                if left is not None:  # reconnecting, or dead once its grace is over
                    waits.append(left + EXPIRY_MARGIN)
        for owner in outlook.predecessors(mine.boards):  # the one right ahead on a board: silent from when on
            silent_in = snap.owners[owner].silent_in(snap.now) if owner in snap.owners else None
            if silent_in is not None:
                waits.append(silent_in + EXPIRY_MARGIN)
        covered = {b for wanted, _owner in outlook.ahead.values() for b in wanted}
        outlook.head = [b for b in mine.boards if b not in covered]
        for board in outlook.head:
            lock = snap.locks.get(board)
            if lock is None:
                continue
            expires = lock.expires_in(snap.now)
            if expires is not None and not (expires < 0 and board in snap.offline):
                waits.append(max(0.0, expires) + EXPIRY_MARGIN)
            if lock.session_owner is not None and lock.owner_state is not None:
                if lock.owner_state.state == LIVE:
                    outlook.watch.add(lock.session_owner or 0)
                    waits.append((lock.owner_state.silent_in(snap.now) or 0.0) + EXPIRY_MARGIN)
                elif lock.owner_state.state == SUSPECT:
                    waits.append((lock.owner_state.grace_left(snap.now, self.link.grace) or 0.0) + EXPIRY_MARGIN)
        outlook.wake_in = min(waits) if waits else None
        behind = sum(1 for t in queue[place + 1:] if t.counted and boards.intersection(t.boards))
        outlook.position = len(outlook.ahead) + 1
        outlook.total = outlook.position + behind
        return outlook


def _hostname() -> str:
    return socket.gethostname()


__all__ = ["Outlook", "Request", "Taker", "clear_dead", "ordered", "place_maintenance", "reclaim", "settle"]
