"""One consistent look at the queue and the locks: the rows read in one transaction, as objects.

Liveness: a ticket's or a ``run`` lock's owner is a connection holding the session
advisory lock (``OWNER_CLASS``, owner id). An owner whose lock is free while the
server it connected to is still the one running (``server_start``) is dead at once:
its connection ended (the client was killed, or cut off and found so by keepalives).
After a server restart or failover every owner's lock is free: such an owner is
*lost* from the first look that finds it so (``lost_at``), still counted within
the grace period (it is reconnecting) and dead after it. An owner whose lock is held
but who has not beaten for ``session.SILENT_LIMIT`` seconds is *silent*, and dead too
(its link stalled above TCP, or the client is stopped): its backend is ended. A dead
owner's tickets are skipped and cleared, its ``run`` locks may be reclaimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Set, Tuple

from mq.engine.results import Holder, Offline, Ticket

from .session import SILENT_LIMIT

OWNER_CLASS = 0x6D72  # advisory lock class of the owners' liveness locks: (OWNER_CLASS, owner id)
MUTEX = (0x6D71, 0)  # transaction advisory lock: queue walks, grants and releases, one at a time
LIVE, SUSPECT, DEAD = "live", "suspect", "dead"

HELD_OWNERS = f"""
    SELECT l.objid::bigint AS id FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.classid = {OWNER_CLASS} AND l.objsubid = 2 AND l.granted
      AND l.mode = 'ExclusiveLock'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""  # noqa: S608

MARK_LOST = f"""
    UPDATE mq_owners SET lost_at = clock_timestamp()
    WHERE lost_at IS NULL AND id NOT IN ({HELD_OWNERS})"""  # noqa: S608

OWNER_STATES = f"""
    SELECT o.id, o.id IN ({HELD_OWNERS}) AS live, extract(epoch FROM o.lost_at)::float8,
           o.server_start IS NOT DISTINCT FROM pg_postmaster_start_time()
           AND o.incarnation IS NOT DISTINCT FROM (SELECT token FROM mq_incarnation) AS same_server,
           extract(epoch FROM coalesce(b.seen_at, o.connected))::float8, o.backend_pid
    FROM mq_owners o LEFT JOIN mq_beats b ON b.owner = o.id"""  # noqa: S608

TICKETS = """
    SELECT seq, username, uid, pid, host, key, target, boards, created, priority, owner, cancelled
    FROM mq_tickets ORDER BY seq"""

LOCKS = """
    SELECT board, username, uid, key, timeout, since_ns, grant_no, pool, session, session_owner, maintenance
    FROM mq_locks"""

OFFLINE = "SELECT board, reason, username, since FROM mq_offline"

NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"

# The server as an owner knows it: its start time and incarnation (a token in an unlogged table,
# made by the first client after the server started or recovered from a crash).
INCARNATION = """
    WITH made AS (INSERT INTO mq_incarnation (id, token) VALUES (1, md5(random()::text || clock_timestamp()::text))
                  ON CONFLICT (id) DO NOTHING RETURNING token)
    SELECT pg_postmaster_start_time(), token FROM (SELECT token FROM made UNION ALL
                                                   SELECT token FROM mq_incarnation) t LIMIT 1"""


def incarnation(conn: Any) -> Tuple[Any, str]:
    """(start time, incarnation token) of the server; the token is made if there is none yet. Two
    clients making it at once: the one whose insert lost sees the other's in its next statement."""
    for _ in range(5):
        row = conn.execute(INCARNATION).fetchone()
        if row is not None:
            return row[0], str(row[1])
    raise RuntimeError("no server incarnation could be read")


def ticket_name(seq: int, pid: int) -> str:
    """As the file engine names its tickets: ``T<seq>-<pid>``."""
    return f"T{seq:012d}-{pid}"


@dataclass(frozen=True)
class OwnerState:
    state: str  # LIVE, SUSPECT or DEAD
    lost_at: Optional[float] = None
    seen: Optional[float] = None  # a live owner's last beat
    silent_pid: Optional[int] = None  # a silent owner's backend (to be ended)

    def silent_in(self, now: float) -> Optional[float]:
        """Seconds until a live owner that beats no more counts as silent (None: it is not live)."""
        if self.state != LIVE or self.seen is None:
            return None
        return max(0.0, self.seen + SILENT_LIMIT - now)

    def grace_left(self, now: float, grace: float) -> Optional[float]:
        """Seconds until a lost owner counts as dead (None: it is not lost)."""
        if self.state != SUSPECT or self.lost_at is None:
            return None
        return max(0.0, self.lost_at + grace - now)


@dataclass(frozen=True)
class QueuedTicket:
    ticket: Ticket
    priority: int
    owner: int
    cancelled: bool
    owner_state: OwnerState

    @property
    def seq(self) -> int:
        return self.ticket.seq

    @property
    def boards(self) -> tuple[str, ...]:
        return self.ticket.boards

    @property
    def shown(self) -> Ticket:
        """The ticket, with since when its client is reconnecting (a restart) if it is."""
        if self.owner_state.state != SUSPECT:
            return self.ticket
        return replace(self.ticket, lost_since=self.owner_state.lost_at)

    @property
    def counted(self) -> bool:
        """It keeps its place: its owner is live or within the grace period, and it was not cancelled."""
        return self.owner_state.state != DEAD and not self.cancelled


