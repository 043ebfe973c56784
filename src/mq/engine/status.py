"""``mq status``: every board's state with its waiters in queue order and their projected starts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .errors import LockDirError
from .history import read_events
from .projection import HoldTimes, project
from .protocol import to_wire

if TYPE_CHECKING:
    from .results import BoardState
    from .semaphore import Engine

HOLD_HISTORY = 30 * 86400.0  # the releases of the last 30 days give the median hold times...
HOLD_TAIL = 2 << 20  # ... as far as the last 2 MiB of the audit log (some 10000 events) reach


def lab_states(engine: Engine) -> List[BoardState]:
    """Every board of the inventory, in inventory order (one queue read per pool)."""
    inv = engine.inventory
    found: Dict[str, BoardState] = {}
    for target in [*inv.pools, *(s for s in inv.systems if not inv.pools_of(s))]:
        for state in engine.info(target):
            found.setdefault(state.board, state)
    return [found[board] for board in inv.systems if board in found]


def status(engine: Engine, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The boards of ``names`` (systems or pools; None: all), each with its state, and the
    projected start of every waiter of the lab (the whole queue decides any one of them)."""
    inv = engine.inventory
    wanted = None if not names else {b for name in names for b in inv.members(name)}
    now = time.time()
    states = lab_states(engine)
    try:
        events, _ = read_events(engine.lab.audit_path, now - HOLD_HISTORY, tail=HOLD_TAIL)
    except LockDirError:  # a log that cannot be read: no hold history, the status all the same
        events = []
    estimates = project(states, inv, HoldTimes.from_events(events), now)
    return {"now": now, "boards": [to_wire(s) for s in states if wanted is None or s.board in wanted],
            "estimates": {e.ticket: {"board": e.board, "eta": e.eta, "basis": e.basis} for e in estimates}}


__all__ = ["lab_states", "status"]
