"""``mq status`` as a table and as JSON (kind ``status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from mq.engine.core.errors import safe_text

from .render import clock, duration, priority_text

if TYPE_CHECKING:
    from mq.engine.core.results import BoardState, LabStatus


def state_word(state: BoardState) -> str:
    return "offline" if state.offline is not None else "free" if state.holder is None else "held"


def eta_text(eta: Optional[float], now: float) -> str:
    """``14:32 (in 18m)``, ``now``, or ``unknown``."""
    if eta is None:
        return "unknown"
    if eta <= now + 1:
        return "now"
    return f"{clock(eta, now)} (in {duration(eta - now)})"


def board_json(state: BoardState, status: LabStatus) -> Dict[str, Any]:
    holder = state.holder
    waiters: List[Dict[str, Any]] = []
    for position, ticket in enumerate(state.waiters, 1):
        estimate = status.estimates.get(ticket.name, {})
        basis = estimate.get("basis") or "unknown"
        if estimate.get("board") not in (None, state.board):
            basis = f"expected to get {estimate['board']} instead: {basis}"
        waiters.append({"position": position, "user": ticket.user, "key": ticket.key, "since": ticket.created,
                        "target": ticket.target, "priority": ticket.priority, "effective_priority": ticket.effective,
                        "eta": estimate.get("eta"), "eta_basis": basis, "tool": ticket.tool,
                        "liveness": "alive" if ticket.lost_since is None else "reconnecting",
                        "lost_since": ticket.lost_since})
    return {"board": state.board, "state": state_word(state),
            "holder": None if holder is None else {"user": holder.user, "key": holder.key,
                                                   "since": holder.since_ns / 1e9, "timeout": holder.timeout or None,
                                                   "grant": holder.grant},
            "offline_reason": None if state.offline is None else state.offline.reason,
            "waiters": waiters}


def status_json(status: LabStatus) -> List[Dict[str, Any]]:
    return [board_json(s, status) for s in status.boards]


def _row(state: BoardState, now: float) -> List[str]:
    holder = state.holder
    if holder is None:
        return [state.board, state_word(state), "", "", "", "", ""]
    since = holder.since_ns / 1e9
    return [state.board, state_word(state), safe_text(holder.user), safe_text(holder.shown_key, 40),
            f"{clock(since, now)} ({duration(now - since)})", str(holder.timeout or "-"),
            "" if holder.grant is None else f"#{holder.grant}"]


def status_lines(status: LabStatus) -> List[str]:
    """A table of boards; under each, its offline reason and its waiters in queue order."""
    now = status.now
    header = ["BOARD", "STATE", "HOLDER", "KEY", "SINCE", "-T", "GRANT"]
    rows = [header] + [_row(s, now) for s in status.boards]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    for state, row in zip(status.boards, rows[1:], strict=True):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if state.offline is not None:
            off = state.offline
            lines.append(f"    offline: {safe_text(off.reason, 200)} (by {safe_text(off.user)} since "
                         f"{clock(off.since, now)})")
        for waiter in board_json(state, status)["waiters"]:
            via = f" via {waiter['target']}" if waiter["target"] != state.board else ""
            tool = " (mq.sh)" if waiter["tool"] == "mq.sh" else ""
            lines.append(f"    {waiter['position']}. {safe_text(waiter['user'])}{tool} key "
                         f"'{safe_text(waiter['key'], 40)}'{via}, waiting since {clock(waiter['since'], now)} "
                         f"({duration(now - waiter['since'])})"
                         f"{priority_text(waiter['priority'], waiter['effective_priority'])}"
                         f"{_reconnecting(waiter, now)}; "
                         f"ETA {eta_text(waiter['eta'], now)}: "
                         f"{waiter['eta_basis']}")
    return lines


def _reconnecting(waiter: Dict[str, Any], now: float) -> str:
    since = waiter.get("lost_since")
    return "" if since is None else f"; reconnecting since {clock(since, now)} (the database restarted)"


__all__ = ["board_json", "eta_text", "state_word", "status_json", "status_lines"]
