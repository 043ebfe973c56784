"""The queue as the server's functions send it back (``queue.sql``: ``mq_snapshot_json``), as objects.

Liveness (decided by the server, ``mq_states``): a ticket's or a ``run`` lock's owner is
a connection holding the session advisory lock (``OWNER_CLASS``, owner id). An owner
whose lock is free while the server it connected to is still the one running is dead at
once: its connection ended (the client was killed, or cut off and found so by
keepalives). After a server restart or failover every owner's lock is free: such an
owner is *lost* from the first look that finds it so (``lost_at``), still counted within
the grace period (it is reconnecting) and dead after it. An owner whose lock is held but
who has not beaten for ``session.SILENT_LIMIT`` seconds is *silent*, and dead too (its
link stalled above TCP, or the client is stopped): its backend is ended. A dead owner's
tickets are cleared, its ``run`` locks may be reclaimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence

from mq.engine.core.results import Holder, Offline, Ticket

from .session import SILENT_LIMIT

OWNER_CLASS = 0x6D72  # advisory lock class of the owners' liveness locks: (OWNER_CLASS, owner id)
MUTEX = (0x6D71, 0)  # transaction advisory lock: queue walks, grants and releases, one at a time
LIVE, SUSPECT, DEAD = "live", "suspect", "dead"


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
    vtime: float = 0.0  # its virtual arrival (policy): the queue is served in (vtime, seq) order

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
    reclaimed_from: str = ""  # the holder whose lock its grant reclaimed
    reclaimed_timeout: int = 0  # ... and that lock's -T, when it had expired
    ticket: Optional[int] = None  # the ticket it was granted to
    fetched: bool = True  # its client has it (a grant a walk made, not fetched yet: False)

    @property
    def beats(self) -> bool:
        """Its client must beat to keep it (a ``run`` lock, a grant not fetched yet): it goes when
        the client is silent (``session.SILENT_LIMIT``), as the server judges in ``mq_states``."""
        return self.session or not self.fetched

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
    tickets: List[QueuedTicket] = field(default_factory=list)  # in the order they are served
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


def ordered(tickets: Sequence[QueuedTicket]) -> List[QueuedTicket]:
    """The tickets in the order they are served: by virtual arrival (``policy``; the arrival itself
    under FIFO), as the server stored it, then sequence (the server's walk uses the same order)."""
    return sorted(tickets, key=lambda t: (t.vtime, t.seq))


def _owner_state(data: Optional[Dict[str, Any]]) -> OwnerState:
    if data is None:
        return OwnerState(DEAD)
    return OwnerState(str(data["state"]), data.get("lost_at"), seen=data.get("seen"), silent_pid=data.get("silent_pid"))


def lock_from_json(row: List[Any], owners: Optional[Dict[int, OwnerState]] = None) -> LockRow:
    """A lock as ``mq_lock_json`` sends it."""
    (board, user, uid, key, timeout, since_ns, grant, pool, session, session_owner, maintenance, state,
     reclaimed_from, reclaimed_timeout, ticket, fetched) = row
    owner_state = None
    if session_owner is not None:
        owner_state = (owners or {}).get(int(session_owner)) or OwnerState(str(state or DEAD))
    return LockRow(str(board), str(user), int(uid), str(key), int(timeout), int(since_ns),
                   None if grant is None else int(grant), str(pool), bool(session),
                   None if session_owner is None else int(session_owner), bool(maintenance), owner_state,
                   str(reclaimed_from or ""), int(reclaimed_timeout or 0), None if ticket is None else int(ticket),
                   bool(fetched))


def snapshot_from_json(data: Dict[str, Any]) -> Snapshot:
    """The queue as ``mq_snapshot_json`` sends it: tickets in the order they are served."""
    owners = {int(owner): _owner_state(state) for owner, state in data["owners"].items()}
    gone = OwnerState(DEAD)
    tickets = []
    for (seq, user, uid, pid, host, key, target, boards, created, priority, owner, cancelled, vtime,
         _session, _timeout) in data["tickets"]:
        ticket = Ticket(name=ticket_name(seq, pid), seq=seq, uid=uid, user=user, pid=pid, host=host, key=key,
                        target=target, boards=tuple(boards), created=created, priority=priority)
        tickets.append(QueuedTicket(ticket, priority, owner, cancelled, owners.get(owner, gone), float(vtime)))
    locks = {str(row[0]): lock_from_json(row, owners) for row in data["locks"]}
    offline = {str(board): OfflineRow(str(reason), str(user), float(since))
               for board, reason, user, since in data["offline"]}
    return Snapshot(now=float(data["now"]), tickets=tickets, locks=locks, offline=offline, owners=owners)


__all__ = ["DEAD", "LIVE", "MUTEX", "OWNER_CLASS", "SUSPECT", "LockRow", "OfflineRow", "OwnerState",
           "QueuedTicket", "Snapshot", "lock_from_json", "ordered", "snapshot_from_json", "ticket_name"]