@dataclass(frozen=True)
class LockRow:
    board: str
    user: str
    uid: int
    key: str
    timeout: int
    since_ns: int
    grant: Optional[int]
    pool: str
    session: bool
    session_owner: Optional[int]
    maintenance: bool
    owner_state: Optional[OwnerState]  # a ``run`` lock's owner

    def expired(self, now: float) -> bool:
        return not self.maintenance and self.timeout > 0 and now - self.since_ns / 1e9 > self.timeout

    def expires_in(self, now: float) -> Optional[float]:
        if self.maintenance or self.timeout <= 0:
            return None
        return self.since_ns / 1e9 + self.timeout - now

    @property
    def dead_session(self) -> bool:
        """A ``run`` lock, or a grant its client has not confirmed yet (``confirm``), whose client is dead."""
        bound = self.session or self.session_owner is not None
        return bound and (self.owner_state is None or self.owner_state.state == DEAD)

    def reclaimable(self, now: float) -> bool:
        return not self.maintenance and (self.dead_session or self.expired(now))

    def holder(self) -> Holder:
        session = ("dead" if self.dead_session else "live") if self.session else ""
        return Holder(board=self.board, uid=self.uid, user=self.user, since_ns=self.since_ns, timeout=self.timeout,
                      key=self.key, dev=0, ino=0, kind="file", grant=self.grant, pool=self.pool, session=session)


@dataclass(frozen=True)
class OfflineRow:
    reason: str
    user: str
    since: float

    def offline(self, lock: Optional[LockRow]) -> Offline:
        return Offline(reason=self.reason, user=self.user, since=self.since,
                       locked=lock is not None and lock.maintenance)


@dataclass
class Snapshot:
    now: float
    tickets: List[QueuedTicket] = field(default_factory=list)  # in seq order
    locks: Dict[str, LockRow] = field(default_factory=dict)
    offline: Dict[str, OfflineRow] = field(default_factory=dict)
    owners: Dict[int, OwnerState] = field(default_factory=dict)

    def available(self, board: str) -> bool:
        """In service, and free or reclaimable (past its ``-T``, or a dead ``run``'s)."""
        if board in self.offline:
            return False
        lock = self.locks.get(board)
        return lock is None or lock.reclaimable(self.now)

    def vacant(self, board: str) -> bool:
        return board not in self.locks

    def live_waiters(self) -> List[Ticket]:
        return [t.ticket for t in self.tickets if t.counted]


def _owner_states(conn: Any, now: float, grace: float, placed: Set[int]) -> Dict[int, OwnerState]:
    """Each owner's state; ``placed``: the owners with a ticket or a lock (only they beat)."""
    states = {}
    for owner, live, lost_at, same_server, seen, backend_pid in conn.execute(OWNER_STATES):
        if live and now - seen > SILENT_LIMIT and owner in placed:  # its connection is open, but nothing comes
            states[owner] = OwnerState(DEAD, seen, silent_pid=backend_pid)
        elif live:
            states[owner] = OwnerState(LIVE, seen=seen)
        elif same_server:  # its connection died while the server stayed up: it is dead, at once
            states[owner] = OwnerState(DEAD, lost_at if lost_at is not None else now)
        elif lost_at is None or now - lost_at <= grace:
            states[owner] = OwnerState(SUSPECT, lost_at if lost_at is not None else now)
        else:
            states[owner] = OwnerState(DEAD, lost_at)
    return states


def read_snapshot(conn: Any, grace: float) -> Snapshot:
    """Everything a walk or a listing needs (call inside the mutex transaction)."""
    conn.execute(MARK_LOST)
    now = float(conn.execute(NOW).fetchone()[0])
    ticket_rows = conn.execute(TICKETS).fetchall()
    lock_rows = conn.execute(LOCKS).fetchall()
    placed = {row[10] for row in ticket_rows} | {row[9] for row in lock_rows if row[9] is not None}
    owners = _owner_states(conn, now, grace, placed)
    gone = OwnerState(DEAD)
    tickets = []
    for seq, user, uid, pid, host, key, target, boards, created, priority, owner, cancelled in ticket_rows:
        ticket = Ticket(name=ticket_name(seq, pid), seq=seq, uid=uid, user=user, pid=pid, host=host, key=key,
                        target=target, boards=tuple(boards), created=created, priority=priority)
        tickets.append(QueuedTicket(ticket, priority, owner, cancelled, owners.get(owner, gone)))
    locks = {}
    for row in lock_rows:
        board, user, uid, key, timeout, since_ns, grant, pool, session, session_owner, maintenance = row
        state = owners.get(session_owner, gone) if session_owner is not None else None
        locks[board] = LockRow(board, user, uid, key, timeout, since_ns, grant, pool, session, session_owner,
                               maintenance, state)
    offline = {board: OfflineRow(reason, user, since) for board, reason, user, since in conn.execute(OFFLINE)}
    return Snapshot(now=now, tickets=tickets, locks=locks, offline=offline, owners=owners)


__all__ = ["DEAD", "LIVE", "MUTEX", "OWNER_CLASS", "SUSPECT", "LockRow", "OfflineRow", "OwnerState",
           "QueuedTicket", "Snapshot", "read_snapshot", "ticket_name"]
