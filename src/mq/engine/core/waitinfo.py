"""What a waiter is told while it waits (``queue`` events): its place, who holds what it waits
for, and when its turn is expected (the projection of ``LockEngine.status``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .errors import EngineError

if TYPE_CHECKING:
    from .interface import JobEngine


def queue_event(engine: JobEngine, name: str, key: str, position: int, total: int) -> Optional[Dict[str, Any]]:
    """``position`` of ``total`` for ``name``; ``holders`` of its boards (board, user, key, since,
    timeout) and the ``offline`` ones (board, reason); ``eta`` and ``eta_basis`` of this waiter's
    ticket (the newest live ticket of this process for ``name`` with ``key``). None when the state
    cannot be read just now (a lock directory going away, a full disk): the waiting line is
    for show, and must never end the wait itself; the wait's own next look says what happened."""
    try:
        status = engine.status([name])
    except (EngineError, OSError):
        return None
    holders: List[Dict[str, Any]] = []
    offline: List[Dict[str, Any]] = []
    mine: List[Dict[str, Any]] = []
    for state in status["boards"]:
        if state.get("offline"):
            offline.append({"board": state["board"], "reason": state["offline"]["reason"]})
        elif state["holder"] is not None:
            h = state["holder"]
            holders.append({"board": state["board"], "user": h["user"], "key": h["key"], "since": h["since_ns"] / 1e9,
                            "timeout": h["timeout"] or None})
        mine += [t for t in state["waiters"] if t["pid"] == os.getpid() and t["target"] == name and t["key"] == key]
    estimate: Dict[str, Any] = {}
    ticket: Dict[str, Any] = {}
    if mine:
        ticket = max(mine, key=lambda t: t["seq"])
        estimate = status["estimates"].get(ticket["name"], {})
    return {"target": name, "position": position, "total": total, "holders": holders, "offline": offline,
            "eta": estimate.get("eta"), "eta_basis": estimate.get("basis"), "now": status["now"],
            "priority": ticket.get("priority", 0), "effective_priority": ticket.get("effective")}


__all__ = ["queue_event"]
