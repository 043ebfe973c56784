"""What the PostgreSQL engines show (``info``, ``dumpall``, ``events``, ``status``), from a
snapshot of the queue and the audit log, whichever way they were read: psycopg (``PgEngine``)
or libpq itself (``reader.ReadEngine``)."""

from __future__ import annotations

import time
from typing import Any, Collection, Dict, List, Optional, Sequence

from mq.engine.core import policy
from mq.engine.core.inventory import Inventory
from mq.engine.core.results import BoardState, Ticket

from .rows import Snapshot, ordered


class Listings:
    """Needs ``inventory``, ``_snapshot()`` and ``_read_events(since, names)``."""

    inventory: Inventory

    def _snapshot(self) -> Snapshot:
        raise NotImplementedError

    def _read_events(self, since: Optional[float], names: Optional[Collection[str]]) -> List[Dict[str, Any]]:
        raise NotImplementedError

    def info(self, name: str) -> List[BoardState]:
        boards = self.inventory.members(name)
        snap = self._snapshot()
        waiting = self._waiting(snap)
        return [self._state(snap, board, tuple(t for t in waiting if board in t.boards)) for board in boards]

    def _waiting(self, snap: Snapshot) -> List[Ticket]:
        """The live waiters in the order they are served, with their effective priorities."""
        return policy.annotate([t.shown for t in ordered(snap.tickets) if t.counted],
                               self.inventory, snap.now)

    def _state(self, snap: Snapshot, board: str, waiters: tuple[Any, ...] = ()) -> BoardState:
        lock = snap.locks.get(board)
        mark = snap.offline.get(board)
        return BoardState(board, None if lock is None else lock.holder(), waiters,
                          offline=None if mark is None else mark.offline(lock))

    def dumpall(self, order: str = "inventory") -> List[BoardState]:
        snap = self._snapshot()
        boards = list(self.inventory.systems) if order != "directory" else sorted(snap.locks)
        return [self._state(snap, board) for board in boards if board in snap.locks]

    def events(self, scope: Optional[str] = None, since: Optional[float] = None) -> List[Dict[str, Any]]:
        names = None
        if scope is not None:
            names = {scope, *self.inventory.members(scope)}
            names |= {pool for board in list(names) for pool in self.inventory.pools_of(board)}
        return self._read_events(since, names)

    def status(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        from mq.engine.core.projection import HOLD_HISTORY, HoldTimes, project
        from mq.engine.core.protocol import to_wire

        inv = self.inventory
        wanted = None if not names else {b for name in names for b in inv.members(name)}
        snap = self._snapshot()
        waiting = self._waiting(snap)
        states = [self._state(snap, board, tuple(t for t in waiting if board in t.boards)) for board in inv.systems]
        now = time.time()
        estimates = project(states, inv, HoldTimes.from_events(self._read_events(now - HOLD_HISTORY, None)), now)
        return {"now": now, "boards": [to_wire(s) for s in states if wanted is None or s.board in wanted],
                "estimates": {e.ticket: {"board": e.board, "eta": e.eta, "basis": e.basis} for e in estimates}}


__all__ = ["Listings"]
