"""``mq status``: every board's state with its waiters in queue order and their projected starts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from mq.engine.core.errors import LockDirError
from mq.engine.core.projection import HOLD_HISTORY, HOLD_TAIL, HoldTimes, project
from mq.engine.core.protocol import to_wire

from .history import read_events

if TYPE_CHECKING:
    from mq.engine.core.inventory import Inventory
    from mq.engine.core.results import BoardState

Info = Callable[[str], List["BoardState"]]  # the engine's info(target): a board's or pool's states



def lab_states(inv: Inventory, info: Info) -> List[BoardState]:
    """Every board of the inventory, in inventory order (one queue read per pool)."""
    found: Dict[str, BoardState] = {}
    for target in [*inv.pools, *(s for s in inv.systems if not inv.pools_of(s))]:
        for state in info(target):
            found.setdefault(state.board, state)
    return [found[board] for board in inv.systems if board in found]


def status(inv: Inventory, info: Info, audit_path: str, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The boards of ``names`` (systems or pools; None: all), each with its state, and the
    projected start of every waiter of the lab (the whole queue decides any one of them);
    ``info``: the engine's, ``audit_path``: its log (the hold times)."""
    wanted = None if not names else {b for name in names for b in inv.members(name)}
    now = time.time()
    states = lab_states(inv, info)
    try:
        events, _ = read_events(audit_path, now - HOLD_HISTORY, tail=HOLD_TAIL)
    except LockDirError:  # a log that cannot be read: no hold history, the status all the same
        events = []
    estimates = project(states, inv, HoldTimes.from_events(events), now)
    return {"now": now, "boards": [to_wire(s) for s in states if wanted is None or s.board in wanted],
            "estimates": {e.ticket: {"board": e.board, "eta": e.eta, "basis": e.basis} for e in estimates}}


__all__ = ["lab_states", "status"]
